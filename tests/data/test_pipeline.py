"""Augmentation, pairing and the batch contract; determinism and resuming of the stream. Bad input files: a clear
error or a counted skip, never a crash mid-epoch."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dcl_keras import contract
from dcl_keras.data import augment, keyed_hash, pipeline, rcm, readers, specs, train_stream

from conftest import write_image

N = 4


def _batches(split, count, start_step=0, **fields):
    spec = specs.TrainSpec(
        **{**dict(seed=7, batch_size=2, image_size=32, resize_size=40, rotation=10.0, n=N, k=2), **fields}
    )
    return list(train_stream.train_batches(split, spec, start_step=start_step).take(count).as_numpy_iterator())


@pytest.fixture(scope="module")
def split(demo_root):
    return readers.image_folder(demo_root, "train")


def test_batch_contract_shapes_dtypes_and_targets(split):
    images, targets = _batches(split, 1)[0]
    # The pillow path's pixels are whole numbers: they travel as uint8, and the model casts them on its device.
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    fused, _ = _batches(split, 1, resampling="fused")[0]
    assert fused.dtype == np.float32 and 0.0 <= fused.min() and fused.max() <= 255.0
    assert set(targets) == set(contract.OUTPUTS)
    assert targets["classifier"].dtype == np.int32 and targets["classifier"].shape == (4,)
    np.testing.assert_array_equal(targets["destruction_discriminator"], [0, 1, 0, 1])
    align = targets["region_alignment"]
    assert align.shape == (4, N, N, 2) and align.dtype == np.float32
    identity = rcm.alignment_target(rcm.identity_source(N)).numpy()
    np.testing.assert_allclose(align[0], identity)
    assert (align > 0).all() and (align < 1).all()
    # Original and destructed copy share the label.
    assert targets["classifier"][0] == targets["classifier"][1]


def test_destructed_copy_is_the_original_with_regions_moved(split):
    images, targets = _batches(split, 1)[0]
    original, destructed = images[0], images[1]
    source = np.rint(targets["region_alignment"][1] * N - 0.5).astype(np.int32)
    rebuilt = rcm.apply_region_permutation(tf.constant(original), tf.constant(source)).numpy()
    np.testing.assert_array_equal(rebuilt, destructed)  # Same augmentation draw, then RCM.


@pytest.mark.parametrize("originals,destructed", [(1, 0), (0, 1), (1, 2), (2, 1)])
def test_ratios(split, originals, destructed):
    images, targets = _batches(split, 1, originals=originals, destructed=destructed)[0]
    views = originals + destructed
    assert images.shape[0] == 2 * views
    expected = ([0] * originals + [1] * destructed) * 2
    np.testing.assert_array_equal(targets["destruction_discriminator"], expected)


def test_a_stream_plan_places_a_resumed_process_in_its_epoch(split):
    spec = specs.TrainSpec(seed=0, batch_size=4, image_size=32, resize_size=40, n=N, k=2)
    per_epoch = split.num_examples // 4
    plan = train_stream.plan_stream(split, spec, start_step=per_epoch + 1, process_index=1, process_count=2)
    assert (plan.per_epoch, plan.first_epoch, plan.skip, plan.local_batch) == (per_epoch, 1, 1, 2)
    assert plan.skipped == 4 and plan.decoded is None  # Global positions: a file split is sliced by position.
    assert [bool(plan.share["keep"](tf.constant(p, tf.int64))) for p in range(4)] == [False, False, True, True]


def test_the_named_steps_make_the_views_of_an_epoch(split):
    spec = specs.TrainSpec(seed=7, batch_size=2, image_size=32, resize_size=40, n=N, k=2, rcm_in_pipeline=False)
    plan = train_stream.plan_stream(split, spec)
    epoch = tf.constant(0, tf.int64)
    order_key = keyed_hash.combine_keys(spec.seed, epoch, contract.ORDER_POSITION)
    inputs, labels = next(iter(train_stream.read_epoch(plan, epoch, order_key, tf.constant(0, tf.int64))))
    assert inputs[contract.DEVICE_IMAGES].shape == (2, 32, 32, 3) and inputs[contract.DEVICE_KEYS].dtype == tf.uint32
    image = tf.constant(np.full((48, 48, 3), 200, np.uint8))
    with_rcm = specs.TrainSpec(seed=7, batch_size=2, image_size=32, resize_size=40, n=N, k=2)
    images, targets = train_stream.prepare_example(with_rcm, epoch, tf.constant(3, tf.int64), image, tf.constant(1))
    assert images.shape == (2, 32, 32, 3) and set(targets) == set(contract.OUTPUTS)


def test_same_seed_same_batches_and_other_seed_differs(split):
    a, b = _batches(split, 3), _batches(split, 3)
    c = _batches(split, 3, seed=8)
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ta["region_alignment"], tb["region_alignment"])
    assert not np.array_equal(a[0][0], c[0][0])


def test_resuming_at_an_epoch_rebuilds_the_same_stream(split):
    per_epoch = split.num_examples // 2
    full = _batches(split, 2 * per_epoch)
    resumed = _batches(split, per_epoch, start_step=per_epoch)
    for (ia, ta), (ib, tb) in zip(full[per_epoch:], resumed, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ta["classifier"], tb["classifier"])
    # Epochs differ in order and augmentation.
    assert not np.array_equal(full[0][0], full[per_epoch][0])


def test_every_example_once_per_epoch(split):
    assert split.num_examples % 2 == 0
    batches = _batches(split, split.num_examples // 2)
    labels = np.concatenate([t["classifier"][::2] for _, t in batches])
    np.testing.assert_array_equal(
        np.bincount(labels, minlength=split.num_classes), np.bincount(split.labels, minlength=split.num_classes)
    )


def test_eval_preprocessing_is_resize_then_center_crop():
    image = tf.constant(np.arange(50 * 60 * 3).reshape(50, 60, 3) % 251, tf.uint8)
    out = augment.eval_preprocess(image, 40, 32).numpy()
    resized = tf.image.resize(tf.cast(image, tf.float32), [40, 40], antialias=True).numpy()
    np.testing.assert_allclose(out, resized[4:36, 4:36])
    batch = augment.eval_preprocess(tf.stack([image, image]), 40, 32).numpy()
    np.testing.assert_allclose(batch[1], out)


def test_train_augmentation_is_keyed():
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (48, 60, 3)), tf.float32)
    a = augment.train_augment(image, keyed_hash.combine_keys(1), 40, 32, 15.0).numpy()
    b = augment.train_augment(image, keyed_hash.combine_keys(1), 40, 32, 15.0).numpy()
    c = augment.train_augment(image, keyed_hash.combine_keys(2), 40, 32, 15.0).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (32, 32, 3) and not np.array_equal(a, c)


@pytest.mark.parametrize("shape", [(25, 33), (45, 70)])
@pytest.mark.parametrize("resampling", augment.RESAMPLING)
def test_without_rotation_and_flip_it_is_resize_then_crop(shape, resampling):
    """Pillow's resize (pillow) or plain bilinear (fused), then the crop at the drawn offset."""
    image = tf.constant(np.random.default_rng(1).uniform(0, 255, (*shape, 3)), tf.float32)
    resized = tf.image.resize(image, [40, 40], antialias=resampling == "pillow").numpy()
    height, width = (40, 40) if resampling == "pillow" else shape  # The warp's input.
    checked = 0
    for seed in range(12):
        key = keyed_hash.combine_keys(seed)
        t = augment.train_transform(key, height, width, 40, 32, 0.0).numpy()
        if t[0] < 0:  # Flipped draw.
            continue
        left = int(round((t[2] + 0.5) / (width / 40) - 0.5))
        top = int(round((t[5] + 0.5) / (height / 40) - 0.5))
        out = augment.train_augment(image, key, 40, 32, 0.0, resampling).numpy()
        # Equal up to float32 rounding of the sampling coordinates (grey levels 0-255).
        np.testing.assert_allclose(out[1:-1, 1:-1], resized[top + 1 : top + 31, left + 1 : left + 31], atol=5e-3)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 4), (45, 70)])
def test_no_dark_border_at_the_image_edge_even_for_tiny_images(shape):
    image = tf.fill([*shape, 3], tf.constant(200, tf.uint8))
    for seed in range(4):
        out = augment.train_augment(image, keyed_hash.combine_keys(seed), 40, 32, 0.0).numpy()
        np.testing.assert_allclose(out, 200.0, atol=1e-3)
    if shape == (45, 70):  # Rotated corners beyond the image are zero-filled.
        corners = [
            augment.train_augment(image, keyed_hash.combine_keys(s), 40, 32, 15.0).numpy().min() for s in range(8)
        ]
        assert min(corners) < 1.0


def test_flips_about_half_and_rotations_stay_in_range():
    transforms = np.array(
        [augment.train_transform(keyed_hash.combine_keys(s), 50, 50, 40, 32, 15.0).numpy() for s in range(200)]
    )
    flipped = transforms[:, 0] < 0
    assert 0.35 < flipped.mean() < 0.65
    sines = transforms[:, 1] / (50 / 40)  # a1 = sin(angle) * sx.
    assert np.abs(sines).max() <= np.sin(np.radians(15)) + 1e-6
    assert sines.min() < -0.15 and sines.max() > 0.15  # Spread over the range.
    flipped_image = augment.train_augment(
        tf.constant(np.tile(np.arange(50, dtype=np.float32)[None, :, None], (50, 1, 3))),
        keyed_hash.combine_keys(int(np.argmax(flipped))),
        40,
        32,
        0.0,
    ).numpy()
    assert flipped_image[16, 0, 0] > flipped_image[16, -1, 0]  # A left-to-right ramp now descends.


def _numpy_bilinear(image, t, size):
    """Independent reference: 2-D bilinear sampling, edges replicated inside the image's area, 0 outside."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u = t[0] * x + t[1] * y + t[2]
    v = t[3] * x + t[4] * y + t[5]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]

    def px(row, col):
        return image[np.clip(row, 0, h - 1).astype(int), np.clip(col, 0, w - 1).astype(int)]

    out = (px(v0, u0) * (1 - fu) + px(v0, u0 + 1) * fu) * (1 - fv) + (
        px(v0 + 1, u0) * (1 - fu) + px(v0 + 1, u0 + 1) * fu
    ) * fv
    inside = (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    margin = np.minimum.reduce([np.abs(u + 0.5), np.abs(u - w + 0.5), np.abs(v + 0.5), np.abs(v - h + 0.5)])
    return out * inside[..., None], margin > 1e-3


@pytest.mark.parametrize("shape", [(25, 38), (38, 25), (13, 9)])
def test_rotated_augmentation_matches_a_numpy_bilinear_reference(shape):
    """The XLA-compiled fused resampling equals plain 2-D bilinear sampling at the drawn transform."""
    image = np.random.default_rng(3).integers(0, 256, (*shape, 3)).astype(np.uint8)
    for seed in range(6):
        key = keyed_hash.combine_keys(seed)
        t = augment.train_transform(key, *shape, 40, 32, 15.0).numpy().astype(np.float64)
        expected, clear = _numpy_bilinear(image.astype(np.float64), t, 32)
        out = augment.train_augment(tf.constant(image), key, 40, 32, 15.0, "fused").numpy()
        # Pixels within 1e-3 of the image's edge may fall either side of it in float32.
        np.testing.assert_allclose(out[clear], expected[clear], atol=0.05)
        assert clear.mean() > 0.95


def test_padding_buckets_bound_the_compiled_shapes_and_never_change_pixels():
    lengths = np.array([augment._flat_bucket(tf.zeros([p, 3], tf.uint8)).shape[0] for p in range(1, 5000, 7)])
    counts = np.arange(1, 5000, 7)
    assert np.all(lengths >= counts) and np.all(lengths <= np.maximum(counts * 9 // 8, 16))
    assert len(set(lengths)) <= 8 * 13 + 16  # At most 8 buckets per doubling of the pixel count.
    image = tf.constant(np.random.default_rng(4).integers(0, 256, (37, 39, 3)), tf.uint8)
    key = keyed_hash.combine_keys(9)
    padded = augment.train_augment(image, key, 40, 32, 15.0, "fused").numpy()
    compiled = augment._compiled_warp(40, 32, 15.0)
    np.testing.assert_array_equal(compiled(tf.reshape(image, [-1, 3]), 37, 39, key).numpy(), padded)
    t = augment.train_transform(key, 37, 39, 40, 32, 15.0)
    eager = augment.warp_image(tf.reshape(image, [-1, 3]), 37, 39, t, 32).numpy()  # No XLA.
    np.testing.assert_allclose(padded, eager, atol=0.02)  # Only XLA's float rounding differs.


@pytest.mark.parametrize("resampling, interpolation", [("pillow", "nearest"), ("fused", "bilinear")])
def test_without_xla_the_same_augmentation_runs_on_tf_kernels(monkeypatch, resampling, interpolation):
    assert augment.xla_available()  # Every supported TensorFlow build has XLA on the CPU.
    image = tf.constant(np.random.default_rng(5).integers(0, 256, (30, 41, 3)), tf.uint8)
    key = keyed_hash.combine_keys(11)
    with_xla = augment.train_augment(image, key, 40, 32, 15.0, resampling).numpy()
    monkeypatch.setattr(augment, "xla_available", lambda: False)
    augment._compiled_warp.cache_clear()
    try:
        without = augment.train_augment(image, key, 40, 32, 15.0, resampling).numpy()
        assert not augment._compiled_warp(40, 32, 15.0, interpolation)._jit_compile
    finally:
        augment._compiled_warp.cache_clear()
    np.testing.assert_allclose(without, with_xla, atol=0.02)


def test_a_build_without_xla_is_detected_with_one_warning(monkeypatch, caplog):
    def no_xla(fn, jit_compile=False):
        def call(*args):
            raise tf.errors.UnimplementedError(None, None, "XLA_CPU_JIT not registered")

        return call

    monkeypatch.setattr(tf, "function", no_xla)
    with caplog.at_level("WARNING"):
        assert augment.xla_available.__wrapped__() is False
    assert "XLA is unavailable" in caplog.text and "XLA_CPU_JIT not registered" in caplog.text


def test_eval_batches_with_dcl_targets(split):
    images, targets = next(iter(pipeline.eval_batches(split, specs.EvalSpec(32, 40), batch_size=3, n=N)))
    assert images.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(targets["destruction_discriminator"].numpy(), [0, 0, 0])
    assert targets["region_alignment"].shape == (3, N, N, 2)


def test_a_bad_file_never_shifts_the_keys_of_later_examples(split, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(os.urandom(500))
    with_bad = readers.FileSplit([str(bad), *split.paths], [0, *split.labels], split.class_names)
    keys = {}
    for name, source in (("clean", split), ("with_bad", with_bad)):
        ds = pipeline.positioned_examples(source).ignore_errors()
        keys[name] = {int(pos): label for pos, _, label in ds.as_numpy_iterator()}
    # The positions (hence keys) of the good files are their listing positions, whatever failed before them.
    assert set(keys["with_bad"]) == set(range(1, len(split.paths) + 1))
    assert [keys["with_bad"][i + 1] for i in range(len(split.paths))] == [keys["clean"][i] for i in keys["clean"]]


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
