"""From the `data` section of a config to the train, validation and test splits of any source."""

import collections
import dataclasses
import logging
import os

import numpy as np

from dcl_keras.config import is_label_study, validate_label_study
from dcl_keras.data import curation, demo, pipeline, readers, records, tfds_reader
from dcl_keras.errors import UserError

Splits = collections.namedtuple("Splits", ["train", "val", "test"])


def carve_validation(split, fraction, seed):
    """(train, val): a seeded, stratified share `fraction` of `split` moved out for validation.

    round(fraction x examples) go to validation, shared among the classes in
    proportion to their sizes (largest remainders get the rounding, ties
    broken by the seed), so even a small fraction of many small classes gives
    a validation split. Every class keeps at least one training example.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"`val_fraction` must be in (0, 1). Received: val_fraction={fraction!r}")
    labels = np.asarray(split.labels)
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    quota = sizes * fraction
    counts = np.floor(quota).astype(int)
    spare = int(round(len(labels) * fraction)) - counts.sum()
    order = np.lexsort((rng.random(len(classes)), -(quota - counts)))  # Largest remainder first.
    counts[order[:spare]] += 1
    counts = np.minimum(counts, sizes - 1)
    val = []
    for label, count in zip(classes, counts, strict=True):
        val.extend(rng.permutation(np.flatnonzero(labels == label))[:count].tolist())
    if not val:
        raise UserError(
            f"{split.name}: data.val_fraction={fraction:g} of {len(labels)} examples leaves no validation "
            f"example. Received: val_fraction={fraction!r}"
        )
    val = np.sort(np.asarray(val, np.int64))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return (
        split.subset(train, name=f"{split.name} minus {fraction:g} for validation"),
        split.subset(val, name=f"{split.name}, {fraction:g} carved out for validation (seed {seed})"),
    )


def flip_labels(split, share, seed):
    """A FileSplit with round(share x examples) labels, chosen at random, moved to a random other class (seeded).

    Symmetric label noise for robustness studies; the examples are unchanged.
    """
    if split.num_classes < 2:
        raise UserError(f"{split.name}: label noise needs at least 2 classes. Received: {split.num_classes} class")
    rng = np.random.default_rng([seed, 0x401CE])
    labels = np.asarray(split.labels, np.int64)
    chosen = rng.choice(len(labels), int(round(share * len(labels))), replace=False)
    shift = rng.integers(1, split.num_classes, len(chosen))  # Never 0: always another class.
    labels[chosen] = (labels[chosen] + shift) % split.num_classes
    name = f"{split.name}, {share:g} of the labels flipped (seed {seed})"
    return dataclasses.replace(split, labels=labels.tolist(), name=name)


def long_tail(split, ratio, seed):
    """A FileSplit subsampled to an exponential class-size profile: class c keeps n_max x ratio^(-c / (C - 1)).

    n_max is the smallest class's size in `split`, so every class can supply
    its quota; class 0 keeps the most, the last class n_max / ratio (at least
    one). The examples kept are a seeded random choice within each class.
    """
    rng = np.random.default_rng([seed, 0x7A11])
    labels = np.asarray(split.labels, np.int64)
    sizes = np.bincount(labels, minlength=split.num_classes)
    if not sizes.any():
        raise UserError(f"{split.name}: no training examples to subsample. Received: data.long_tail_ratio={ratio!r}")
    top = int(sizes[sizes > 0].min())
    classes = split.num_classes
    quota = np.maximum(1, np.floor(top * ratio ** (-np.arange(classes) / max(classes - 1, 1)))).astype(int)
    keep = []
    for label in range(classes):
        members = np.flatnonzero(labels == label)
        keep.extend(rng.permutation(members)[: quota[label]].tolist())
    name = f"{split.name}, long-tailed x{ratio:g} (seed {seed})"
    return split.subset(sorted(keep), name=name)


def _source_splits(data):
    """(train, own validation split or None, test) as the source defines them."""
    source = data.source
    if source == "demo":
        root = demo.dataset_root(data.demo)
        logging.info("Demo dataset at %s", root)
        train, test = (demo.with_boxes(readers.image_folder(root, split), root) for split in ("train", "test"))
        return train, None, test
    if source == "image_folder":
        seed = data.split_seed
        root = os.path.expanduser(data.root)
        own_val = all(os.path.isdir(os.path.join(root, d)) for d in ("train", "val", "test"))
        return (
            readers.image_folder(data.root, "train", data.test_fraction, seed),
            readers.image_folder(data.root, "val") if own_val else None,
            readers.image_folder(data.root, "test", data.test_fraction, seed),
        )
    if source == "annotation_lists":
        base = data.label_base
        if base is None:
            base = readers.detect_label_base(data.root, [data.train_list, data.test_list])
        train = readers.annotation_lists(data.root, data.train_list, data.num_classes, base)
        return train, None, readers.annotation_lists(data.root, data.test_list, train.num_classes, base)
    if source == "cub200":
        return readers.cub200(data.root, "train"), None, readers.cub200(data.root, "test")
    if source == "fgvc_aircraft":
        level, banner = data.aircraft_level, data.aircraft_remove_banner
        train = readers.fgvc_aircraft(data.root, data.aircraft_train_split, level, banner)
        own_val = data.aircraft_train_split == "train"
        val = readers.fgvc_aircraft(data.root, "val", level, banner) if own_val else None
        return train, val, readers.fgvc_aircraft(data.root, "test", level, banner)
    if source == "tfds":
        kwargs = dict(
            data_dir=data.tfds_data_dir or None, manual_dir=data.tfds_manual_dir or None, prepare=data.tfds_prepare
        )
        train = tfds_reader.tfds(data.tfds_name, data.tfds_train_split, **kwargs)
        val = tfds_reader.tfds(data.tfds_name, data.tfds_val_split, **kwargs) if data.tfds_val_split else None
        return train, val, tfds_reader.tfds(data.tfds_name, data.tfds_test_split, **kwargs)
    if source == "records":
        own = records.splits_in(data.root)
        val = records.records(data.root, "val") if "val" in own else None
        return records.records(data.root, "train"), val, records.records(data.root, "test")
    raise ValueError(f"Unknown data source. Received: data.source={source!r}")


def _training_pool(data):
    """(train, val, test): the source's splits, the validation carve-out, the label studies, then the curation.

    The order is fixed: label noise flips examples chosen by position before
    anything is relabelled or left out, so `data.exclude` never changes which
    labels are flipped, and the audit folds are cut from what is left.
    """
    validate_label_study(data)
    train, val, test = _source_splits(data)
    if val is None and data.val_fraction:
        train, val = carve_validation(train, data.val_fraction, data.split_seed)
    elif val is not None:
        logging.info("Validation split: %s (the source's own).", val.name)
    if is_label_study(data):
        if data.long_tail_ratio > 1:
            train = long_tail(train, data.long_tail_ratio, data.split_seed)
        if data.label_noise:  # Training labels only: validation and test stay clean.
            train = flip_labels(train, data.label_noise, data.split_seed)
    train = curation.curate(train, data, others=[split for split in (val, test) if split is not None])
    return train, val, test


def load_splits(data):
    """Splits(train, val, test) (FileSplit, TfdsSplit or RecordsSplit) for a config's `data` section.

    The validation split is the source's own where it has one (FGVC-Aircraft
    `val` when training on `train`, an image folder's `val/`, TFDS
    `data.tfds_val_split`, a records folder's `val`), otherwise a seeded, stratified carve-out of
    `data.val_fraction` of the training split, otherwise None. The test split
    is only read by the final evaluation. The training split then goes
    through the label studies (`data.long_tail_ratio`, `data.label_noise`),
    `data.relabel`, `data.exclude` and, with `data.audit_folds`, loses the
    held-out fold `data.audit_fold` (`dcl_keras.data.curation`). File splits
    are checked once for undecodable images under `data.bad_files` when
    `data.check_files` is set.
    """
    train, val, test = _training_pool(data)
    if data.audit_folds:
        train, held_out = curation.split_fold(train, data.audit_folds, data.audit_fold, data.split_seed)
        logging.info(
            "Audit: training on %d of %d folds (%d examples); fold %d (%d examples) held out.",
            data.audit_folds - 1,
            data.audit_folds,
            train.num_examples,
            data.audit_fold,
            held_out.num_examples,
        )
    if isinstance(train, readers.FileSplit) and data.check_files:
        train, test = pipeline.check_images(train, data.bad_files), pipeline.check_images(test, data.bad_files)
        val = None if val is None else pipeline.check_images(val, data.bad_files)
    logging.info(
        "Data: %d training, %d validation and %d test examples, %d classes (%s).",
        train.num_examples,
        val.num_examples if val else 0,
        test.num_examples,
        train.num_classes,
        train.name,
    )
    return Splits(train, val, test)


def load_heldout_fold(data):
    """The fold `data.audit_fold` that `load_splits` holds out of training, a split of the training split's type.

    Its labels are the ones training would have seen for those examples
    (after label noise and `data.relabel`); checked for undecodable files as
    the training split is.
    """
    if not data.audit_folds:
        raise UserError(
            "A held-out audit fold needs data.audit_folds >= 2 (the folds) and data.audit_fold (the one held out). "
            f"Received: data.audit_folds={data.audit_folds!r}"
        )
    train, _, _ = _training_pool(data)
    _, held_out = curation.split_fold(train, data.audit_folds, data.audit_fold, data.split_seed)
    if isinstance(held_out, readers.FileSplit) and data.check_files:
        held_out = pipeline.check_images(held_out, data.bad_files)
    logging.info("Audit: held-out fold %s, %d examples.", held_out.name, held_out.num_examples)
    return held_out


def spread(split, count):
    """`count` examples spread evenly over the split (every class of a class-ordered list, not the first few)."""
    indices = np.unique(np.linspace(0, split.num_examples - 1, min(count, split.num_examples)).astype(int))
    return split.subset(indices.tolist())


def spread_crops(split, spec, count, batch_size=64):
    """(images float32 [<= count, S, S, 3], labels int32): `spread` examples through the evaluation preprocessing.

    `spec` is a `specs.EvalSpec`; examples that fail to decode are left out.
    """
    images, labels = [], []
    for batch_images, batch_labels in pipeline.eval_batches(spread(split, count), spec, batch_size=batch_size):
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    if not images:
        raise UserError(f"{split.name}: none of the {count} example(s) chosen could be decoded")
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]
