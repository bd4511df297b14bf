"""Augmentation (dcl_keras/data/augment.py): fidelity to the reference recipe's input, Pillow's antialiased bilinear
resize, and its JPEG decoder (pipeline.decode_image, on the same test images); a batch at a time (images held in
memory), the same draws and pixels as one example at a time."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dcl_keras.data import augment, keyed_hash, pipeline, rcm

RESIZE, CROP = 64, 56
KEYS = [keyed_hash.combine_keys(3, 1, position) for position in range(6)]


def _pink(h, w, seed=0):
    """Noise with a natural image's 1/f amplitude spectrum, three channels, uint8."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft2(rng.normal(size=(h, w)))
    radius = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    a = np.fft.irfft2(spectrum / np.maximum(radius, 1.0 / max(h, w)), (h, w))
    a = (a - a.mean()) / a.std() * 50 + 128
    return np.clip(np.stack([a, np.roll(a, 7, 1), 255 - a], -1), 0, 255).astype(np.uint8)


def _stripes(h, w, seed=0):
    """1-pixel vertical lines every third column: aliases badly without a low-pass filter."""
    del seed
    line = np.where(np.arange(w) % 3 == 0, 255, 0).astype(np.uint8)
    return np.repeat(np.repeat(line[None, :, None], h, 0), 3, 2)


def _pil_resize(array, size=RESIZE):
    return np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR), np.float32)


def _sized(factor):
    return int(RESIZE * factor * 0.75) + 1, int(RESIZE * factor) + 3


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.3, 2.0, 2.7, 4.0, 5.5, 8.0])
@pytest.mark.parametrize("pattern", [_pink, _stripes])
def test_eval_preprocess_matches_pillow_from_upscaling_to_downscale_factors_of_8(factor, pattern):
    """Growing, mixed (factor 1: one axis grows, one shrinks) and shrinking axes: each filtered as Pillow does."""
    image = pattern(*_sized(factor))
    top = (RESIZE - CROP) // 2
    expected = _pil_resize(image)[top : top + CROP, top : top + CROP]
    out = augment.eval_preprocess(tf.constant(image), RESIZE, CROP).numpy()
    assert np.abs(out - expected).mean() < 2.0
    assert abs(out.std() - expected.std()) < 2.0  # No aliasing: stripes average out as in Pillow.


def test_without_antialiasing_the_stripes_would_alias():
    """The check above can fail: plain bilinear sampling misses Pillow by tens of grey levels."""
    image = _stripes(*_sized(4.0))
    plain = tf.image.resize(tf.constant(image, tf.float32), [RESIZE, RESIZE], antialias=False).numpy()
    assert np.abs(plain - _pil_resize(image)).mean() > 20.0


def test_upscaling_is_unchanged_plain_bilinear():
    image = _pink(30, 41)
    out = augment.eval_preprocess(tf.constant(image), RESIZE, CROP).numpy()
    plain = tf.image.resize(tf.constant(image, tf.float32), [RESIZE, RESIZE], antialias=False).numpy()
    top = (RESIZE - CROP) // 2
    np.testing.assert_allclose(out, plain[top : top + CROP, top : top + CROP], atol=2e-3)
    assert np.abs(out - _pil_resize(image)[top : top + CROP, top : top + CROP]).mean() < 1.0


def _drawn_crop(key, height, width):
    """(top, left, flipped) of a rotation-free training draw, read back from its transform."""
    t = augment.train_transform(key, height, width, RESIZE, CROP, 0.0).numpy()
    flipped = t[0] < 0
    sx, sy = width / RESIZE, height / RESIZE
    left = (t[2] + 0.5) / sx - 0.5 - (CROP - 1 if flipped else 0)
    top = (t[5] + 0.5) / sy - 0.5
    return int(round(top)), int(round(left)), flipped


@pytest.mark.parametrize("factor", [2.0, 5.5])
@pytest.mark.parametrize("pattern", [_pink, _stripes])
def test_training_transform_without_rotation_is_pillows_resize_then_crop(factor, pattern):
    image = pattern(*_sized(factor))
    reference = _pil_resize(image)
    for seed in range(4):
        key = keyed_hash.combine_keys(seed)
        top, left, flipped = _drawn_crop(key, RESIZE, RESIZE)  # A large image is resized first, then cropped.
        expected = reference[top : top + CROP, left : left + CROP]
        expected = expected[:, ::-1] if flipped else expected
        out = augment.train_augment(tf.constant(image), key, RESIZE, CROP, 0.0).numpy()
        assert np.abs(out - expected).mean() < 1.0
        assert abs(out.std() - expected.std()) < 1.0 and abs(out.mean() - expected.mean()) < 1.0


def _pil_training_view(image, key, rotation=15.0):
    """The reference's steps in Pillow: bilinear resize, nearest-neighbour rotate, crop, flip."""
    top, left, angle, flip = (float(v) for v in augment.train_draw(key, RESIZE, CROP, rotation))
    resized = Image.fromarray(image).resize((RESIZE, RESIZE), Image.BILINEAR)
    rotated = np.asarray(resized.rotate(-np.degrees(angle), resample=Image.NEAREST), np.float32)
    crop = rotated[int(top) : int(top) + CROP, int(left) : int(left) + CROP]
    return crop[:, ::-1] if flip else crop


@pytest.mark.parametrize("factor", [0.6, 1.0, 2.0, 5.5])
@pytest.mark.parametrize("pattern", [_pink, _stripes, "noise"])
def test_training_path_is_pillows_resize_then_nearest_rotation_crop_and_flip(factor, pattern):
    """The default resampling is the reference code's, rotation included: Pillow's pixels within 2 grey levels."""
    shape = _sized(factor)
    image = (
        np.random.default_rng(7).integers(0, 256, (*shape, 3)).astype(np.uint8)
        if pattern == "noise"
        else pattern(*shape)
    )
    for seed in range(4):
        key = keyed_hash.combine_keys(seed)
        out = augment.train_augment(tf.constant(image), key, RESIZE, CROP, 15.0).numpy()
        diff = np.abs(out - _pil_training_view(image, key))
        # A pixel may differ where a sampling point falls within float rounding of a pixel edge.
        assert (diff.max(-1) > 2.0).mean() < 0.005
        assert diff.mean() < 1.0


def test_the_training_image_is_filtered_once():
    """Nearest-neighbour rotation keeps the resized image's contrast; a bilinear one (fused) blurs thin lines."""
    image = _stripes(RESIZE, RESIZE)  # Resizing leaves it as it is: only the rotation could blur it.
    centre = slice(CROP // 2 - 12, CROP // 2 + 12)
    contrast = {}
    for resampling in augment.RESAMPLING:
        views = [
            augment.train_augment(tf.constant(image), keyed_hash.combine_keys(s), RESIZE, CROP, 15.0, resampling)
            for s in range(6)
        ]
        contrast[resampling] = np.mean([v.numpy()[centre, centre].std() for v in views])
    assert contrast["pillow"] > 0.97 * image.std()
    assert contrast["fused"] < 0.85 * image.std()


def test_fused_resampling_is_one_bilinear_sampling_without_antialiasing():
    image = _pink(*_sized(2.7))
    plain = tf.image.resize(tf.constant(image, tf.float32), [RESIZE, RESIZE], antialias=False).numpy()
    checked = 0
    for seed in range(8):
        key = keyed_hash.combine_keys(seed)
        top, left, _, flip = (int(v) for v in augment.train_draw(key, RESIZE, CROP, 0.0))
        if flip:
            continue
        out = augment.train_augment(tf.constant(image), key, RESIZE, CROP, 0.0, "fused").numpy()
        np.testing.assert_allclose(
            out[1:-1, 1:-1], plain[top + 1 : top + CROP - 1, left + 1 : left + CROP - 1], atol=0.05
        )
        checked += 1
    assert checked >= 2
    with pytest.raises(ValueError, match="resampling=.bicubic."):
        augment.train_augment(tf.constant(image), keyed_hash.combine_keys(0), RESIZE, CROP, 0.0, "bicubic")


@pytest.mark.parametrize("resampling", augment.RESAMPLING)
def test_large_image_path_is_keyed_and_identical_with_and_without_xla(monkeypatch, resampling):
    image = tf.constant(_pink(300, 410, seed=2))
    key = keyed_hash.combine_keys(5)
    with_xla = augment.train_augment(image, key, RESIZE, CROP, 15.0, resampling).numpy()
    np.testing.assert_array_equal(with_xla, augment.train_augment(image, key, RESIZE, CROP, 15.0, resampling).numpy())
    assert not np.array_equal(
        with_xla, augment.train_augment(image, keyed_hash.combine_keys(6), RESIZE, CROP, 15.0, resampling).numpy()
    )
    monkeypatch.setattr(augment, "xla_available", lambda: False)
    augment._compiled_warp.cache_clear()
    try:
        without = augment.train_augment(image, key, RESIZE, CROP, 15.0, resampling).numpy()
    finally:
        augment._compiled_warp.cache_clear()
    np.testing.assert_allclose(without, with_xla, atol=0.02)


@pytest.mark.parametrize("resampling", augment.RESAMPLING)
def test_large_flat_image_has_no_dark_border(resampling):
    image = tf.fill([700, 500, 3], tf.constant(200, tf.uint8))
    for seed in range(4):
        out = augment.train_augment(image, keyed_hash.combine_keys(seed), RESIZE, CROP, 0.0, resampling).numpy()
        np.testing.assert_allclose(out, 200.0, atol=1e-3)
    np.testing.assert_allclose(augment.eval_preprocess(image, RESIZE, CROP).numpy(), 200.0, atol=1e-3)


def _jpeg(array, quality=90):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_jpeg_decoding_gives_pillows_pixels_exactly():
    data = _jpeg(_pink(120, 170, seed=3))
    decoded = pipeline.decode_image(tf.constant(data)).numpy()
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@pytest.mark.parametrize(
    "shape,gap,scale", [((600, 800), 2.0, 4), ((600, 800), 3.0, 2), ((600, 800), 0.0, 1), ((200, 900), 2.0, 1)]
)
def test_draft_decoding_picks_the_smallest_scale_that_keeps_the_gap(shape, gap, scale):
    data = tf.constant(_jpeg(_pink(*shape, seed=4)))
    image = pipeline.decode_image(data, resize_size=RESIZE, reducing_gap=gap)
    assert tuple(image.shape[:2]) == (-(-shape[0] // scale), -(-shape[1] // scale))
    assert min(image.shape[:2]) >= gap * RESIZE
    # What training then sees stays close to the full decode's antialiased resize.
    full = augment.resize(pipeline.decode_image(data), RESIZE).numpy()
    assert np.abs(augment.resize(image, RESIZE).numpy() - full).mean() < 1.5


def test_draft_decoding_of_png_and_the_reducing_gap_check():
    buffer = io.BytesIO()
    Image.fromarray(_pink(600, 800)).save(buffer, "PNG")
    assert pipeline.decode_image(tf.constant(buffer.getvalue()), resize_size=RESIZE, reducing_gap=2.0).shape == (
        600,
        800,
        3,
    )
    with pytest.raises(ValueError, match="reducing_gap=0.5"):
        pipeline.decode_image(tf.constant(buffer.getvalue()), resize_size=RESIZE, reducing_gap=0.5)


@pytest.mark.parametrize("gap", [0.0, 2.0])
def test_crop_bottom_removes_full_resolution_rows_at_any_decode_scale(gap):
    array = np.full((600, 800, 3), 40, np.uint8)
    array[-20:] = 250  # A bright banner.
    image = pipeline.decode_image(tf.constant(_jpeg(array, 95)), crop_bottom=20, resize_size=RESIZE, reducing_gap=gap)
    scale = 4 if gap else 1
    assert image.shape[0] == (600 - 20) // scale
    assert image.numpy()[-1].mean() < 60  # The banner is gone.


def test_keys_in_a_batch_draw_what_each_key_draws_alone():
    keys = tf.stack(KEYS)
    np.testing.assert_array_equal(
        keyed_hash.hash_uniform(keys, 9).numpy(), np.stack([keyed_hash.hash_uniform(key, 9).numpy() for key in KEYS])
    )
    for n, k in ((1, 1), (2, 1), (4, 2), (7, 3)):
        np.testing.assert_array_equal(
            rcm.draw_region_permutation(keys, n, k).numpy(),
            np.stack([rcm.draw_region_permutation(key, n, k).numpy() for key in KEYS]),
        )
    for rotation in (0.0, 15.0):
        np.testing.assert_array_equal(
            augment.train_transform(keys, 50, 61, 40, 32, rotation).numpy(),
            np.stack([augment.train_transform(key, 50, 61, 40, 32, rotation).numpy() for key in KEYS]),
        )


@pytest.mark.parametrize("offset_dtype", [tf.int32, tf.int64])
def test_a_batch_warped_in_one_op_gives_each_images_pixels(offset_dtype):
    """Images of different sizes (no axis over the resize side) in one buffer, as the held images are."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in ((40, 40), (23, 31), (40, 17))]
    images += images[:1] * 3  # Six keys, so one image is warped several ways in a batch.
    offsets = np.cumsum([0] + [image.shape[0] * image.shape[1] for image in images])[:-1]
    pixels = tf.constant(np.concatenate([image.reshape(-1, 3) for image in images]))
    heights = tf.constant([image.shape[0] for image in images], tf.int32)
    widths = tf.constant([image.shape[1] for image in images], tf.int32)
    batch = augment.train_augment_batch(
        pixels, tf.constant(offsets, offset_dtype), heights, widths, tf.stack(KEYS), 40, 32, 15.0
    )
    assert batch.dtype == tf.uint8 and batch.shape == (6, 32, 32, 3)
    for image, key, warped in zip(images, KEYS, batch.numpy(), strict=True):
        one = augment.train_augment(tf.constant(image), key, 40, 32, 15.0, keep_uint8=True).numpy()
        np.testing.assert_array_equal(warped, one)
