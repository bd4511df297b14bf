"""Where the model looks: CAMs, per-filter responses, the pointing game, bin/analyze."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from dcl_keras import analysis, training
from dcl_keras.data import readers, specs
from dcl_keras.models import dcl

from helpers import run_bin, tiny_dcl_model


@pytest.mark.backend_agnostic
def test_the_cam_averages_to_the_logit_minus_the_bias():
    model = tiny_dcl_model(32, n=4, classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    features, logits = analysis.features_and_logits(model, x)
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(model(x)["classifier"]), atol=1e-4)
    bias = keras.ops.convert_to_numpy(model.get_layer("classifier").bias)
    for c in range(3):
        cams = analysis.class_activation_maps(model, x, [c, c])
        np.testing.assert_allclose(cams.mean(axis=(1, 2)) + bias[c], logits[:, c], atol=1e-4)
    r = analysis.filter_responses(model, x[0], 1, n=4, k=2, key=7)
    assert r["r_original"].shape == r["delta"].shape == (features.shape[-1],)
    np.testing.assert_allclose(r["r_original"].sum() + bias[1], logits[0, 1], atol=1e-4)


def test_boxes_map_through_the_resize_and_the_center_crop():
    # A 200 x 100 file resized to 40 x 40 then cropped to 32: scale (0.2, 0.4), offset 4.
    box = analysis.crop_box((50, 25, 100, 50), (200, 100), specs.EvalSpec(32, 40))
    assert box == pytest.approx((6.0, 6.0, 26.0, 26.0))
    whole = analysis.crop_box((0, 0, 200, 100), (200, 100), specs.EvalSpec(32, 40))
    assert whole == pytest.approx((0, 0, 32, 32))  # Clipped to the crop.
    # FGVC-Aircraft: the banner rows are gone before the resize, so the vertical scale uses 100 - 20 rows.
    banner = analysis.crop_box((0, 40, 200, 40), (200, 100), specs.EvalSpec(40, 40), crop_bottom=20)
    assert banner == pytest.approx((0, 20, 40, 40))


class _Brightness(keras.layers.Layer):
    def call(self, x):
        return keras.ops.mean(x, axis=-1, keepdims=True)


def _bright_spot_split(tmp_path, spots):
    """Dark 48 x 48 images with one bright square each; boxes given around (x, y) per image."""
    paths, boxes = [], []
    for i, ((x, y), box) in enumerate(spots):
        image = np.zeros((48, 48, 3), np.uint8)
        image[y : y + 6, x : x + 6] = 255
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
        boxes.append(box)
    return readers.FileSplit(paths, [0] * len(paths), ["a", "b"], np.asarray(boxes, np.float32), name="spots")


def test_pointing_counts_a_hit_when_the_cam_peak_is_in_the_box(tmp_path):
    inputs = keras.Input((48, 48, 3))
    backbone = keras.Model(inputs, _Brightness()(inputs))
    model = dcl.DCLModel(backbone, 2, 4)
    model.get_layer("classifier").kernel.assign(np.ones((1, 2), "float32"))  # CAM = brightness.
    spots = [
        ((4, 4), (0, 0, 16, 16)),  # Spot inside its box: hit.
        ((30, 30), (24, 24, 24, 24)),  # Hit.
        ((30, 4), (0, 24, 24, 24)),  # Spot outside its box: miss.
        ((20, 20), (float("nan"),) * 4),  # No box: left out.
    ]
    report = analysis.pointing_game(model, _bright_spot_split(tmp_path, spots), specs.EvalSpec(48, 48))
    assert report["num_images"] == 3 and report["hit_rate"] == pytest.approx(2 / 3)
    assert report["centre_hit_rate"] == pytest.approx(2 / 3)  # The last two boxes touch the centre (24, 24).
    nan = [float("nan")] * 4
    parts = np.asarray(
        [[[2, 2, 10, 10], nan], [[0, 0, 5, 5], [28, 28, 8, 8]], [[0, 20, 48, 10], nan], [nan, nan]], np.float32
    )
    report = analysis.pointing_game(
        model, _bright_spot_split(tmp_path, spots), specs.EvalSpec(48, 48), parts=parts, part_names=("p", "q")
    )
    assert report["part_hit_rate"] == pytest.approx(2 / 3)  # The third spot (30, 4) is above its part.
    assert report["part_hit_rate_by_part"] == pytest.approx({"p": 1 / 3, "q": 1 / 3})
    split = _bright_spot_split(tmp_path, [((4, 4), (30, 30, 10, 10))])
    report = analysis.pointing_game(model, split, specs.EvalSpec(48, 48))
    assert report["centre_hit_rate"] == 0.0 and report["hit_rate"] == 0.0


@pytest.mark.slow
def test_bin_analyze_draws_cams_responses_and_pointing(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.train.epochs = 1
    config.export.enabled = False
    training.train_and_evaluate(config, str(tmp_path / "dcl"))
    from dcl_keras import experiments, sweep

    baseline = sweep.apply_overrides(config, experiments.arm_overrides(config, "baseline"))
    training.train_and_evaluate(baseline, str(tmp_path / "baseline"))
    cam = run_bin("analyze", "cam", f"--workdir={tmp_path / 'dcl'}", f"--compare={tmp_path / 'baseline'}")
    assert cam.returncode == 0, cam.stderr[-3000:]
    assert (tmp_path / "dcl" / "cam_grid.png").stat().st_size > 5000
    responses = run_bin("analyze", "responses", f"--workdir={tmp_path / 'dcl'}")
    assert responses.returncode == 0, responses.stderr[-3000:]
    figures = json.load(open(tmp_path / "dcl" / "responses.json"))["images"]
    assert len(figures) == 4 and all(-1 <= f["correlation"] <= 1 for f in figures)
    pointing = run_bin("analyze", "pointing", f"--workdir={tmp_path / 'dcl'}", f"--workdir={tmp_path / 'baseline'}")
    assert pointing.returncode == 0, pointing.stderr[-3000:]
    for run in ("dcl", "baseline"):
        report = json.load(open(tmp_path / run / "pointing.json"))
        assert report["num_images"] == 12 and 0 <= report["hit_rate"] <= 1
    seams = run_bin("analyze", "seams", f"--workdir={tmp_path / 'dcl'}", "--num_images=6")
    assert seams.returncode == 0, seams.stderr[-3000:]
    assert json.load(open(tmp_path / "dcl" / "seams.json"))["num_images"] == 6
    no_discriminator = run_bin("analyze", "seams", f"--workdir={tmp_path / 'baseline'}")
    assert no_discriminator.returncode == 2 and "2-way destruction discriminator" in no_discriminator.stderr
    bad = run_bin("analyze", "where", f"--workdir={tmp_path / 'dcl'}")
    assert bad.returncode == 2 and "one of ('cam', 'responses', 'pointing', 'seams')" in bad.stderr
    assert not os.path.exists(tmp_path / "dcl" / "where")


def _brightness_model(size):
    inputs = keras.Input((size, size, 3))
    model = dcl.DCLModel(keras.Model(inputs, _Brightness()(inputs)), 2, 4)
    model.get_layer("classifier").kernel.assign(np.ones((1, 2), "float32"))  # CAM = brightness.
    return model


def test_pointing_on_the_cub_layout_reads_its_boxes(tmp_path):
    """CUB's bounding_boxes.txt (x, y, width, height) on 120 x 80 photos: spots inside their boxes all hit."""
    rows = []
    for i, (x, y) in enumerate([(10, 10), (90, 50), (50, 30)], start=1):
        image = np.full((80, 120, 3), 40, np.uint8)
        image[y : y + 8, x : x + 8] = 230
        os.makedirs(tmp_path / "images" / "001.A", exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images" / "001.A" / f"{i}.png")
        rows.append((i, f"001.A/{i}.png", f"{x - 4} {y - 4} 16 16"))
    for name, lines in (
        ("images.txt", [f"{i} {p}" for i, p, _ in rows]),
        ("image_class_labels.txt", [f"{i} 1" for i, _, _ in rows]),
        ("train_test_split.txt", [f"{i} 0" for i, _, _ in rows]),
        ("classes.txt", ["1 001.A", "2 002.B"]),
        ("bounding_boxes.txt", [f"{i} {b}" for i, _, b in rows]),
    ):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    split = readers.cub200(str(tmp_path), "test")
    report = analysis.pointing_game(_brightness_model(48), split, specs.EvalSpec(48, 56))
    assert report["num_images"] == 3 and report["hit_rate"] == 1.0


def test_pointing_on_fgvc_aircraft_maps_boxes_past_the_removed_banner(tmp_path):
    """The white banner would win the brightness CAM if it were not cropped; the boxes are 1-based inclusive."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    ids = ["0000001", "0000002"]
    for n, image_id in enumerate(ids):
        image = np.full((100, 150, 3), 40, np.uint8)
        image[-20:] = 255  # The copyright banner.
        x, y = 20 + 80 * n, 30
        image[y : y + 10, x : x + 10] = 200
        Image.fromarray(image).save(data / "images" / f"{image_id}.jpg", quality=95)
    (data / "images_box.txt").write_text("0000001 16 26 34 44\n0000002 96 26 114 44\n")
    (data / "variants.txt").write_text("A\nB\n")
    (data / "images_variant_test.txt").write_text("0000001 A\n0000002 B\n")
    split = readers.fgvc_aircraft(str(tmp_path), "test")
    report = analysis.pointing_game(_brightness_model(48), split, specs.EvalSpec(48, 48))
    assert report["num_images"] == 2 and report["hit_rate"] == 1.0
    kept = readers.fgvc_aircraft(str(tmp_path), "test", remove_banner=False)
    assert analysis.pointing_game(_brightness_model(48), kept, specs.EvalSpec(48, 48))["hit_rate"] == 0.0


def test_seam_probe_views_and_report():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    # No shift: the jittered image is the image; a shift moves each 8-px cell's content by at most that much.
    np.testing.assert_array_equal(analysis._jitter_cells(image, 4, 0, rng), image)
    jittered = analysis._jitter_cells(image, 4, 2, np.random.default_rng(1))
    assert not np.array_equal(jittered, image)
    # Bands cover 2 px either side of the inner grid lines (8, 16, 24) and nothing else.
    banded = analysis._band_grid(image, 4, 2)
    changed = np.any(banded != image, axis=(0, 2))
    assert set(np.flatnonzero(changed)) >= {6, 7, 8, 9, 14, 15, 16, 17, 22, 23, 24, 25}
    np.testing.assert_array_equal(banded[2:5, 2:5], image[2:5, 2:5])
    model = tiny_dcl_model(32, n=4, classes=3, width=4)
    keys = [np.uint32(i) for i in range(3)]
    report = analysis.seam_probe(model, np.stack([image] * 3), n=4, k=2, keys=keys)
    assert set(analysis.SEAM_CONDITIONS) <= set(report) and report["num_images"] == 3
    for name in analysis.SEAM_CONDITIONS:
        assert 0.0 <= report[name]["called_destructed"] <= 1.0
        assert 0.0 <= report[name]["mean_p_destructed"] <= 1.0
    expected = 0.5 * (1 - report["original"]["called_destructed"] + report["destructed"]["called_destructed"])
    assert report["pair_accuracy"] == pytest.approx(expected)
    baseline = dcl.DCLModel(model.backbone, 3, 4, discriminator="none", alignment=False)
    with pytest.raises(Exception, match="2-way destruction discriminator"):
        analysis.seam_probe(baseline, image[None], n=4, k=2, keys=keys[:1])
