"""Training on a cleaned set: examples left out (`data.exclude`), labels changed (`data.relabel`), audit folds.

    exclude.txt    one key a line; blank lines and '#' comments are ignored
    relabel.csv    `key,class_name` rows (an optional `key,class_name` header; '#' comments)

A key names one example the way its split's `keys()` does: for files, the
path relative to `data.root` (CUB-200-2011: to images/, as images.txt writes
it; FGVC-Aircraft: to data/images/), and an absolute path under the
dataset is taken as its key too; for records, the key it was written with
(its source's key, so one list serves a folder and its records); for TFDS,
the example's `tfds_id`. bin/audit writes both files.

Only the training split is curated, after the label studies
(`datasets.load_splits` says the order): the flips of `data.label_noise` are
drawn by position before anything is left out, so an exclude list never
changes which labels are flipped. `audit_folds` then cuts what is left into
seeded, stratified folds (`data.audit_folds`, `data.audit_fold`).
"""

import csv
import logging
import os
import posixpath

import numpy as np

from dcl_keras import contract
from dcl_keras.errors import UserError

SHOWN = 5  # Keys named in an error; the count says how many more.
RELABEL_HEADERS = ("class_name", "class", "label")  # The second column of an optional header row `key,...`.
KEY_HINT = (
    "Keys are as the training split's keys() gives them: paths relative to data.root (CUB-200-2011: to images/; "
    "FGVC-Aircraft: to data/images/), the source's keys in records, tfds_id for TFDS"
)


def _listing(items):
    """The first SHOWN items, comma-separated, and how many more there are."""
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _require_file(path, field, expected):
    if not os.path.isfile(os.path.expanduser(path)):
        raise UserError(f"{field}: no such file {path!r}; expected {expected}. Received: {field}={path!r}")
    return os.path.expanduser(path)


def read_keys(path, field="data.exclude"):
    """[(line number, key)] of a key list: one key a line, blank lines and lines starting with '#' ignored."""
    path = _require_file(path, field, "a text file of keys, one a line")
    with open(path, encoding="utf-8") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, 1)]
    return [(n, key) for n, key in lines if key and not key.startswith("#")]


def read_relabels(path, class_names, field="data.relabel"):
    """[(line number, key, label index)] of a `key,class_name` CSV; every class name must be in `class_names`."""
    path = _require_file(path, field, "a CSV file of `key,class_name` rows")
    index = {name: i for i, name in enumerate(class_names)}
    rows, unknown, first = [], [], True
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            header = first and len(cells) == 2 and cells[0].lower() == "key" and cells[1].lower() in RELABEL_HEADERS
            first = False
            if header:
                continue
            if len(cells) != 2 or not all(cells):
                raise UserError(
                    f"{field}={path!r}, line {reader.line_num}: expected `key,class_name` (quote a field that holds "
                    f"a comma). Received: {row!r}"
                )
            if cells[1] not in index:
                unknown.append(f"line {reader.line_num}: {cells[1]!r}")
            else:
                rows.append((reader.line_num, cells[0], index[cells[1]]))
    if unknown:
        raise UserError(
            f"{field}={path!r}: {len(unknown)} class name(s) are not among the {len(class_names)} class names "
            f"of the training split (e.g. {class_names[0]!r}): {_listing(unknown)}"
        )
    return rows


def _index(split):
    """{normalised key: [positions]} of a split (a key listed twice in a source names every copy)."""
    index = {}
    for position, key in enumerate(split.keys()):
        index.setdefault(posixpath.normpath(key), []).append(position)
    return index


def _candidates(entry, split, data_root):
    """The keys a listed entry may stand for: itself, and an absolute or data.root-relative path under key_root."""
    yield posixpath.normpath(entry)
    key_root = getattr(split, "key_root", None)
    if not key_root:
        return
    path = os.path.expanduser(entry)
    if not os.path.isabs(path) and data_root:
        path = os.path.join(os.path.abspath(os.path.expanduser(data_root)), path)
    if os.path.isabs(path):
        relative = os.path.relpath(os.path.normpath(path), key_root)
        if relative != ".." and not relative.startswith(".." + os.sep):
            yield posixpath.normpath(relative.replace(os.sep, "/"))


def _find(entry, split, index, data_root):
    return next((index[c] for c in _candidates(entry, split, data_root) if c in index), None)


def match_keys(split, entries, field, path, data_root="", others=()):
    """[positions in `split`] for each listed key; UserError naming the keys that match no training example.

    Keys found only in `others` (the validation and test splits) are logged
    and left there: curation changes the training split only.
    """
    index = _index(split)
    found = [_find(entry, split, index, data_root) for entry in entries]
    unmatched = [entry for entry, positions in zip(entries, found, strict=True) if positions is None]
    elsewhere = set()
    for other in others if unmatched else ():
        other_index = _index(other)
        elsewhere.update(e for e in unmatched if _find(e, other, other_index, data_root) is not None)
    if elsewhere:
        logging.warning(
            "%s=%s: %d key(s) name validation or test examples, which stay as they are (only the training split "
            "is curated): %s",
            field,
            path,
            len(elsewhere),
            _listing([repr(k) for k in unmatched if k in elsewhere]),
        )
    missing = [entry for entry in unmatched if entry not in elsewhere]
    if missing:
        example = split.keys()[0] if split.num_examples else "(the training split is empty)"
        raise UserError(
            f"{field}={path!r}: {len(missing)} key(s) match no training example of {split.name}: "
            f"{_listing([repr(k) for k in missing])}. {KEY_HINT}; e.g. {example!r}"
        )
    return [positions or [] for positions in found]


def exclude(split, path, data_root="", others=()):
    """(the split without the examples listed in the key file `path`, how many were left out)."""
    entries = [key for _, key in read_keys(path)]
    found = match_keys(split, entries, "data.exclude", path, data_root, others)
    dropped = {p for positions in found for p in positions}
    keep = [i for i in range(split.num_examples) if i not in dropped]
    name = f"{split.name} minus {len(dropped)} excluded ({os.path.basename(path)})"
    return split.subset(keep, name=name), len(dropped)


def relabel(split, path, data_root="", others=()):
    """(the split with the labels of the `key,class_name` file `path`, how many labels changed)."""
    rows = read_relabels(path, split.class_names)
    found = match_keys(split, [key for _, key, _ in rows], "data.relabel", path, data_root, others)
    chosen, lines = {}, {}
    for (line, key, label), positions in zip(rows, found, strict=True):
        for position in positions:
            if chosen.get(position, label) != label:
                raise UserError(
                    f"data.relabel={path!r}: key {key!r} is given two classes (lines {lines[position]} and {line}): "
                    f"expected one class per key. Received: {split.class_names[chosen[position]]!r} and "
                    f"{split.class_names[label]!r}"
                )
            chosen[position], lines[position] = label, line
    labels = split.labels
    changed = sum(labels[p] != label for p, label in chosen.items())
    name = f"{split.name}, {changed} relabelled ({os.path.basename(path)})"
    return split.relabel(list(chosen), list(chosen.values()), name=name), changed


def _check_every_class_kept(before, after, fields):
    sizes = np.bincount(np.asarray(before.labels, np.int64), minlength=before.num_classes)
    left = np.bincount(np.asarray(after.labels, np.int64), minlength=after.num_classes)
    emptied = [before.class_names[c] for c in np.flatnonzero((sizes > 0) & (left == 0))]
    if emptied:
        raise UserError(
            f"{' and '.join(fields)} leave no training example of {len(emptied)} class(es): "
            f"{_listing([repr(c) for c in emptied])}; expected at least one per class (the classifier has one "
            "output per class of the class list): keep one, or remove the class from the dataset. Received: "
            + ", ".join(f"{field}={value!r}" for field, value in fields.items())
        )


def curate(train, data, others=()):
    """The training split after `data.relabel`, then `data.exclude` (either may be ""); logs what changed."""
    before, fields = train, {}
    if data.relabel:
        train, changed = relabel(train, data.relabel, data.root, others)
        fields["data.relabel"] = data.relabel
        logging.info("data.relabel: %d training label(s) changed, as %s lists.", changed, data.relabel)
    if data.exclude:
        train, dropped = exclude(train, data.exclude, data.root, others)
        fields["data.exclude"] = data.exclude
        logging.info(
            "data.exclude: %d training example(s) left out, as %s lists; %d remain.",
            dropped,
            data.exclude,
            train.num_examples,
        )
    if fields:
        _check_every_class_kept(before, train, fields)
    return train


def audit_folds(split, count, seed):
    """`count` sorted int64 index arrays: a seeded, stratified partition of the split's examples.

    Each class's examples, in a seeded random order, are dealt round-robin
    to the folds, continuing where the previous class stopped, so every
    class is spread evenly (within one) and the folds' sizes differ by at
    most one. Every class needs at least `count` examples.
    """
    if not isinstance(count, (int, np.integer)) or count < 2:
        raise UserError(f"{split.name}: expected at least 2 audit folds. Received: data.audit_folds={count!r}")
    labels = np.asarray(split.labels, np.int64)
    sizes = np.bincount(labels, minlength=split.num_classes)
    small = [f"{split.class_names[c]!r} ({sizes[c]})" for c in np.flatnonzero((sizes > 0) & (sizes < count))]
    if small:
        raise UserError(
            f"{split.name}: data.audit_folds={count} needs at least {count} training examples in every class; "
            f"{len(small)} class(es) have fewer: {_listing(small)}. "
            f"Lower data.audit_folds. Received: data.audit_folds={count}"
        )
    rng = np.random.default_rng([seed, 0xA0D17])
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in range(split.num_classes)]
    order = np.concatenate([np.zeros(0, np.int64), *members])
    fold_of = np.empty(len(labels), np.int64)
    fold_of[order] = np.arange(len(order)) % count
    return [np.flatnonzero(fold_of == k) for k in range(count)]


def split_fold(split, count, fold, seed):
    """(training: every fold but `fold`, held out: fold `fold`) of `audit_folds(split, count, seed)`."""
    try:
        contract.validate_audit_folds(count, fold)
    except contract.ArgumentError as e:
        received = ", ".join(f"data.audit_{name}={value!r}" for name, value in e.received.items())
        raise UserError(f"data.audit_{e.argument}: expected {e.expected}. Received: {received}") from None
    folds = audit_folds(split, count, seed)
    rest = np.sort(np.concatenate([f for k, f in enumerate(folds) if k != fold]))
    return (
        split.subset(rest, name=f"{split.name}, audit fold {fold} of {count} held out (seed {seed})"),
        split.subset(folds[fold], name=f"{split.name}, audit fold {fold} of {count} (seed {seed})"),
    )
