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
  once, by the resize, in both.
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
from dcl_keras.data import keyed_hash

RESAMPLING = ("pillow", "fused")


def resize(image, size, antialias=True):
    """Resizes an image [H, W, 3] or batch to size x size as Pillow's bilinear resize does, float32 out.

    The aspect ratio is not kept (as in the paper). A shrinking axis is
    low-pass filtered (triangle filter as wide as the scale factor, Pillow's
    antialiasing); a growing axis is plain bilinear with half-pixel centres.
    `antialias=False` samples a shrinking axis bilinearly too, unfiltered.
    """
    image = tf.convert_to_tensor(image)
    if image.dtype not in (tf.uint8, tf.float32):
        image = tf.cast(image, tf.float32)
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)
    return tf.clip_by_value(image, 0.0, 255.0)


def center_crop(image, size):
    """Crops the central size x size window of an image [H, W, 3] or batch [B, H, W, 3]."""
    shape = tf.shape(image)
    top = (shape[-3] - size) // 2
    left = (shape[-2] - size) // 2
    out = image[..., top : top + size, left : left + size, :]
    out.set_shape(image.shape[:-3].concatenate([size, size, 3]))
    return out


def _uniform(key, salt, minval, maxval):
    """One float32 draw in [minval, maxval) from the counter hash (identical with and without XLA)."""
    u = keyed_hash.hash_uniform(keyed_hash.combine_keys(key, salt), 1)[0]
    return minval + (maxval - minval) * u


def train_draw(key, resize_size, image_size, rotation):
    """(top, left, angle in radians, flip 0. or 1.): one training draw, float32 scalars.

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
        _uniform(key, contract.ROTATION_SALT, -rotation, rotation) * (math.pi / 180.0) if rotation else tf.constant(0.0)
    )
    flip = tf.cast(_uniform(key, contract.FLIP_SALT, 0.0, 1.0) < 0.5, tf.float32)
    return top, left, angle, flip


def train_transform(key, input_height, input_width, resize_size, image_size, rotation):
    """The 8 projective-transform parameters of one training augmentation draw.

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
    # Resized-image point of output (x, y): X = fx*x + flip*(s-1) + left, Y = y + top.
    ox, oy = flip * (s - 1.0) + left - c, top - c
    # Unrotated: U = cos*(X-c) + sin*(Y-c) + c, V = -sin*(X-c) + cos*(Y-c) + c.
    a0, a1, a2 = cos * fx, sin, cos * ox + sin * oy + c
    b0, b1, b2 = -sin * fx, cos, -sin * ox + cos * oy + c
    # Decoded image: x_in = (U + 0.5) * sx - 0.5.
    return tf.stack([a0 * sx, a1 * sx, (a2 + 0.5) * sx - 0.5, b0 * sy, b1 * sy, (b2 + 0.5) * sy - 0.5, 0.0, 0.0])


def train_augment(image, key, resize_size, image_size, rotation, resampling="pillow"):
    """The paper's training augmentation for one image [H, W, 3], keyed by a uint32 `key`.

    Resize to `resize_size`, rotate within +-`rotation` degrees (zero fill),
    random crop `image_size`, random horizontal flip, resampled as
    `resampling` says (see the module docstring): "pillow" resizes first
    (`resize`, rounded to uint8 for uint8 input, as Pillow's output is), then
    rotates, crops and flips with nearest-neighbour sampling; "fused" does it
    all in one bilinear resampling of `image`. Either way the last step is
    one XLA-compiled resampling; images of any size share a few compiled
    programs (see `_flat_bucket`).
    """
    check_resampling(resampling)
    image = tf.convert_to_tensor(image)
    if image.dtype not in (tf.uint8, tf.float32):
        image = tf.cast(image, tf.float32)
    if resampling == "pillow":
        image = _resized_like(image, resize_size)
    shape = tf.shape(image)
    flat = _flat_bucket(tf.reshape(image, [-1, 3]))
    warp = _compiled_warp(resize_size, image_size, float(rotation), "nearest" if resampling == "pillow" else "bilinear")
    out = warp(flat, shape[0], shape[1], key)
    return tf.ensure_shape(out, [image_size, image_size, 3])


def check_resampling(resampling):
    if resampling not in RESAMPLING:
        raise ValueError(f"`resampling` must be one of {RESAMPLING}. Received: resampling={resampling!r}")


def _resized_like(image, size):
    """`resize`, keeping the input's dtype: uint8 images are rounded, as Pillow's resize output is."""
    resized = resize(image, size)
    return tf.cast(tf.round(resized), tf.uint8) if image.dtype == tf.uint8 else resized


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
    def warp(flat, height, width, key):
        t = train_transform(key, height, width, resize_size, image_size, rotation)
        # Bilinear weights can overshoot 255 by a rounding error; the clip is free once fused.
        return tf.clip_by_value(warp_image(flat, height, width, t, image_size, interpolation), 0.0, 255.0)

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


def warp_image(flat, height, width, t, size, interpolation="bilinear"):
    """Samples the image at (u, v) = (t0 x + t1 y + t2, t3 x + t4 y + t5) for a size x size output.

    Args:
        flat: [P, 3] pixels (uint8 or float32) of an image `height` x `width`,
            row-major, possibly followed by padding.
        height, width: int32 scalars.
        t: float32 [8], a `train_transform`.
        size: int, output side.
        interpolation: "bilinear", or "nearest" (the pixel whose area holds
            the point, as Pillow's nearest-neighbour rotate picks it).

    Returns:
        float32 [size, size, 3]. Bilinear with edge pixels replicated inside
        the image's own area (u in [-0.5, width - 0.5], likewise v), so a
        resize leaves no dark border even for tiny images; points outside that
        area (the rotation's corners) are 0.
    """
    grid = tf.range(size, dtype=tf.float32)
    y, x = grid[:, None], grid[None, :]
    u = t[0] * x + t[1] * y + t[2]
    v = t[3] * x + t[4] * y + t[5]
    w = tf.cast(width, tf.float32)
    h = tf.cast(height, tf.float32)
    inside = tf.cast((u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5), tf.float32)[..., None]
    pixels = tf.cast(flat, tf.float32)
    if interpolation == "nearest":
        column = tf.clip_by_value(tf.cast(tf.floor(u + 0.5), tf.int32), 0, width - 1)
        row = tf.clip_by_value(tf.cast(tf.floor(v + 0.5), tf.int32), 0, height - 1)
        return tf.gather(pixels, row * width + column) * inside
    u0, v0 = tf.floor(u), tf.floor(v)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    u0, v0 = tf.cast(u0, tf.int32), tf.cast(v0, tf.int32)
    left, right = tf.clip_by_value(u0, 0, width - 1), tf.clip_by_value(u0 + 1, 0, width - 1)
    top, bottom = tf.clip_by_value(v0, 0, height - 1) * width, tf.clip_by_value(v0 + 1, 0, height - 1) * width
    upper = tf.gather(pixels, top + left) * (1.0 - fu) + tf.gather(pixels, top + right) * fu
    lower = tf.gather(pixels, bottom + left) * (1.0 - fu) + tf.gather(pixels, bottom + right) * fu
    return (upper * (1.0 - fv) + lower * fv) * inside


def eval_preprocess(image, resize_size, image_size, resampling="pillow"):
    """The paper's test-time preprocessing: resize, then center crop (antialiased unless `resampling` is fused)."""
    check_resampling(resampling)
    return center_crop(resize(image, resize_size, antialias=resampling == "pillow"), image_size)
