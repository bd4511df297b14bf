"""The DCL training stream: epochs of augmented, destructed and paired batches, exact to the step.

The stream is a sequence of epochs. Epoch `e` visits the examples in an order
drawn from (seed, e), and example number `i` of that epoch is augmented and
destructed with the key (seed, e, i). The same seed thus gives the same
batches, and resuming at epoch `e` rebuilds exactly the stream an
uninterrupted run would have seen.

    stream = train_batches(split, TrainSpec.from_config(config), start_step=step)

Named steps, from the whole to one example: `plan_stream` places a process in
the stream (`StreamPlan`); `epoch_batches` makes an epoch, from the files
(`read_epoch`, one example at a time: `prepare_example`) or from the images
held in memory (`held_epoch`, a whole batch at a time: `prepare_held_batch`,
`DecodedImages`); `train_views` makes the RCM views and DCL targets. Reading,
decoding and the processes' shares are `pipeline`'s.

A file that fails to decode during training is dropped under the "skip"
policy, so one corrupt file never stops an epoch; an epoch with no readable
file at all stops the stream (`EMPTY_EPOCH_MESSAGE`).
"""

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from dcl_keras import contract
from dcl_keras.contract import DEVICE_IMAGES, DEVICE_KEYS
from dcl_keras.data import augment, keyed_hash, pairing, pipeline, specs
from dcl_keras.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE

EMPTY_EPOCH_MESSAGE = "Training stream: no example of epoch"


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
        share: the keywords of `pipeline.positioned_examples` that pick this
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
    pipeline.check_process_batch(spec.batch_size, process_index, process_count)
    per_epoch = steps_per_epoch(source, spec.batch_size, process_count)
    first_epoch, skip = divmod(int(start_step), per_epoch)
    local_batch = spec.batch_size // process_count
    decoded = None
    if spec.resampling == "pillow":
        decoded = decode_in_memory(
            source, resize_size=spec.resize_size, reducing_gap=spec.reducing_gap, limit_mb=spec.cache_mb
        )
    if process_count > 1 and pipeline.is_file_sharded(source):
        share, skipped = dict(process=(process_index, process_count)), skip * local_batch
    else:
        keep = pipeline.process_share(spec.batch_size, process_index, process_count) if process_count > 1 else None
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
    ds = pipeline.positioned_indices(plan.source, order_key, start=start, **plan.share)
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
    ds = pipeline.positioned_examples(
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
    if process_count > 1 and pipeline.is_file_sharded(source):
        pipeline.check_process_batch(batch_size, 0, process_count, field="batch_size")
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
    otherwise make from its file every epoch: decoded
    (`pipeline.decode_image`, with the split's `crop_bottom` and the draft
    options), then its axes longer than `resize_size` shrunk by Pillow's
    antialiased resize, the deterministic first step of that resampling. The stream's pixels are the
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
        lambda i: (i, augment.shrink(pipeline.read_image(paths[i], **options), resize_size)),
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
