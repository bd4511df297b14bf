"""Pairing (dcl_keras/data/pairing.py): a batch at a time, the same views and targets as one example at a time."""

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras.data import keyed_hash, pairing

KEYS = [keyed_hash.combine_keys(3, 1, position) for position in range(6)]


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
