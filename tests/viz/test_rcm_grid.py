"""bin/visualize_rcm writes a valid PNG of the expected size."""

from PIL import Image

from helpers import run_bin


def test_visualize_rcm_writes_a_png(tiny_config, tmp_path):
    out = tmp_path / "grid.png"
    result = run_bin(
        "visualize_rcm",
        "--config=configs/tiny.py",
        f"--config.data.demo.cache_dir={tiny_config.data.demo.cache_dir}",
        f"--config.data.demo.train_per_class={tiny_config.data.demo.train_per_class}",
        f"--config.data.demo.test_per_class={tiny_config.data.demo.test_per_class}",
        f"--output={out}",
        "--num_images=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG"
        # 2 columns and 3 rows of 32 px cells with 4 px margins.
        assert image.size == (2 * 36 + 4, 3 * 36 + 4)
        pixels = image.convert("RGB").getpixel((4 + 8, 4 + 2))  # On the first vertical grid line.
        assert pixels == (255, 255, 0)
