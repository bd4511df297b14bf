"""Augmentation of the paper (section 4.1 of dcl-spec.md), as small TF steps.

Training: resize to `resize_size` x `resize_size`, random crop `image_size`,
random rotation within +-`rotation` degrees, random horizontal flip.
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


def random_crop(image, size, key):
    return tf.image.stateless_random_crop(image, [size, size, 3], seed=_seed_pair(key, 11))


def random_rotation(image, max_degrees, key):
    """Rotates about the centre by an angle drawn in [-max_degrees, max_degrees]; zero fill."""
    if not max_degrees:
        return image
    angle = tf.random.stateless_uniform(
        [], seed=_seed_pair(key, 23), minval=-max_degrees, maxval=max_degrees
    ) * (math.pi / 180.0)
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples input at R^-1 applied about the centre.
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    transform = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return tf.ensure_shape(out[0], image.shape)


def random_flip(image, key):
    return tf.image.stateless_random_flip_left_right(image, seed=_seed_pair(key, 37))


def train_augment(image, key, resize_size, image_size, rotation):
    """The paper's training augmentation for one image, keyed by a uint32 `key`."""
    image = resize(image, resize_size)
    image = random_crop(image, image_size, key)
    image = random_rotation(image, rotation, key)
    return random_flip(image, key)


def eval_preprocess(image, resize_size, image_size):
    """The paper's test-time preprocessing: resize, then center crop."""
    return center_crop(resize(image, resize_size), image_size)
