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

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from dcl_keras import contract
from dcl_keras.contract import BAD_FILE_POLICIES, DEVICE_IMAGES, DEVICE_KEYS
from dcl_keras.data import augment, keyed_hash, pairing, rcm, specs
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


class DecodedImages:
    """A file split's images decoded once and held in memory: one uint8 [P, 3] buffer of their pixels."""

    def __init__(self, images):
        counts = [image.shape[0] * image.shape[1] for image in images]
        # Rows of the buffer where each image starts; int64 only where int32 cannot address them all.
        dtype = tf.int64 if sum(counts) >= 2**31 else tf.int32
        self.offsets = tf.constant(np.concatenate([[0], np.cumsum(counts)]), dtype)
        self.shapes = tf.constant(np.array([image.shape[:2] for image in images], np.int32).reshape(-1, 2))
        pixels = np.concatenate([image.reshape(-1, 3) for image in images]) if images else np.zeros([0, 3], np.uint8)
        self.pixels = tf.constant(pixels, tf.uint8)
        self.num_bytes = int(pixels.nbytes)

    def train_augment(self, indices, keys, resize_size, image_size, rotation):
        """uint8 [B, image_size, image_size, 3]: images `indices` augmented with `keys`, in one op.

        Pixel for pixel what `augment.train_augment` (pillow resampling) makes
        of each image (`augment.train_augment_batch`); no image is copied out
        of the buffer first.
        """
        shapes = tf.gather(self.shapes, indices)
        return augment.train_augment_batch(
            self.pixels,
            tf.gather(self.offsets, indices),
            shapes[:, 0],
            shapes[:, 1],
            keys,
            resize_size,
            image_size,
            rotation,
        )


def decode_in_memory(source, *, resize_size, reducing_gap=0.0, limit_mb=0):
    """The training images of a file split, decoded once and held in memory, or None.

    Each image is what the training stream with the pillow resampling would
    otherwise make from its file every epoch: decoded (`decode_image`, with
    the split's `crop_bottom` and the draft options), then its axes longer
    than `resize_size` shrunk by Pillow's antialiased resize, the
    deterministic first step of that resampling. The stream's pixels are the
    same either way; only reading and decoding are saved, which is most of
    the input's work for small images.

    None (the stream reads the files) when the images could need more than
    `limit_mb` MiB (each at most `resize_size`^2 x 3 bytes), when `limit_mb`
    is 0, when the source is not a file split, or when a file fails to decode
    (the stream then drops it as usual).
    """
    if not limit_mb or not hasattr(source, "paths") or hasattr(source, "encoded_dataset"):
        return None
    bound = source.num_examples * resize_size * resize_size * 3
    if bound > limit_mb * 2**20:
        logging.info(
            "%s: reading the training files every epoch: their decoded images could take %.0f MiB, more than "
            "input.cache_mb=%s.",
            source.name,
            bound / 2**20,
            limit_mb,
        )
        return None
    paths = tf.constant(source.paths)
    options = dict(crop_bottom=getattr(source, "crop_bottom", 0), resize_size=resize_size, reducing_gap=reducing_gap)
    ds = tf.data.Dataset.range(source.num_examples).map(
        lambda i: (i, augment.shrink(read_image(paths[i], **options), resize_size)),
        num_parallel_calls=AUTOTUNE,
        deterministic=False,
    )
    images = [None] * source.num_examples
    for index, image in ds.ignore_errors().as_numpy_iterator():
        images[index] = image
    failed = sum(image is None for image in images)
    if failed:
        logging.info("%s: reading the training files every epoch: %d file(s) failed to decode.", source.name, failed)
        return None
    decoded = DecodedImages(images)
    logging.info(
        "%s: %d training images decoded once and held in memory (%.1f MiB; input.cache_mb=%s).",
        source.name,
        source.num_examples,
        decoded.num_bytes / 2**20,
        limit_mb,
    )
    return decoded


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


EMPTY_EPOCH_MESSAGE = "Training stream: no example of epoch"


def any_decodable(source):
    """Whether at least one example of the split can be read and decoded now (stops at the first)."""
    ds = examples(source).ignore_errors().take(1)
    return any(True for _ in ds)


def _fail_if_empty(batches, epoch):
    """`batches`, raising InvalidArgumentError at its end if it held no batch at all.

    Without this, an endless stream whose every file has become unreadable
    (deleted after the start, a lost mount) drops every element under the
    skip policy and waits forever. A zero sentinel batch marks each epoch's
    end; a scan counts the real batches before it.
    """
    spec = batches.element_spec
    sentinel = tf.data.Dataset.from_tensors(tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec))
    flagged = batches.map(lambda *x: (True, x)).concatenate(sentinel.map(lambda *x: (False, x)))

    def count(seen, item):
        real, x = item
        check = tf.debugging.Assert(
            real | (seen > 0), [EMPTY_EPOCH_MESSAGE, epoch, "could be decoded: every file failed."]
        )
        with tf.control_dependencies([check]):
            return tf.where(real, seen + 1, 0), item

    checked = flagged.scan(tf.constant(0, tf.int64), count)
    return checked.filter(lambda real, x: real).map(lambda real, x: x)


def train_batches(source, spec, *, start_step=0, process_index=0, process_count=1):
    """The endless DCL training stream (see the module and `pairing` docstrings).

    Each epoch is batched on its own: it yields `steps_per_epoch(source,
    batch_size)` batches (its last `num_examples % batch_size` examples, a
    different few each epoch, are dropped), so an epoch of the stream is an
    epoch of Keras `fit` whatever the split size, and a run resumed at any
    step sees exactly the batches an uninterrupted run would have seen.

        stream = train_batches(split, TrainSpec.from_config(config), start_step=step)
        stream = train_batches(split, TrainSpec(seed=0, batch_size=2, image_size=32, resize_size=40, n=4, k=2))

    Args:
        source: a FileSplit, TfdsSplit or RecordsSplit.
        spec: `specs.TrainSpec`, the stream's content.
        start_step: int, batches already consumed (for resuming): the stream
            starts in epoch `start_step // steps_per_epoch`, that many
            batches into it.
        process_index, process_count: with several processes (JAX data
            parallel across hosts), this process builds only its
            `batch_size / process_count` examples of every global batch,
            decoding nothing else. For file and TFDS splits they are the
            slice Keras would give it of the single-process batch (same
            examples, same augmentation); record splits give each process its
            own contiguous run of the records instead (equal shares; no
            process reads another's), so the batches depend on the process
            count.

    Returns:
        tf.data.Dataset of (images [M, H, W, 3], targets dict), or of
        ({"images": [B, H, W, 3] float32, "rcm_keys": [B] uint32}, labels [B]
        int32) when rcm_in_pipeline is False. Images are in [0, 255]:
        uint8 for the pillow resampling of uint8 images (whole numbers,
        so nothing is lost; 4x less to batch and to copy to the device, where
        the model casts them to float32), float32 otherwise.
    """
    plan = plan_stream(source, spec, start_step, process_index, process_count)
    ds = tf.data.Dataset.range(plan.first_epoch, 1 << 40).flat_map(lambda epoch: epoch_batches(plan, epoch))
    if spec.rcm_in_pipeline:
        ds = ds.map(pairing.flatten_views, num_parallel_calls=AUTOTUNE)
    # One thread inside each op: the parallel maps already use the cores, and ops that split themselves
    # over threads fight the model's own ops for them (demo fit at 0.5x of model-only on 2 cores without it).
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return ds.prefetch(AUTOTUNE).with_options(options)


@dataclasses.dataclass(frozen=True)
class StreamPlan:
    """One process's training stream: its spec, where it starts, and its share of every batch.

    Attributes:
        source, spec: the split and the `specs.TrainSpec`.
        per_epoch: int, batches in an epoch (`steps_per_epoch`).
        first_epoch, skip: the epoch the stream starts in, and its batches
            already consumed.
        local_batch: int, examples this process builds of every batch.
        skipped: int, positions of the first epoch skipped before reading
            (this process's own positions for a source sharded by file).
        share: the keywords of `positioned_examples` that pick this
            process's examples (`keep` or `process`).
        decoded, decoded_labels: the images held in memory
            (`decode_in_memory`) and their int32 labels, or None.
    """

    source: object
    spec: specs.TrainSpec
    per_epoch: int
    first_epoch: int
    skip: int
    local_batch: int
    skipped: int
    share: dict
    decoded: object = None
    decoded_labels: object = None


def plan_stream(source, spec, start_step=0, process_index=0, process_count=1):
    """The StreamPlan of process `process_index` of `process_count`, resumed at `start_step`."""
    check_process_batch(spec.batch_size, process_index, process_count)
    per_epoch = steps_per_epoch(source, spec.batch_size, process_count)
    first_epoch, skip = divmod(int(start_step), per_epoch)
    local_batch = spec.batch_size // process_count
    decoded = None
    if spec.resampling == "pillow":
        decoded = decode_in_memory(
            source, resize_size=spec.resize_size, reducing_gap=spec.reducing_gap, limit_mb=spec.cache_mb
        )
    if process_count > 1 and is_file_sharded(source):
        share, skipped = dict(process=(process_index, process_count)), skip * local_batch
    else:
        keep = process_share(spec.batch_size, process_index, process_count) if process_count > 1 else None
        share, skipped = dict(keep=keep), skip * spec.batch_size
    return StreamPlan(
        source,
        spec,
        per_epoch,
        first_epoch,
        skip,
        local_batch,
        skipped,
        share,
        decoded,
        None if decoded is None else tf.constant(source.labels, tf.int32),
    )


def epoch_batches(plan, epoch):
    """The batches of epoch `epoch` (int64 tensor) of the plan's stream, before the views are flattened.

    A resumed epoch skips the examples already consumed before reading them
    (exact when none of them failed to decode).
    """
    order_key = keyed_hash.combine_keys(plan.spec.seed, epoch, contract.ORDER_POSITION)
    start = tf.where(epoch == plan.first_epoch, tf.constant(plan.skipped, tf.int64), 0)
    batches = tf.where(epoch == plan.first_epoch, tf.constant(plan.per_epoch - plan.skip, tf.int64), plan.per_epoch)
    if plan.decoded is not None:
        return held_epoch(plan, epoch, order_key, start).take(batches)
    return _fail_if_empty(read_epoch(plan, epoch, order_key, start).take(batches), epoch)


def held_epoch(plan, epoch, order_key, start):
    """An epoch of the images held in memory, from position `start`: nothing is decoded, so nothing fails.

    A batch's positions first, then the whole batch is augmented in one op
    and destructed in a few (the same batches as `read_epoch`'s, a fraction
    of the per-op cost).
    """
    ds = positioned_indices(plan.source, order_key, start=start, **plan.share)
    ds = ds.batch(plan.local_batch, drop_remainder=True)
    return ds.map(
        lambda positions, indices: prepare_held_batch(plan, epoch, positions, indices), num_parallel_calls=AUTOTUNE
    )


def read_epoch(plan, epoch, order_key, start):
    """An epoch read from the files or records, from position `start`, endless past its end until taken.

    A second pass over the epoch's order fills the batches of files that
    failed to decode (dropped under the skip policy), so an epoch always
    yields `per_epoch` batches and stays a Keras epoch; it is read only when
    needed.
    """
    spec = plan.spec
    ds = positioned_examples(
        plan.source,
        order_key,
        resize_size=spec.resize_size,
        reducing_gap=spec.reducing_gap,
        shuffle_buffer=spec.shuffle_buffer,
        start=start,
        passes=2,
        **plan.share,
    )
    ds = ds.map(lambda i, image, label: prepare_example(spec, epoch, i, image, label), num_parallel_calls=AUTOTUNE)
    if spec.bad_files == "skip":
        ds = ds.ignore_errors(log_warning=True)
    return ds.batch(plan.local_batch, drop_remainder=True, num_parallel_calls=AUTOTUNE)


def prepare_example(spec, epoch, position, image, label):
    """The views of one decoded example at `position` of epoch `epoch`, augmented with its key."""
    key = keyed_hash.combine_keys(spec.seed, epoch, position)
    image = augment.train_augment(
        image, key, spec.resize_size, spec.image_size, spec.rotation, spec.resampling, keep_uint8=True
    )
    return train_views(spec, image, label, key)


def prepare_held_batch(plan, epoch, positions, indices):
    """The views of a batch of held images (`indices`) at `positions` of epoch `epoch`."""
    spec = plan.spec
    keys = keyed_hash.combine_keys(spec.seed, epoch, positions)
    images = plan.decoded.train_augment(indices, keys, spec.resize_size, spec.image_size, spec.rotation)
    return train_views(spec, images, tf.gather(plan.decoded_labels, indices), keys)


def train_views(spec, images, labels, keys):
    """The pipeline's RCM views and DCL targets (`pairing.make_views`), or the device's inputs.

    With `spec.rcm_in_pipeline` False, destruction and pairing are left to the
    device: the augmented originals as float32 with their uint32 keys.
    """
    if not spec.rcm_in_pipeline:
        return {DEVICE_IMAGES: tf.cast(images, tf.float32), DEVICE_KEYS: keys}, labels
    views = dict(n=spec.n, k=spec.k, originals=spec.originals, destructed=spec.destructed)
    return pairing.make_views(images, labels, keys, **views)


def steps_per_epoch(source, batch_size, process_count=1):
    """Batches in one epoch of the training stream: whole batches only.

    Record splits read by several processes (each an equal contiguous run of
    the records, within one example) take the epoch of the process with the
    fewest examples, so all stay in step and none repeats an example.
    """
    steps = source.num_examples // batch_size
    if process_count > 1 and is_file_sharded(source):
        check_process_batch(batch_size, 0, process_count, field="batch_size")
        local = batch_size // process_count
        shares = [source.process_examples(p, process_count) for p in range(process_count)]
        steps = min(shares) // local
        if steps < 1:
            p = int(np.argmin(shares))
            raise UserError(
                f"{source.name}: process {p} of {process_count} reads {shares[p]} of the "
                f"{source.num_examples} training example(s), fewer than its {local} of every global batch. "
                f"Received: batch_size={batch_size}, num_processes={process_count}"
            )
    if steps < 1:
        raise UserError(
            f"{source.name}: {source.num_examples} training example(s) do not fill one batch. "
            f"Received: batch_size={batch_size}"
        )
    return steps


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
