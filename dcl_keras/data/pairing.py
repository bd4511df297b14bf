"""Paired DCL batches: originals and destructed copies with exact targets.

The batch contract (what the model and its losses consume):

    images: float32 [M, H, W, 3], pixels in [0, 255] (not normalised; the
        model's backbone preprocessing does that).
    targets: dict keyed by the model's output names (`dcl_keras.contract`)
        "classifier": int32 [M], the class label of every image (the
            destructed copy keeps its original's label);
        "destruction_discriminator": int32 [M], 0 = original, 1 = destructed;
        "region_alignment": float32 [M, N, N, 2], for each destination cell the
            (row, column) of its source cell, normalised as
            `(index + 0.5) / N` (cell centres, in (0, 1)). Originals get the
            identity grid.

Each source example yields `originals` copies of its augmented image followed
by `destructed` copies, each with its own RCM draw, all sharing the example's
one augmentation draw. A batch of `batch_size` examples therefore holds
M = batch_size * (originals + destructed) images, grouped example by example.
The paper's default is 1:1; 1:0 is the plain baseline and 0:1 trains on
destructed images only (Table 4 of the paper).
"""

import tensorflow as tf

from dcl_keras import contract
from dcl_keras.contract import ALIGNMENT, CLASSIFIER, DISCRIMINATOR
from dcl_keras.data import keyed_hash, rcm


def make_views(image, label, key, *, n, k, originals=1, destructed=1):
    """Turns one augmented image, or a batch of them, into original and destructed views.

    Args:
        image: [H, W, 3] (any dtype: the views keep it), already augmented;
            or a batch [B, H, W, 3].
        label: int32 scalar ([B] for a batch).
        key: uint32 scalar, the example's key (seed, epoch, position) ([B]).
        n, k: RCM grid size and neighbourhood.
        originals, destructed: copies of each kind to emit.

    Returns:
        (images [V, H, W, 3], targets dict of [V, ...]) with V = originals +
        destructed; [B, V, ...] for a batch, the same views as one example at
        a time.
    """
    key = tf.cast(key, tf.uint32)
    batch = tf.shape(key)
    images, sources = [], []
    identity = tf.broadcast_to(rcm.identity_source(n), tf.concat([batch, [n, n, 2]], 0))
    for _ in range(originals):
        images.append(image)
        sources.append(identity)
    for copy in range(destructed):
        destructed_image, source = rcm.region_confusion(
            image, keyed_hash.combine_keys(key, contract.DESTRUCTED_COPY_SALT + copy), n, k
        )
        images.append(destructed_image)
        sources.append(source)
    views = originals + destructed
    view_shape = tf.concat([batch, [views]], 0)
    targets = {
        CLASSIFIER: tf.broadcast_to(tf.cast(label, tf.int32)[..., None], view_shape),
        DISCRIMINATOR: tf.broadcast_to(tf.constant(contract.view_labels(originals, destructed), tf.int32), view_shape),
        ALIGNMENT: rcm.alignment_target(tf.stack(sources, axis=-4)),
    }
    return tf.stack(images, axis=-4), targets


def flatten_views(images, targets):
    """[B, V, ...] batches of views -> [B * V, ...] batches, images as float32 (the views may be uint8)."""

    def merge(x):
        shape = tf.shape(x)
        return tf.reshape(x, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))

    return merge(images), {name: merge(value) for name, value in targets.items()}
