"""TFDS builders by name: encoded (image, label) records of a prepared dataset, failing fast when it is not.

    split = tfds("caltech_birds2011", "train", data_dir="/data/tfds")

A `TfdsSplit` holds the encoded records, decoded only after shuffling
(`pipeline.positioned_examples`), so memory stays flat in the dataset size.
"""

import dataclasses
import functools

import numpy as np

from dcl_keras.errors import UserError

TFDS_DATASETS = (
    "caltech_birds2011",
    "cars196",
    "stanford_dogs",
    "oxford_flowers102",
    "oxford_iiit_pet",
    "food101",
)


@dataclasses.dataclass
class TfdsSplit:
    """A split of a prepared TFDS dataset: encoded (image, label) records and class names.

    Attributes:
        builder: the prepared TFDS builder.
        split: the TFDS split string.
        class_names: ordered class names.
        num_examples: int, records in this split (after `indices`).
        name: a short description used in logs and errors.
        indices: optional sorted int64 positions of the records kept from the
            TFDS split (a carved-out validation set or its complement); None
            keeps all.
        labels (read-only): the int label of each example, a list as on every
            split type, read on first use.
        relabelled: optional int64 label per stored position (-1: the stored
            label), set by `relabel`; the stream and `labels` give these.
    """

    builder: object
    split: str
    class_names: list
    num_examples: int
    name: str = "tfds"
    indices: np.ndarray | None = None
    relabelled: np.ndarray | None = None

    @property
    def num_classes(self):
        return len(self.class_names)

    def _records(self, with_id=False):
        """(encoded image bytes, label[, tfds_id]) of every record of the TFDS split, in stored order."""
        import tensorflow_datasets as tfds_lib

        image_key, label_key = self.builder.info.supervised_keys[:2]
        read = dict(split=self.split, shuffle_files=False, decoders={image_key: tfds_lib.decode.SkipDecoding()})
        if with_id:
            ds = self.builder.as_dataset(**read, read_config=tfds_lib.ReadConfig(add_tfds_id=True))
            return ds.map(lambda ex: (ex[image_key], ex[label_key], ex["tfds_id"]))
        return self.builder.as_dataset(**read).map(lambda ex: (ex[image_key], ex[label_key]))

    def _positions(self):
        """The stored position of each example of the split, in order."""
        return np.arange(self.num_examples) if self.indices is None else self.indices

    def encoded_dataset(self):
        """(encoded image bytes, label) records in stored order, not decoded (decoding comes after shuffling)."""
        import tensorflow as tf

        ds = self._records()
        if self.indices is None and self.relabelled is None:
            return ds
        ds = ds.enumerate()
        if self.indices is not None:
            keep = np.zeros(int(self.indices.max(initial=-1)) + 1, bool)
            keep[self.indices] = True
            table = tf.constant(keep)
            ds = ds.take(len(keep)).filter(lambda i, ex: table[i])
        if self.relabelled is not None:
            override = tf.constant(self.relabelled)
            ds = ds.map(lambda i, ex: (i, (ex[0], _relabelled(ex[1], override[i]))))
        return ds.map(lambda i, ex: ex)

    @functools.cached_property
    def labels(self):
        """The int label of each example, a list as a FileSplit's: read once, without decoding any image."""
        labels = np.fromiter((int(label) for _, label in self._records().as_numpy_iterator()), np.int64)
        if self.relabelled is not None:
            labels[: len(self.relabelled)] = np.where(
                self.relabelled >= 0, self.relabelled, labels[: len(self.relabelled)]
            )
        return labels[self._positions()].tolist()

    def keys(self):
        """The TFDS example id (`tfds_id`) of each example, in split order: read once per builder and split.

        The id names the record's file and its place there
        (`caltech_birds2011-train.tfrecord-00000-of-00004__17`), so it is the
        same whichever slice of the split ("train[:90%]") reads it.
        """
        return _stored_ids(self)[self._positions()].tolist()

    def subset(self, indices, name=None):
        """The records at `indices` (positions within this split)."""
        chosen = np.sort(self._positions()[np.asarray(list(indices), np.int64)])
        return dataclasses.replace(self, indices=chosen, num_examples=len(chosen), name=name or self.name)

    def relabel(self, positions, labels, name=None):
        """The split with the examples at `positions` (within this split) labelled `labels` (class indices)."""
        stored = self._positions()
        before = np.zeros(0, np.int64) if self.relabelled is None else self.relabelled
        override = np.full(max(int(stored.max(initial=-1)) + 1, len(before)), -1, np.int64)
        override[: len(before)] = before
        override[stored[np.asarray(positions, np.int64)]] = np.asarray(labels, np.int64)
        return dataclasses.replace(self, relabelled=override, name=name or self.name)


def _relabelled(label, override):
    import tensorflow as tf

    return tf.where(override >= 0, tf.cast(override, label.dtype), label)


_IDS = {}  # (data_dir, split) -> tfds ids of every stored record: read once per process.


def _stored_ids(split):
    """The tfds_id of every record of the TFDS split `split.split`, in stored order (an object array)."""
    cache_key = (str(split.builder.data_dir), split.split)
    if cache_key not in _IDS:
        ids = [tfds_id.decode() for _, _, tfds_id in split._records(with_id=True).as_numpy_iterator()]
        _IDS[cache_key] = np.asarray(ids, object)
    return _IDS[cache_key]


def tfds(name, split="train", data_dir=None, manual_dir=None, prepare=False):
    """A TFDS dataset by name, failing within seconds when it is not prepared.

    `tfds.load` of a missing dataset retries downloads for minutes when offline;
    this checks for prepared data first. With `prepare=True` it builds the
    dataset (downloading, or reading archives you placed in `manual_dir`).

    Args:
        name: builder name, e.g. "caltech_birds2011" or "cars196".
        split: TFDS split string ("train", "test", "train[:90%]", ...).
        data_dir: where prepared TFDS data lives (TFDS default when None).
        manual_dir: where manually downloaded archives are, for builders that
            need them.
        prepare: build the dataset if it is missing.
    """
    import tensorflow_datasets as tfds_lib

    try:
        builder = tfds_lib.builder(name, data_dir=data_dir)
    except tfds_lib.core.registered.DatasetNotFoundError as e:
        raise UserError(
            f"Unknown TFDS dataset name. Known fine-grained ones: {', '.join(TFDS_DATASETS)}. Received: name={name!r}"
        ) from e
    if not builder.is_prepared():
        if not prepare:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}. On a machine with "
                f"network, run `tfds build {name} --data_dir=<data_dir>` and copy the data_dir here, "
                f"or place the archives in a manual_dir and set data.tfds_prepare=True "
                f"(manual_dir={manual_dir!r}, data_dir={data_dir!r})."
            )
        download_config = tfds_lib.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=download_config)
    keys = builder.info.supervised_keys
    if not keys or len(keys) < 2:
        raise UserError(
            f"TFDS dataset {name!r} has no (image, label) supervised keys to classify with. Received: "
            f"supervised_keys={keys!r}"
        )
    label = builder.info.features[keys[1]]
    if builder.info.splits:
        try:
            num_examples = builder.info.splits[split].num_examples
        except (KeyError, ValueError) as e:
            raise UserError(
                f"TFDS dataset {name!r} has splits {sorted(builder.info.splits)}. Received: split={split!r}"
            ) from e
    else:  # Builders without recorded split sizes (e.g. under tfds.testing.mock_data): count.
        num_examples = int(builder.as_dataset(split=split).reduce(0, lambda n, _: n + 1))
    return TfdsSplit(builder, split, list(label.names), num_examples, name=f"tfds:{name} [{split}]")
