"""Sharded TFRecord files of encoded images: written once from any source, streamed at any scale.

Layout of a records folder (`bin/make_records`):

    <dir>/manifest.json                    class names, and per split its shards, counts and left-out files
    <dir>/<split>-00000-of-00016.tfrecord  tf.Example records (FEATURES)

Each record holds the image file's bytes as they were (no re-encoding), its
label, its box (x, y, width, height in pixels; NaN when unknown) and where it
came from. Examples are written in a seeded random order, dealt round-robin to
the shards, so every shard mixes the classes and the shard sizes differ by at
most one.

Reading never lists the examples in Python: a split is its shard files and
counts; the stream interleaves the shards, and with several processes each
reads its own contiguous run of the records, equal shares whatever the shard
count (`encoded_dataset(process_index, process_count)`).
"""

import contextlib
import dataclasses
import functools
import json
import logging
import os

import numpy as np
import tensorflow as tf

from dcl_keras.data import keyed_hash
from dcl_keras.errors import UserError
from dcl_keras.workdir import atomic_path, write_json

MANIFEST = "manifest.json"
FORMAT = "dcl_keras.records"
VERSION = 1
IMAGE, LABEL, BOX, KEY = "image/encoded", "image/class/label", "image/bbox", "image/key"
FEATURES = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    BOX: tf.io.FixedLenFeature([4], tf.float32, default_value=[np.nan] * 4),
    KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
}
INTERLEAVE = 16  # Shards read at once.


class RecordsError(UserError):
    """A records folder that is missing, incomplete or of another format."""


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _feature(value):
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(value)))


def serialize(image_bytes, label, box=None, key=""):
    """One tf.Example record (see FEATURES)."""
    features = {IMAGE: _feature(image_bytes), LABEL: _feature(int(label)), KEY: _feature(key.encode())}
    if box is not None:
        features[BOX] = _feature([float(v) for v in box])
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _examples_in_order(split, seed):
    """(index, encoded bytes, label int64, key) of every example of a split, in the order to write.

    File splits (FileSplit) are read in a seeded random order; streamed ones
    (TfdsSplit, RecordsSplit) in their stored order (TFDS data is shuffled
    when prepared). Each record keeps the source's key (`split.keys()`), so a
    `data.exclude` list written against the source names the same examples
    in its records.
    """
    keys = tf.constant(split.keys(), tf.string)
    if hasattr(split, "paths"):
        order = np.random.default_rng(seed).permutation(split.num_examples)
        paths, labels = tf.constant(split.paths), tf.constant(np.asarray(split.labels, np.int64))
        ds = tf.data.Dataset.from_tensor_slices(order)
        return ds.map(lambda i: (i, tf.io.read_file(paths[i]), labels[i], keys[i]))
    ds = split.encoded_dataset().enumerate()
    return ds.map(lambda i, record: (i, record[0], tf.cast(record[1], tf.int64), keys[i]))


def write_split(split, out_dir, name, num_shards, seed=0):
    """Writes a split as `num_shards` shards in `out_dir`; returns its manifest entry.

    Each example is read and decoded once: the ones that cannot be read or
    decoded are left out and listed (by path, or by position for streamed
    sources). The shards are written to temporary names and renamed once
    complete.
    """
    from dcl_keras.data import pipeline

    if num_shards < 1:
        raise UserError(f"The number of shards must be >= 1. Received: num_shards={num_shards!r}")
    boxes = getattr(split, "boxes", None)
    checked = _examples_in_order(split, seed).map(
        lambda i, data, label, key: (i, data, label, key, tf.shape(pipeline.decode_image(data))),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    stream = (
        (int(i), data, int(label), key.decode())
        for i, data, label, key, _ in checked.ignore_errors().as_numpy_iterator()
    )
    seen = np.zeros(split.num_examples, bool)
    counts = np.zeros(split.num_classes, np.int64)
    files = [shard_name(name, s, num_shards) for s in range(num_shards)]
    os.makedirs(out_dir, exist_ok=True)
    sizes = [0] * num_shards
    written = 0
    # Interrupted (a file vanished between the check and the copy): no partial shard is left.
    with contextlib.ExitStack() as shards:
        tmps = [shards.enter_context(atomic_path(os.path.join(out_dir, f))) for f in files]
        writers = [tf.io.TFRecordWriter(tmp) for tmp in tmps]
        try:
            for index, data, label, key in stream:
                seen[index] = True
                box = None if boxes is None else boxes[index]
                shard = written % num_shards
                writers[shard].write(serialize(data, label, box, key))
                sizes[shard] += 1
                counts[label] += 1
                written += 1
        finally:
            for writer in writers:
                writer.close()
    missing = np.flatnonzero(~seen)
    left_out = [split.paths[i] for i in missing] if hasattr(split, "paths") else [str(i) for i in missing]
    if left_out:
        logging.warning(
            "%s: left out %d undecodable example(s):\n  %s", split.name, len(left_out), "\n  ".join(left_out)
        )
    return {
        "shards": [{"file": f, "examples": n} for f, n in zip(files, sizes, strict=True)],
        "examples": written,
        "seed": seed,
        "class_counts": counts.tolist(),
        "left_out": left_out,
        "written_from": split.name,
    }


def write_records(splits, out_dir, num_shards, seed=0):
    """Writes {split name: split} (sharing one class list) and the manifest last; returns the manifest."""
    names = {tuple(split.class_names) for split in splits.values()}
    if len(names) != 1:
        raise UserError(f"The splits to write do not share one class list. Received: splits={sorted(splits)}")
    manifest = {"format": FORMAT, "version": VERSION, "class_names": list(names.pop()), "splits": {}}
    for name, split in splits.items():
        shards = num_shards if name == "train" else max(1, min(num_shards, split.num_examples // 1000 or 1))
        manifest["splits"][name] = write_split(split, out_dir, name, shards, seed)
        logging.info("%s: %d examples in %d shard(s).", name, manifest["splits"][name]["examples"], shards)
    write_json(os.path.join(out_dir, MANIFEST), manifest, indent=1, sort_keys=False)
    return manifest


def read_manifest(root):
    path = os.path.join(os.path.expanduser(root), MANIFEST)
    if not os.path.isfile(path):
        raise RecordsError(f"Not a records folder: no {MANIFEST} in {root!r} (write one with bin/make_records)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise RecordsError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise RecordsError(f"{path}: expected format {FORMAT!r}. Received: format={found!r}")
    if manifest.get("version", 0) > VERSION:
        raise RecordsError(
            f"{path}: written by a newer dcl_keras (records version {manifest['version']}; this one reads up to "
            f"{VERSION}). Upgrade dcl_keras or rewrite the records."
        )
    return manifest


def splits_in(root):
    return sorted(read_manifest(root)["splits"])


@dataclasses.dataclass
class RecordsSplit:
    """One split of a records folder: its shard files and counts, never a list of its examples.

    Attributes:
        root: the records folder.
        split: the split's name in the manifest ("train", "val", "test").
        class_names: ordered class names.
        shards: list of (absolute file path, example count), in manifest order.
        name: a short description used in logs and errors.
        indices: optional sorted int64 record numbers kept (a carve-out or a
            sample); record numbers count through the shards in manifest order.
        class_counts: examples per class from the manifest (None once
            subset).
        seed: the seed that dealt the examples to the shards (None in
            manifests written before it was recorded).
        relabelled: optional int64 label per record number (-1: the stored
            label), set by `relabel`; the stream and `labels` give these.
    """

    root: str
    split: str
    class_names: list
    shards: list
    name: str = "records"
    indices: np.ndarray | None = None
    class_counts: list | None = None
    seed: int | None = None
    relabelled: np.ndarray | None = None

    @property
    def num_examples(self):
        return sum(n for _, n in self.shards) if self.indices is None else len(self.indices)

    @property
    def num_classes(self):
        return len(self.class_names)

    def _process_range(self, process_index, process_count):
        """(first, end, kept): process `process_index`'s record numbers [first, end) and how many of them it reads.

        The split's examples (the kept ones, after a carve-out) are cut into
        `process_count` contiguous runs of equal size (within one), whatever
        the shard count, so no process idles or drops examples for another's
        larger share; a run may start or end inside a shard.
        """
        total = sum(n for _, n in self.shards)
        if self.indices is None:
            first, end = total * process_index // process_count, total * (process_index + 1) // process_count
            return first, end, end - first
        kept = len(self.indices)
        a, b = kept * process_index // process_count, kept * (process_index + 1) // process_count
        if a == b:
            return 0, 0, 0
        return int(self.indices[a]), int(self.indices[b - 1]) + 1, b - a

    def process_examples(self, process_index, process_count):
        """Examples that process `process_index` of `process_count` reads (equal shares, within one)."""
        return self._process_range(process_index, process_count)[2]

    def encoded_dataset(self, order_key=None, process_index=0, process_count=1):
        """(encoded bytes, label int64) records, not decoded.

        With `process_count` > 1 only this process's contiguous run of record
        numbers (see `_process_range`): the pieces of the shards that hold it.
        `order_key` (uint32 tensor) shuffles the order of the pieces, which are
        then interleave-read, one record from each in turn, deterministically.
        """
        first, end, _ = self._process_range(process_index, process_count)
        pieces = []  # (file, record number of the file's first record, records to skip, records to read)
        offset = 0
        for path, n in self.shards:
            lo, hi = max(first, offset), min(end, offset + n)
            if lo < hi:
                pieces.append((path, offset, lo - offset, hi - lo))
            offset += n
        if not pieces:
            raise UserError(f"{self.name}: process {process_index} of {process_count} has no examples to read")
        files = tf.constant([p[0] for p in pieces])
        table = tf.constant(np.array([p[1:] for p in pieces], np.int64))
        order = tf.range(len(pieces))
        if order_key is not None:
            order = tf.random.experimental.stateless_shuffle(order, seed=keyed_hash.shuffle_seed(order_key))

        def read(i):
            start, skip, take = table[i, 0], table[i, 1], table[i, 2]
            return tf.data.TFRecordDataset(files[i]).skip(skip).take(take).enumerate(start + skip)

        ds = tf.data.Dataset.from_tensor_slices(order).interleave(
            read,
            cycle_length=min(len(pieces), INTERLEAVE),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if self.indices is not None:
            keep = np.zeros(sum(n for _, n in self.shards), bool)
            keep[self.indices] = True
            kept = tf.constant(keep)
            ds = ds.filter(lambda number, record: kept[number])
        if self.relabelled is not None:
            override = tf.constant(self.relabelled)
            return ds.map(
                lambda number, record: _with_label(_parse(number, record), override[number]),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return ds.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)

    def _numbers(self):
        """The record number of each example of the split, in order."""
        return np.arange(sum(n for _, n in self.shards)) if self.indices is None else self.indices

    @functools.cached_property
    def labels(self):
        """The int label of each example in record-number order, a list as a FileSplit's: read once, no image decoded."""
        labels = _stored_labels_and_keys(_shard_signature(self.shards))[0]
        if self.relabelled is not None:
            labels = np.where(self.relabelled >= 0, self.relabelled, labels)
        return labels[self._numbers()].tolist()

    def keys(self):
        """The `key` each example was written with (`write_split`: its source's `keys()`), in split order.

        Records written before keys were the source's keys hold absolute
        file paths (file sources) or stored positions (streamed sources).
        Read with the labels in one pass over the shards (only those two
        features parsed), once per process while the shard files are
        unchanged.
        """
        return _stored_labels_and_keys(_shard_signature(self.shards))[1][self._numbers()].tolist()

    def subset(self, indices, name=None):
        """The records at `indices` (positions within this split, in record-number order)."""
        positions = np.arange(self.num_examples) if self.indices is None else self.indices
        chosen = np.unique(positions[np.asarray(indices, np.int64)])
        return dataclasses.replace(self, indices=chosen, name=name or self.name, class_counts=None)

    def relabel(self, positions, labels, name=None):
        """The split with the examples at `positions` (within this split) labelled `labels` (class indices)."""
        numbers = self._numbers()[np.asarray(positions, np.int64)]
        override = np.full(sum(n for _, n in self.shards), -1, np.int64)
        if self.relabelled is not None:
            override[:] = self.relabelled
        override[numbers] = np.asarray(labels, np.int64)
        return dataclasses.replace(self, relabelled=override, name=name or self.name, class_counts=None)


def _parse(number, record):
    example = tf.io.parse_single_example(record, {IMAGE: FEATURES[IMAGE], LABEL: FEATURES[LABEL]})
    return example[IMAGE], example[LABEL]


def _with_label(example, override):
    image, label = example
    return image, tf.where(override >= 0, override, label)


def _shard_signature(shards):
    """(file, examples, size, modification time) of each shard: what the cache of labels and keys is keyed by."""
    return tuple((path, n, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path, n in shards)


@functools.lru_cache(maxsize=4)
def _stored_labels_and_keys(signature):
    """(labels int64 [R], keys str object array [R]) of every record of the shards, in record-number order."""
    features = {LABEL: FEATURES[LABEL], KEY: FEATURES[KEY]}
    ds = tf.data.Dataset.from_tensor_slices([path for path, *_ in signature]).flat_map(tf.data.TFRecordDataset)
    ds = ds.batch(4096).map(lambda batch: tf.io.parse_example(batch, features), num_parallel_calls=tf.data.AUTOTUNE)
    labels, keys = [np.zeros(0, np.int64)], [np.zeros(0, object)]
    for parsed in ds.as_numpy_iterator():
        labels.append(parsed[LABEL])
        keys.append(np.asarray([k.decode() for k in parsed[KEY]], object))
    return np.concatenate(labels), np.concatenate(keys)


def records(root, split):
    """The RecordsSplit `split` of the records folder `root`, checked against its manifest."""
    root = os.path.abspath(os.path.expanduser(root))
    manifest = read_manifest(root)
    if split not in manifest["splits"]:
        raise RecordsError(
            f"{os.path.join(root, MANIFEST)} has splits {sorted(manifest['splits'])}. Received: split={split!r}"
        )
    entry = manifest["splits"][split]
    shards = [(os.path.join(root, s["file"]), int(s["examples"])) for s in entry["shards"]]
    missing = [f for f, _ in shards if not os.path.isfile(f)]
    if missing:
        raise RecordsError(f"{root}: {len(missing)} shard file(s) of split {split!r} are missing: {missing[:5]}")
    return RecordsSplit(
        root,
        split,
        list(manifest["class_names"]),
        shards,
        name=f"records:{root} [{split}]",
        class_counts=entry.get("class_counts"),
        seed=entry.get("seed"),
    )
