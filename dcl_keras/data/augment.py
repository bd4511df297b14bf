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
    random crop `image_size`, random horizontal flip, all in one resampling of
    the decoded image (`_warp_two_pass`): one interpolation instead of two,
    and no intermediate 512 x 512 image.
    """
    shape = tf.shape(image)
    t = train_transform(key, shape[0], shape[1], resize_size, image_size, rotation)
    out = _warp_two_pass(image, t, image_size)
    return tf.clip_by_value(tf.ensure_shape(out, [image_size, image_size, 3]), 0.0, 255.0)


def _warp_two_pass(image, t, size):
    """Samples image[v, u] at (u, v) = (a0 x + a1 y + a2, b0 x + b1 y + b2) for a size x size output.

    Two separable bilinear passes (Catmull and Smith's two-pass warp), each a
    `crop_and_resize` of one-pixel-high boxes: first along x within every
    input row (with y rewritten through v), then along the rows within every
    output column. Exactly bilinear when there is no rotation; for the small
    rotations used here it differs from one 2-D bilinear pass by a fraction of
    a grey level, and runs about 20% faster than ImageProjectiveTransformV3.
    Points outside the image read 0 (the rotation's black corners); a one-pixel
    border of replicated edge pixels keeps the half pixel at the image's own
    edge at its edge value, as tf.image.resize does.
    """
    # Edge replication by concatenation: tf.pad's SYMMETRIC mode costs 20x more.
    image = tf.concat([image[:1], image, image[-1:]], axis=0)
    image = tf.concat([image[:, :1], image, image[:, -1:]], axis=1)
    a0, a1, a2, b0, b1, b2 = t[0], t[1], t[2] + 1.0, t[3], t[4], t[5] + 1.0
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    s = float(size)
    # Pass 1, for input row r (v = r): u = slope * x + start(r).
    rows = tf.range(shape[0], dtype=tf.float32)
    slope = a0 - a1 * b0 / b1
    start = (a1 / b1) * rows + (a2 - a1 * b2 / b1)
    y = rows / (h - 1.0)
    boxes = tf.stack([y, start / (w - 1.0), y, (start + slope * (s - 1.0)) / (w - 1.0)], axis=1)
    passed = tf.image.crop_and_resize(image[None], boxes, tf.zeros([shape[0]], tf.int32), [1, size])[:, 0]
    # Pass 2, for output column x: v = b1 * y + first(x), read from the rows of pass 1.
    passed = tf.transpose(passed, [1, 0, 2])
    cols = tf.range(size, dtype=tf.float32)
    first = b0 * cols + b2
    x = cols / (s - 1.0)
    boxes = tf.stack([x, first / (h - 1.0), x, (first + b1 * (s - 1.0)) / (h - 1.0)], axis=1)
    out = tf.image.crop_and_resize(passed[None], boxes, tf.zeros([size], tf.int32), [1, size])[:, 0]
    return tf.transpose(out, [1, 0, 2])


def eval_preprocess(image, resize_size, image_size):
    """The paper's test-time preprocessing: resize, then center crop."""
    return center_crop(resize(image, resize_size), image_size)
