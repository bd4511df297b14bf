"""Reading a split: files or records -> decoded examples, in a seeded order, per process; evaluation batches.

`positioned_examples` numbers each example by its place in the (shuffled)
order before anything is decoded, which is what keys the training stream's
augmentation (`stream`); `process_share` and `is_file_sharded` give each of
several processes its share of it. `eval_batches` batches the originals with
the evaluation preprocessing.

Bad files: `check_images` decodes every listed file once before training and
reports undecodable ones all at once (policy "skip": logged and dropped;
"strict": raised). During training a file that still fails to decode is
dropped under "skip" (`stream`), so one corrupt file never stops an epoch.
"""

import logging

import numpy as np
import tensorflow as tf

from dcl_keras import contract
from dcl_keras.contract import BAD_FILE_POLICIES
from dcl_keras.data import augment, keyed_hash, rcm
from dcl_keras.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE


JPEG_SCALES = (1, 2, 4, 8)


def decode_image(data, *, crop_bottom=0, resize_size=0, reducing_gap=0.0):
    """Decodes JPEG/PNG/BMP/GIF/WebP bytes to uint8 [H, W, 3] (gray, RGBA, CMYK, 16-bit converted).

    JPEGs use libjpeg's accurate integer IDCT, which gives Pillow's pixels
    exactly (TF's default fast IDCT is about one grey level off). GIFs give
    their first frame.

    Args:
        data: tf.string scalar, the encoded file.
        crop_bottom: int, rows removed from the bottom after decoding, in
            full-resolution pixels (FGVC-Aircraft's copyright banner).
        resize_size, reducing_gap: with `reducing_gap` >= 1, a JPEG is decoded
            at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's "draft"
            mode) as long as both sides stay at least `reducing_gap` x
            `resize_size`, which the later antialiased resize then reduces
            further: several times cheaper for large photos, within about one
            grey level of the full decode at a gap of 2
            (benchmarks/README.md). 0 decodes every pixel.
    """
    if reducing_gap and reducing_gap < 1.0:
        raise ValueError(f"`reducing_gap` must be 0 (off) or >= 1. Received: reducing_gap={reducing_gap!r}")
    data = tf.convert_to_tensor(data, tf.string)
    if reducing_gap and resize_size:
        image, scale = tf.cond(
            tf.io.is_jpeg(data),
            lambda: _decode_jpeg_draft(data, crop_bottom, resize_size * reducing_gap),
            lambda: (_decode_any(data), tf.constant(1, tf.int32)),
        )
    else:
        image, scale = _decode_any(data), 1
    if crop_bottom:
        # Rows of the decoded image, which holds every `scale`-th row of the file.
        rows = tf.shape(image)[0] - tf.cast(tf.round(crop_bottom / tf.cast(scale, tf.float32)), tf.int32)
        image = image[: tf.maximum(rows, 1)]
    return tf.ensure_shape(image, [None, None, 3])


def _decode_any(data):
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False),
    )


def _decode_jpeg_draft(data, crop_bottom, min_side):
    """(image, scale): the JPEG decoded at the smallest DCT scale 1/s whose sides stay >= min_side."""
    shape = tf.io.extract_jpeg_shape(data)
    short = tf.cast(tf.minimum(shape[0] - crop_bottom, shape[1]), tf.float32)
    index = tf.reduce_sum(tf.cast(short / tf.constant(JPEG_SCALES[1:], tf.float32) >= min_side, tf.int32))
    branches = [
        lambda s=s: tf.io.decode_jpeg(data, channels=3, ratio=s, dct_method="INTEGER_ACCURATE") for s in JPEG_SCALES
    ]
    return tf.switch_case(index, branches), tf.gather(JPEG_SCALES, index)


def read_image(path, **decode_options):
    """Reads and decodes an image file (see `decode_image` for the options)."""
    return decode_image(tf.io.read_file(path), **decode_options)


def _keyed_shuffle(ds, buffer, key):
    """`ds.shuffle` seeded by the uint32 tensor `key` alone, whatever `tf.random.set_seed` holds.

    TF mixes the graph's global seed into op seeds, and with a global seed of
    0 (what `keras.utils.set_random_seed(0)` sets) its seed check evaluates a
    tensor seed as a Python bool and fails while the stream is traced. The
    graph seed is set aside while the op is made, so the order depends on the
    key only.
    """
    graph = tf.compat.v1.get_default_graph()
    saved = graph.seed
    graph.seed = None
    try:
        return ds.shuffle(buffer, seed=tf.cast(key, tf.int64), reshuffle_each_iteration=False)
    finally:
        graph.seed = saved


class UndecodableImagesError(UserError):
    """Files of a split that cannot be decoded, all named."""


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


def any_decodable(source):
    """Whether at least one example of the split can be read and decoded now (stops at the first)."""
    ds = examples(source).ignore_errors().take(1)
    return any(True for _ in ds)


def examples(source, order_key=None, *, resize_size=0, reducing_gap=0.0, shuffle_buffer=4096):
    """The (image uint8 [H, W, 3], label int32) stream of a split, optionally shuffled.

    Files are decoded here, after shuffling (see `decode_image` for
    `resize_size` and `reducing_gap`); a decoding error raises (callers drop
    it under the skip policy). `order_key` is a uint32 tensor; None keeps the
    listed order. File splits shuffle their index list; TFDS splits shuffle
    their encoded records through a buffer of `shuffle_buffer` records, so
    memory stays flat in the dataset size.
    """
    ds = positioned_examples(
        source, order_key, resize_size=resize_size, reducing_gap=reducing_gap, shuffle_buffer=shuffle_buffer
    )
    return ds.map(lambda position, image, label: (image, label))


@tf.autograph.experimental.do_not_convert  # Plain Python on Python values; traced inside flat_map as is.
def positioned_examples(
    source,
    order_key=None,
    *,
    resize_size=0,
    reducing_gap=0.0,
    shuffle_buffer=4096,
    start=0,
    passes=1,
    keep=None,
    process=(0, 1),
):
    """(position int64, image, label): `examples` with each example's place in the (shuffled) order.

    Positions are numbered before decoding, so a file that fails to decode
    (and is dropped) never shifts the position, and so the key, of the
    examples after it. `passes` repeats the order (positions go on counting);
    the first `start` positions are skipped before anything is read.

    Several processes: `keep(position)` (a bool tensor) selects this process's
    positions before anything is decoded; or, for sources that shard by file
    (records), `process=(index, count)` reads only this process's files, and
    positions are then global, `local position x count + index`, so no two
    processes share a key (`start` counts local positions).
    """
    decode_options = dict(
        crop_bottom=getattr(source, "crop_bottom", 0), resize_size=resize_size, reducing_gap=reducing_gap
    )
    index, count = process
    if count > 1 and not is_file_sharded(source):
        raise ValueError(f"{source.name}: only record sources shard by file. Received: process={process!r}")
    if hasattr(source, "encoded_dataset"):
        if is_file_sharded(source):
            ds = source.encoded_dataset(order_key, index, count)
        else:
            ds = source.encoded_dataset()
        if order_key is not None:
            ds = _keyed_shuffle(ds, min(source.num_examples, shuffle_buffer), order_key)
        ds = ds.repeat(passes).enumerate().skip(start)
        if count > 1:
            ds = ds.map(lambda i, record: (i * count + index, record))
        if keep is not None:
            ds = ds.filter(lambda i, record: keep(i))
        return ds.map(
            lambda i, record: (i, decode_image(record[0], **decode_options), tf.cast(record[1], tf.int32)),
            num_parallel_calls=AUTOTUNE,
        )
    paths = tf.constant(source.paths)
    labels = tf.constant(source.labels, tf.int32)
    return positioned_indices(source, order_key, start=start, passes=passes, keep=keep).map(
        lambda position, i: (position, read_image(paths[i], **decode_options), labels[i]),
        num_parallel_calls=AUTOTUNE,
    )


def positioned_indices(source, order_key=None, *, start=0, passes=1, keep=None):
    """(position int64, index int32) of a file split: `positioned_examples`' order, before any file is read."""
    indices = tf.range(source.num_examples)
    if order_key is not None:
        indices = tf.random.experimental.stateless_shuffle(indices, seed=keyed_hash.shuffle_seed(order_key))
    ds = tf.data.Dataset.from_tensor_slices(indices).repeat(passes).enumerate().skip(start)
    if keep is not None:
        ds = ds.filter(lambda position, i: keep(position))
    return ds


def is_file_sharded(source):
    """Whether several processes split `source` by file (records) rather than by example position."""
    return getattr(source, "shards", None) is not None


def process_share(batch_size, process_index, process_count, field="input.batch_size"):
    """`keep(position)` for process `process_index` of `process_count`: its slice of every global batch.

    Global batch b holds positions [b x batch_size, (b + 1) x batch_size);
    process p builds the p-th of `process_count` equal slices of it, which is
    the slice Keras gives that process of a global batch (rebatch, then
    shard), so the processes' batches together are the single-process batch.
    """
    check_process_batch(batch_size, process_index, process_count, field)
    local = batch_size // process_count
    return lambda position: (position % batch_size) // local == process_index


def check_process_batch(batch_size, process_index, process_count, field="input.batch_size"):
    if not 0 <= process_index < process_count:
        raise ValueError(f"Expected 0 <= process_index < process_count. Received: {process_index}, {process_count}")
    if batch_size % process_count:
        raise UserError(
            f"The global batch must split evenly over the processes: {field}={batch_size} is not a "
            f"multiple of num_processes={process_count}."
        )


def eval_batches(
    source, spec, *, batch_size, n=None, bad_files="skip", order_key=None, process_index=0, process_count=1
):
    """Evaluation batches of originals: (images, labels), or DCL targets when `n` is given.

    `spec` (a `specs.EvalSpec`) gives the sizes and the resize
    (`augment.eval_preprocess`), as the run trained.

    `order_key` (uint32) shuffles the split's order, e.g. for a class-balanced
    sample of a class-ordered folder; None keeps the listed order. With
    `process_count` > 1 (validation inside a multi-process run) each process
    decodes its slice of every global batch, and only whole global batches
    are read, so every process yields the same number of batches (up to
    `batch_size` - 1 examples are left out; a file that fails to decode there
    leaves its process a batch short, so check the validation files first, as
    `data.check_files` does for file splits and bin/make_records for records).
    """
    keep = None
    if process_count > 1:
        keep = process_share(batch_size, process_index, process_count, "eval.batch_size")
        if source.num_examples < batch_size:
            raise UserError(
                f"{source.name}: {source.num_examples} example(s) do not fill one global batch of "
                f"eval.batch_size={batch_size} over {process_count} processes."
            )
    ds = positioned_examples(source, order_key, keep=keep)
    if process_count > 1:
        ds = ds.take(source.num_examples // batch_size * (batch_size // process_count))
    ds = ds.map(lambda position, image, label: (image, label))
    if bad_files == "skip":
        ds = ds.ignore_errors(log_warning=True)

    def prepare(image, label):
        image = augment.eval_preprocess(image, spec.resize_size, spec.image_size, spec.resampling)
        if n is None:
            return image, label
        targets = {
            contract.CLASSIFIER: label,
            contract.DISCRIMINATOR: tf.constant(contract.ORIGINAL, tf.int32),
            contract.ALIGNMENT: rcm.alignment_target(rcm.identity_source(n)),
        }
        return image, targets

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size // process_count, drop_remainder=process_count > 1).prefetch(AUTOTUNE)
