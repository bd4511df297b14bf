"""Augmentation of the paper (section 4.1 of dcl-spec.md), as small TF steps.

Training: resize to `resize_size` x `resize_size`, random rotation within
+-`rotation` degrees, random crop `image_size`, random horizontal flip (the
reference code's order). Evaluation: resize, then center crop. Pixels stay
float32 in [0, 255]: normalisation belongs to the model's backbone
preprocessing, in one place.

Resizing is Pillow's bilinear resize, which the reference code trains and
tests on: when an axis shrinks, the triangle filter widens with the scale
factor (antialiasing), so a photo several times the resize side does not
alias; when it grows, it is plain bilinear interpolation.

How images are resampled (`input.resampling`, carried by the model into
evaluation, export and prediction):

* `pillow` (default): the reference code's steps. Training: Pillow's resize
  to `resize_size`, rounded to uint8, then rotation, crop and flip as one
  nearest-neighbour resampling of the resized image (the reference rotates
  with Pillow's default, nearest neighbour; the crop and flip are exact).
  Evaluation: the same resize, then the centre crop. The image is filtered
  once, by the resize, in both. For speed, training filters only the axes
  that shrink (a growing axis needs no filter: Pillow's bilinear filter is
  then plain interpolation) and computes the growing axes' resized pixels
  inside the warp, only at the pixels the rotated crop picks; the pixels
  are Pillow's either way (tests/data/test_augment.py).
* `fused`: training does one bilinear resampling of the decoded image that
  resizes, rotates, crops and flips together, with no antialiasing (one op
  and no intermediate image: the cheapest for large photos); evaluation
  resizes with plain bilinear interpolation, no antialiasing, so both see
  the same unfiltered pixels. A photo several times the resize side aliases.

Filtering the resized image a second time (bilinear rotation after the
antialiased resize) blurs thin detail and costs accuracy on fine-grained
data: measured in docs/experiments.md ("Resampling the training image").
The resampling is compiled with XLA (`jit_compile=True`, on the host CPU
inside tf.data, as on any device).

Randomness is stateless and keyed, so one (seed, epoch, example) always gives
the same augmentation, and the original and its destructed copy share one draw
(destruction is applied afterwards, in `pairing`). The draws use the same
counter hash as RCM (`keyed_hash.hash_uniform`), which gives identical numbers with
and without XLA.
"""

import functools
import logging
import math

import tensorflow as tf

from dcl_keras import contract
from dcl_keras.contract import RESAMPLING
from dcl_keras.data import keyed_hash


def resize(image, size, antialias=True):
    """Resizes an image [H, W, 3] or batch to size x size as Pillow's bilinear resize does, float32 out.

    The aspect ratio is not kept (as in the paper). A shrinking axis is
    low-pass filtered (triangle filter as wide as the scale factor, Pillow's
    antialiasing); a growing axis is plain bilinear with half-pixel centres.
    `antialias=False` samples a shrinking axis bilinearly too, unfiltered.
    """
    image = tf.cast(image, tf.float32)
    if antialias:
        image = shrink(image, size)
    # Every axis now grows or keeps its size, where Pillow's filter is plain bilinear interpolation (and a
    # kept axis is copied exactly): TF's float bilinear kernel, several times faster than the filtered one.
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=False)
    return tf.clip_by_value(image, 0.0, 255.0)


def shrink(image, size):
    """Pillow's antialiased resize of the axes longer than `size` to `size`; shorter axes are kept.

    Only a shrinking axis needs the triangle filter to widen (the filter is
    separable, so each axis is resized on its own terms). uint8 in, rounded
    uint8 out (as Pillow's resize output is); an image with no axis longer
    than `size` comes back as it is, untouched.
    """
    shape = tf.shape(image)[-3:-1]
    target = tf.minimum(shape, size)

    def filtered():
        out = tf.image.resize(tf.cast(image, tf.float32), target, method="bilinear", antialias=True)
        out = tf.clip_by_value(out, 0.0, 255.0)
        return tf.cast(tf.round(out), tf.uint8) if image.dtype == tf.uint8 else out

    if image.dtype not in (tf.uint8, tf.float32):
        image = tf.cast(image, tf.float32)
    return tf.cond(tf.reduce_all(tf.equal(target, shape)), lambda: image, filtered)


def center_crop(image, size):
    """Crops the central size x size window of an image [H, W, 3] or batch [B, H, W, 3]."""
    shape = tf.shape(image)
    top = (shape[-3] - size) // 2
    left = (shape[-2] - size) // 2
    out = image[..., top : top + size, left : left + size, :]
    out.set_shape(image.shape[:-3].concatenate([size, size, 3]))
    return out


def _uniform(key, salt, minval, maxval):
    """One float32 draw per key in [minval, maxval) from the counter hash (identical with and without XLA)."""
    u = keyed_hash.hash_uniform(keyed_hash.combine_keys(key, salt), 1)[..., 0]
    return minval + (maxval - minval) * u


def train_draw(key, resize_size, image_size, rotation):
    """(top, left, angle in radians, flip 0. or 1.): one training draw, float32 scalars ([B] for keys [B]).

    The crop's offset in the resized image, the rotation about its centre
    (a positive angle turns the image clockwise on screen, as Pillow's
    `rotate(-degrees)`) and whether to mirror the crop. The draws come from
    `keyed_hash.hash_uniform`, so a key gives the same crop, flip and angle
    eagerly and under XLA.
    """
    offsets = float(resize_size - image_size + 1)
    top = tf.minimum(tf.floor(_uniform(key, contract.CROP_TOP_SALT, 0.0, offsets)), offsets - 1.0)
    left = tf.minimum(tf.floor(_uniform(key, contract.CROP_LEFT_SALT, 0.0, offsets)), offsets - 1.0)
    angle = (
        _uniform(key, contract.ROTATION_SALT, -rotation, rotation) * (math.pi / 180.0)
        if rotation
        else tf.zeros_like(top)
    )
    flip = tf.cast(_uniform(key, contract.FLIP_SALT, 0.0, 1.0) < 0.5, tf.float32)
    return top, left, angle, flip


def train_transform(key, input_height, input_width, resize_size, image_size, rotation):
    """The 8 projective-transform parameters of one training augmentation draw ([B, 8] for keys [B]).

    Maps each output pixel (x, y) of the crop to the input image: flip,
    shift by the crop offset in the resized image, undo the rotation about the
    resized image's centre, scale to the input image (half-pixel centres, as
    tf.image.resize; scale 1 when the input is the resized image). Order of
    the reference code: resize, rotate, crop, flip.
    """
    s, r = float(image_size), float(resize_size)
    top, left, angle, flip = train_draw(key, resize_size, image_size, rotation)
    fx = 1.0 - 2.0 * flip  # -1 when flipped.
    cos, sin = tf.cos(angle), tf.sin(angle)
    c = (r - 1.0) / 2.0
    sx = tf.cast(input_width, tf.float32) / r
    sy = tf.cast(input_height, tf.float32) / r
    zero = tf.zeros_like(top)
    # Resized-image point of output (x, y): X = fx*x + flip*(s-1) + left, Y = y + top.
    ox, oy = flip * (s - 1.0) + left - c, top - c
    # Unrotated: U = cos*(X-c) + sin*(Y-c) + c, V = -sin*(X-c) + cos*(Y-c) + c.
    a0, a1, a2 = cos * fx, sin, cos * ox + sin * oy + c
    b0, b1, b2 = -sin * fx, cos, -sin * ox + cos * oy + c
    # Decoded image: x_in = (U + 0.5) * sx - 0.5.
    return tf.stack([a0 * sx, a1 * sx, (a2 + 0.5) * sx - 0.5, b0 * sy, b1 * sy, (b2 + 0.5) * sy - 0.5, zero, zero], -1)


def train_augment(image, key, resize_size, image_size, rotation, resampling="pillow", *, keep_uint8=False):
    """The paper's training augmentation for one image [H, W, 3], keyed by a uint32 `key`.

    Resize to `resize_size`, rotate within +-`rotation` degrees (zero fill),
    random crop `image_size`, random horizontal flip, resampled as
    `resampling` says (see the module docstring): "pillow" resizes first
    (`resize`, rounded to uint8 for uint8 input, as Pillow's output is), then
    rotates, crops and flips with nearest-neighbour sampling; "fused" does it
    all in one bilinear resampling of `image`. Either way the last step is
    one XLA-compiled resampling; images of any size share a few compiled
    programs (see `_flat_bucket`).

    float32 out in [0, 255]; with `keep_uint8`, the pillow path on a uint8
    image returns uint8 instead (its pixels are whole numbers, so nothing is
    lost), which keeps the views 4x smaller until they are batched.
    """
    check_resampling(resampling)
    image = tf.convert_to_tensor(image)
    if image.dtype not in (tf.uint8, tf.float32):
        image = tf.cast(image, tf.float32)
    if resampling == "pillow":
        # The filtered part of Pillow's resize (axes longer than `resize_size`); the growing axes' plain
        # bilinear part is done by the warp, at the resized pixels the crop keeps, not at all of them.
        image = shrink(image, resize_size)
    shape = tf.shape(image)
    flat = _flat_bucket(tf.reshape(image, [-1, 3]))
    warp = _compiled_warp(resize_size, image_size, float(rotation), "nearest" if resampling == "pillow" else "bilinear")
    out = warp(flat, shape[0], shape[1], key)
    if not keep_uint8:
        out = tf.cast(out, tf.float32)
    return tf.ensure_shape(out, [image_size, image_size, 3])


def train_augment_batch(pixels, base, height, width, key, resize_size, image_size, rotation):
    """`train_augment` (pillow resampling, uint8 out) of a batch of images held in one buffer, in one op.

    `pixels` is uint8 [P, 3], the images one after another, row-major, each
    already shrunk to at most `resize_size` per axis (`shrink`); image b
    starts at row `base[b]` and is `height[b]` x `width[b]`. Gives uint8
    [B, image_size, image_size, 3], image b exactly what `train_augment` (with
    `keep_uint8`) makes of it with `key[b]`, at a fraction of the per-image
    overhead for small images.
    """
    warp = _compiled_warp(resize_size, image_size, float(rotation), "nearest")
    out = warp(pixels, height, width, key, base)
    return tf.ensure_shape(out, [None, image_size, image_size, 3])


def check_resampling(resampling):
    if resampling not in RESAMPLING:
        raise ValueError(f"`resampling` must be one of {RESAMPLING}. Received: resampling={resampling!r}")


def _flat_bucket(pixels):
    """Pads [P, 3] pixels to a bucketed length, so XLA compiles once per bucket, not per image size.

    Buckets are multiples of 2^(ceil(log2 P) - 4): at most 8 per doubling of
    the pixel count, each at most 1/8 larger than the image it holds. Padding
    is never read (sampling indices stay inside the H x W image).
    """
    count = tf.shape(pixels, out_type=tf.int64)[0]
    bits = tf.math.ceil(tf.math.log(tf.cast(tf.maximum(count, 1), tf.float64)) / math.log(2.0))
    step = tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.cast(tf.maximum(bits - 4.0, 0.0), tf.int64))
    bucket = (count + step - 1) // step * step
    return tf.pad(pixels, [[0, bucket - count], [0, 0]])


@functools.cache
def _compiled_warp(resize_size, image_size, rotation, interpolation="bilinear"):
    """The training resampling of an image `height` x `width` (flat pixels, see `_flat_bucket`), keyed.

    Or of a batch: heights, widths and keys [B], and `base` [B], the row of
    `flat` where each image starts (`train_augment_batch`).

    "bilinear": one bilinear resampling of the image by the whole transform
    (resize, rotation, crop, flip). "nearest": Pillow's steps for an image
    whose axes are no longer than `resize_size` (the pillow path shrinks the
    longer ones first): the resized image's pixel nearest to each rotated
    crop point, computed only where it is picked.
    """

    def warp(flat, height, width, key, base=None):
        if interpolation == "nearest":
            t = train_transform(key, resize_size, resize_size, resize_size, image_size, rotation)
            out = warp_image(flat, height, width, t, image_size, "nearest", resized=resize_size, base=base)
        else:
            t = train_transform(key, height, width, resize_size, image_size, rotation)
            out = warp_image(flat, height, width, t, image_size, interpolation, base=base)
        if interpolation == "nearest" and flat.dtype == tf.uint8:
            return tf.cast(out, tf.uint8)  # Rounded resized pixels: whole numbers in [0, 255].
        # Bilinear weights can overshoot 255 by a rounding error; the clip is free once fused.
        return tf.clip_by_value(out, 0.0, 255.0)

    return tf.function(warp, jit_compile=xla_available(), reduce_retracing=True)


@functools.cache
def xla_available():
    """Whether this TensorFlow build compiles with XLA on the host CPU (checked once per process).

    Inside tf.data a failing compilation would surface per example, where the
    `skip` policy would drop every example; checking first lets the pipeline
    fall back to TF kernels (same results up to rounding, about 7x slower)
    with one warning instead.
    """
    probe = tf.function(lambda x: x * 2.0, jit_compile=True)
    try:
        with tf.init_scope(), tf.device("/CPU:0"):
            probe(tf.constant([1.0]))
    except tf.errors.OpError as error:  # Unimplemented / NotFound / InvalidArgument from the JIT.
        logging.warning("XLA is unavailable on the CPU (%s): the augmentation runs without it, slower.", error)
        return False
    return True


def warp_image(flat, height, width, t, size, interpolation="bilinear", resized=None, base=None):
    """Samples the image at (u, v) = (t0 x + t1 y + t2, t3 x + t4 y + t5) for a size x size output.

    Args:
        flat: [P, 3] pixels (uint8 or float32) of an image `height` x `width`,
            row-major, possibly followed by padding; or of several images one
            after another (see `base`).
        height, width: int32 scalars; [B] for a batch.
        t: float32 [8], a `train_transform`; [B, 8] for a batch.
        size: int, output side.
        interpolation: "bilinear", or "nearest" (the pixel whose area holds
            the point, as Pillow's nearest-neighbour rotate picks it).
        resized: nearest only: (u, v) are points of the image resized to
            `resized` x `resized` (Pillow's bilinear resize; every axis must
            grow or keep its size), and the picked pixel of that resized image
            is computed here, bilinearly at its centre, rounded for uint8
            pixels as Pillow's resize output is. None: (u, v) are points of
            the image itself.
        base: int32 or int64 [B], the row of `flat` where each image of a
            batch starts; None: the image starts at row 0.

    Returns:
        float32 [size, size, 3] ([B, size, size, 3] for a batch). Bilinear
        with edge pixels replicated inside the image's own area (u in [-0.5,
        width - 0.5], likewise v), so a resize leaves no dark border even for
        tiny images; points outside that area (the rotation's corners) are 0.
    """
    grid = tf.range(size, dtype=tf.float32)
    y, x = grid[:, None], grid[None, :]

    def per_image(value):  # [...] -> [..., 1, 1], against the [size, size] grid.
        return value[..., None, None]

    u = per_image(t[..., 0]) * x + per_image(t[..., 1]) * y + per_image(t[..., 2])
    v = per_image(t[..., 3]) * x + per_image(t[..., 4]) * y + per_image(t[..., 5])
    width, height = per_image(tf.convert_to_tensor(width)), per_image(tf.convert_to_tensor(height))
    w = tf.cast(width, tf.float32)
    h = tf.cast(height, tf.float32)
    offset = None if base is None else per_image(base)
    if interpolation == "nearest":
        sampled_w, sampled_h = (float(resized), float(resized)) if resized else (w, h)
        inside = (u >= -0.5) & (u <= sampled_w - 0.5) & (v >= -0.5) & (v <= sampled_h - 0.5)
        column, row = tf.floor(u + 0.5), tf.floor(v + 0.5)
        if not resized:
            column = tf.clip_by_value(tf.cast(column, tf.int32), 0, width - 1)
            row = tf.clip_by_value(tf.cast(row, tf.int32), 0, height - 1)
            pixels = _gather(flat, row * width + column, offset)
            return tf.cast(pixels, tf.float32) * tf.cast(inside, tf.float32)[..., None]
        # The picked resized pixel's centre in the image (half-pixel centres, as Pillow and tf.image.resize).
        column = tf.clip_by_value(column, 0.0, sampled_w - 1.0)
        row = tf.clip_by_value(row, 0.0, sampled_h - 1.0)
        out = _bilinear(
            flat, height, width, (column + 0.5) * (w / sampled_w) - 0.5, (row + 0.5) * (h / sampled_h) - 0.5, offset
        )
        if flat.dtype == tf.uint8:
            out = tf.round(tf.clip_by_value(out, 0.0, 255.0))
        return out * tf.cast(inside, tf.float32)[..., None]
    inside = tf.cast((u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5), tf.float32)[..., None]
    return _bilinear(flat, height, width, u, v, offset) * inside


def _gather(flat, index, offset):
    """flat[index (+ offset)]: rows of one image, or of the images of a batch at their offsets."""
    if offset is not None:
        index = tf.cast(index, offset.dtype) + offset
    return tf.gather(flat, index)


def _bilinear(flat, height, width, u, v, offset=None):
    """float32 [..., 3]: the image bilinearly at points (u, v), edge pixels replicated beyond the edge."""

    def pixels(index):  # Gathered before the cast: 4x less memory traffic for uint8 images.
        return tf.cast(_gather(flat, index, offset), tf.float32)

    u0, v0 = tf.floor(u), tf.floor(v)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    u0, v0 = tf.cast(u0, tf.int32), tf.cast(v0, tf.int32)
    left, right = tf.clip_by_value(u0, 0, width - 1), tf.clip_by_value(u0 + 1, 0, width - 1)
    top, bottom = tf.clip_by_value(v0, 0, height - 1) * width, tf.clip_by_value(v0 + 1, 0, height - 1) * width
    upper = pixels(top + left) * (1.0 - fu) + pixels(top + right) * fu
    lower = pixels(bottom + left) * (1.0 - fu) + pixels(bottom + right) * fu
    return upper * (1.0 - fv) + lower * fv


def eval_preprocess(image, resize_size, image_size, resampling="pillow"):
    """The paper's test-time preprocessing: resize, then center crop (antialiased unless `resampling` is fused)."""
    check_resampling(resampling)
    return center_crop(resize(image, resize_size, antialias=resampling == "pillow"), image_size)
