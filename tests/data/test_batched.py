"""A batch at a time (images held in memory): the same draws, pixels and views as one example at a time."""

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras.data import augment, keyed_hash, pairing, rcm

KEYS = [keyed_hash.combine_keys(3, 1, position) for position in range(6)]


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


@pytest.mark.parametrize("originals,destructed", [(1, 1), (1, 0), (0, 2), (2, 1)])
def test_a_batch_makes_each_examples_views_and_targets(originals, destructed):
    images = tf.constant(np.random.default_rng(1).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8))
    labels = tf.constant([3, 1, 4, 1, 5, 9], tf.int32)
    ratio = dict(n=4, k=2, originals=originals, destructed=destructed)
    views, targets = pairing.make_views(images, labels, tf.stack(KEYS), **ratio)
    assert views.shape == (6, originals + destructed, 16, 16, 3) and views.dtype == tf.uint8
    for b, key in enumerate(KEYS):
        one_views, one_targets = pairing.make_views(images[b], labels[b], key, **ratio)
        np.testing.assert_array_equal(views[b].numpy(), one_views.numpy())
        for name, value in one_targets.items():
            np.testing.assert_array_equal(targets[name][b].numpy(), value.numpy(), err_msg=name)


def test_integer_keys_of_any_dtype_are_taken_as_uint32():
    for key in (5, tf.constant(5), tf.constant(5, tf.int64)):
        np.testing.assert_array_equal(
            rcm.draw_region_permutation(key, 4, 2).numpy(), rcm.draw_region_permutation(tf.constant(5, tf.uint32), 4, 2)
        )
