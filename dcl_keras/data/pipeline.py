"""tf.data pipelines: files -> decode -> augment -> RCM and pairing -> batches.

Reproducibility: the training stream is a sequence of epochs. Epoch `e` visits
the examples in an order drawn from (seed, e), and example number `i` of that
epoch is augmented and destructed with the key (seed, e, i). The same seed thus
gives the same batches, and resuming at epoch `e` rebuilds exactly the stream
an uninterrupted run would have seen.

Bad files: `check_images` decodes every listed file once before training and
reports undecodable ones all at once (policy "skip": logged and dropped;
"strict": raised). During training a file that still fails to decode is
dropped under "skip", so one corrupt file never stops an epoch.
"""

import logging

import numpy as np
import tensorflow as tf

from dcl_keras.data import augment, pairing, rcm

BAD_FILE_POLICIES = ("skip", "strict")
AUTOTUNE = tf.data.AUTOTUNE


def decode_image(data):
    """Decodes JPEG/PNG/BMP/GIF bytes to uint8 [H, W, 3] (gray, RGBA, CMYK, 16-bit converted)."""
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def read_image(path):
    return decode_image(tf.io.read_file(path))


class UndecodableImagesError(ValueError):
    pass


def find_undecodable(paths):
    """Indices of the files in `paths` that cannot be read and decoded."""
    if not paths:
        return []
    table = tf.constant(paths)
    ds = tf.data.Dataset.range(len(paths)).map(
        lambda i: (i, tf.shape(read_image(table[i]))), num_parallel_calls=AUTOTUNE, deterministic=False
    )
    ds = ds.ignore_errors()
    ok = np.zeros(len(paths), bool)
    for index, _ in ds.as_numpy_iterator():
        ok[index] = True
    return [int(i) for i in np.flatnonzero(~ok)]


def check_images(split, policy="skip"):
    """Decodes every file of a FileSplit once; returns the split without bad files.

    Under "skip" each bad path is logged once and dropped; under "strict" an
    UndecodableImagesError names them all.
    """
    if policy not in BAD_FILE_POLICIES:
        raise ValueError(f"`bad_files` must be one of {BAD_FILE_POLICIES}. Received: bad_files={policy!r}")
    bad = find_undecodable(split.paths)
    if not bad:
        return split
    listing = "\n  ".join(split.paths[i] for i in bad)
    if policy == "strict":
        raise UndecodableImagesError(f"{split.name}: {len(bad)} file(s) could not be decoded as images:\n  {listing}")
    logging.warning("%s: skipping %d undecodable file(s):\n  %s", split.name, len(bad), listing)
    keep = sorted(set(range(split.num_examples)) - set(bad))
    return split.subset(keep)


def examples(source, order_key=None):
    """The (image uint8 [H, W, 3], label int32) stream of a split, optionally shuffled.

    Files are decoded here; a decoding error raises (callers drop it under the
    skip policy). `order_key` is a uint32 tensor; None keeps the listed order.
    """
    if hasattr(source, "tfds_dataset"):
        ds = source.tfds_dataset()
        if order_key is not None:
            ds = ds.shuffle(
                min(source.num_examples, 10_000), seed=tf.cast(order_key, tf.int64), reshuffle_each_iteration=False
            )
        return ds.map(lambda image, label: (_rgb(image), tf.cast(label, tf.int32)), num_parallel_calls=AUTOTUNE)
    paths = tf.constant(source.paths)
    labels = tf.constant(source.labels, tf.int32)
    indices = tf.range(source.num_examples)
    if order_key is not None:
        seed = tf.bitcast(tf.stack([order_key, rcm.combine_keys(order_key, 7)]), tf.int32)
        indices = tf.random.experimental.stateless_shuffle(indices, seed=seed)
    ds = tf.data.Dataset.from_tensor_slices(indices)
    return ds.map(lambda i: (read_image(paths[i]), labels[i]), num_parallel_calls=AUTOTUNE)


def _rgb(image):
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 3 and image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return tf.cast(image, tf.uint8)


def train_batches(
    source,
    *,
    seed,
    batch_size,
    image_size,
    resize_size,
    rotation=15.0,
    n=7,
    k=2,
    originals=1,
    destructed=1,
    start_epoch=0,
    bad_files="skip",
    rcm_in_pipeline=True,
):
    """The endless DCL training stream (see the module and `pairing` docstrings).

    Args:
        source: a FileSplit or TfdsSplit.
        seed: int, the run's seed.
        batch_size: int, examples per batch (images per batch is
            batch_size * (originals + destructed)).
        image_size, resize_size: crop side and resize side, pixels.
        rotation: float, max absolute rotation in degrees (0 disables).
        n, k: RCM grid and neighbourhood.
        originals, destructed: views per example (1:1 by default).
        start_epoch: int, first epoch of the stream (for resuming).
        bad_files: "skip" or "strict".
        rcm_in_pipeline: False leaves destruction and pairing to the device
            (`dcl_keras.models.region_confusion`): the stream then yields the
            augmented originals and their labels only.

    Returns:
        tf.data.Dataset of (images [M, H, W, 3] float32, targets dict), or of
        (images [B, H, W, 3] float32, labels [B] int32) when rcm_in_pipeline is False.
    """
    rcm.validate_rcm_args(n, k, image_size)
    pairing.validate_ratio(originals, destructed)
    if resize_size < image_size:
        raise ValueError(
            f"`resize_size` must be >= `image_size` ({image_size}) so the crop fits. "
            f"Received: resize_size={resize_size}"
        )
    if bad_files not in BAD_FILE_POLICIES:
        raise ValueError(f"`bad_files` must be one of {BAD_FILE_POLICIES}. Received: bad_files={bad_files!r}")

    def prepare(position, example, epoch):
        image, label = example
        key = rcm.combine_keys(seed, epoch, position)
        image = augment.train_augment(image, key, resize_size, image_size, rotation)
        if not rcm_in_pipeline:
            return image, label
        return pairing.make_views(image, label, key, n=n, k=k, originals=originals, destructed=destructed)

    def one_epoch(epoch):
        order_key = rcm.combine_keys(seed, epoch, -1)
        ds = examples(source, order_key).enumerate()
        ds = ds.map(lambda i, ex: prepare(i, ex, epoch), num_parallel_calls=AUTOTUNE)
        return ds

    ds = tf.data.Dataset.range(start_epoch, 1 << 40).flat_map(one_epoch)
    if bad_files == "skip":
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    if rcm_in_pipeline:
        ds = ds.map(pairing.flatten_views, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def eval_batches(source, *, batch_size, image_size, resize_size, n=None, bad_files="skip"):
    """Evaluation batches of originals: (images, labels), or DCL targets when `n` is given."""
    ds = examples(source)
    if bad_files == "skip":
        ds = ds.ignore_errors(log_warning=True)

    def prepare(image, label):
        image = augment.eval_preprocess(image, resize_size, image_size)
        if n is None:
            return image, label
        targets = {
            pairing.CLASSIFIER: label,
            pairing.DISCRIMINATOR: tf.constant(0, tf.int32),
            pairing.ALIGNMENT: rcm.alignment_target(rcm.identity_source(n)),
        }
        return image, targets

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
