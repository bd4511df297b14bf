"""Augmentation of the paper (section 4.1 of dcl-spec.md), as small TF steps.

Training: resize to `resize_size` x `resize_size`, random rotation within
+-`rotation` degrees, random crop `image_size`, random horizontal flip (the
reference code's order), fused into one resampling pass.
Evaluation: resize, then center crop. Pixels stay float32 in [0, 255]:
normalisation belongs to the model's backbone preprocessing, in one place.

Randomness is stateless and keyed, so one (seed, epoch, example) always gives
the same augmentation, and the original and its destructed copy share one draw
(destruction is applied afterwards, in `pairing`).
"""

import math

import tensorflow as tf

from dcl_keras.data import rcm


def _seed_pair(key, salt):
    """A [2] int32 seed for tf stateless ops, derived from a uint32 key and a salt."""
    a = rcm.combine_keys(key, salt)
    b = rcm.combine_keys(a, salt + 1)
    return tf.bitcast(tf.stack([a, b]), tf.int32)


def resize(image, size):
    """Resizes to size x size (aspect ratio not kept, as in the paper), float32 out."""
    image = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear", antialias=False)
    return tf.clip_by_value(image, 0.0, 255.0)


def center_crop(image, size):
    """Crops the central size x size window of an image [H, W, 3] or batch [B, H, W, 3]."""
    shape = tf.shape(image)
    top = (shape[-3] - size) // 2
    left = (shape[-2] - size) // 2
    out = image[..., top : top + size, left : left + size, :]
    out.set_shape(image.shape[:-3].concatenate([size, size, 3]))
    return out


def _uniform(key, salt, minval, maxval, dtype=tf.float32):
    return tf.random.stateless_uniform([], seed=_seed_pair(key, salt), minval=minval, maxval=maxval, dtype=dtype)


def train_transform(key, input_height, input_width, resize_size, image_size, rotation):
    """The 8 projective-transform parameters of one training augmentation draw.

    Maps each output pixel (x, y) of the crop to the decoded image: flip,
    shift by the crop offset in the resized image, undo the rotation about the
    resized image's centre, scale to the decoded image (half-pixel centres, as
    tf.image.resize). Order of the reference code: resize, rotate, crop, flip.
    """
    s, r = float(image_size), float(resize_size)
    top = tf.cast(_uniform(key, 11, 0, resize_size - image_size + 1, tf.int32), tf.float32)
    left = tf.cast(_uniform(key, 13, 0, resize_size - image_size + 1, tf.int32), tf.float32)
    angle = _uniform(key, 23, -rotation, rotation) * (math.pi / 180.0) if rotation else tf.constant(0.0)
    flip = tf.cast(_uniform(key, 37, 0.0, 1.0) < 0.5, tf.float32)
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


def train_augment(image, key, resize_size, image_size, rotation):
    """The paper's training augmentation for one image, keyed by a uint32 `key`.

    Resize to `resize_size`, rotate within +-`rotation` degrees (zero fill),
    random crop `image_size`, random horizontal flip, all in one bilinear
    resampling pass (one interpolation instead of two, and about 3x faster
    than doing the steps one after another).
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    transform = train_transform(key, shape[0], shape[1], resize_size, image_size, rotation)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=[image_size, image_size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return tf.clip_by_value(tf.ensure_shape(out[0], [image_size, image_size, 3]), 0.0, 255.0)


def eval_preprocess(image, resize_size, image_size):
    """The paper's test-time preprocessing: resize, then center crop."""
    return center_crop(resize(image, resize_size), image_size)
