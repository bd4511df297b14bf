"""Bad input: a clear error or a counted skip, never a crash mid-epoch."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from dcl_keras.data import pipeline, readers, specs, train_stream

from conftest import write_image


def _bad_and_odd_files(folder):
    """Writes every problem file of the issue into one class folder; returns (decodable, undecodable)."""
    os.makedirs(folder, exist_ok=True)
    good = [
        write_image(os.path.join(folder, "rgb.jpg")),
        write_image(os.path.join(folder, "gray.jpg"), mode="L"),
        write_image(os.path.join(folder, "rgba.png"), mode="RGBA"),
        write_image(os.path.join(folder, "cmyk.jpg"), mode="CMYK", fmt="JPEG"),
        write_image(os.path.join(folder, "tiny.jpg"), size=(5, 4)),
        write_image(os.path.join(folder, "bitmap.bmp")),
    ]
    sixteen = os.path.join(folder, "deep16.png")
    array = (np.random.default_rng(0).integers(0, 65535, (20, 30))).astype(np.uint16)
    Image.fromarray(array).save(sixteen)
    good.append(sixteen)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 100).save(buffer, format="JPEG")
    truncated = os.path.join(folder, "truncated.jpg")
    with open(truncated, "wb") as f:
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    empty = os.path.join(folder, "empty.jpg")
    open(empty, "wb").close()
    text = os.path.join(folder, "text.jpg")
    with open(text, "w") as f:
        f.write("this is not a JPEG\n")
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("a non-image file in a class folder")
    return good, [truncated, empty, text]


@pytest.fixture
def messy_split(tmp_path):
    good, bad = _bad_and_odd_files(str(tmp_path / "train" / "birds"))
    _bad_and_odd_files(str(tmp_path / "train" / "cars"))
    return readers.FileSplit(good + bad, [0] * len(good + bad), ["birds", "cars"], name="messy"), good, bad


def test_decodable_variants_are_converted_to_rgb(messy_split):
    split, good, _ = messy_split
    for path in good:
        image = pipeline.read_image(path).numpy()
        assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8, path
    sixteen = pipeline.read_image(good[-1]).numpy()
    assert sixteen.max() > 0


def test_skip_policy_logs_and_drops_undecodable(messy_split, caplog):
    split, good, bad = messy_split
    checked = pipeline.check_images(split, "skip")
    assert checked.paths == good
    for path in bad:
        assert path in caplog.text
    assert "skipping 3 undecodable" in caplog.text


def test_strict_policy_raises_with_every_path(messy_split):
    split, _, bad = messy_split
    with pytest.raises(pipeline.UndecodableImagesError) as err:
        pipeline.check_images(split, "strict")
    for path in bad:
        assert path in str(err.value)


def test_corrupt_files_mid_epoch_do_not_stop_training(messy_split):
    split, good, bad = messy_split  # Not checked: the bad files reach the running pipeline.
    spec = specs.TrainSpec(seed=0, batch_size=1, image_size=32, resize_size=40, n=4, k=2)
    ds = train_stream.train_batches(split, spec)
    seen = list(ds.take(2 * len(good)).as_numpy_iterator())  # Two epochs' worth of good images.
    assert len(seen) == 2 * len(good)
    evaluated = sum(int(x.shape[0]) for x, _ in pipeline.eval_batches(split, spec.eval_spec, batch_size=4))
    assert evaluated == len(good)


def test_image_folder_lists_only_images(tmp_path):
    _bad_and_odd_files(str(tmp_path / "train" / "birds"))
    _bad_and_odd_files(str(tmp_path / "test" / "birds"))
    split = readers.image_folder(str(tmp_path), "train")
    assert not any(p.endswith(".txt") for p in split.paths)
    assert len(split.paths) == 10
