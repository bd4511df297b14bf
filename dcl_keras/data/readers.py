"""Readers of image files on disk: every layout gives a `FileSplit` of paths, labels and class names.

Layouts:

* `image_folder`: `root/<class>/*.{jpg,jpeg,png,bmp}`, with `train/` and `test/`
  split folders, or one folder split by a seeded fraction.
* `annotation_lists`: the reference code's `<relative path> <label>` lists.
* `cub200`: CUB-200-2011 in its official extracted layout (boxes kept).
* `fgvc_aircraft`: FGVC-Aircraft in its official layout (TFDS has no builder).

Problems found while listing (missing files, labels out of range, empty
classes) are collected and raised together as one `DatasetError` that names
every path and line, before any training starts. The other sources give the
same (image, label) elements: TFDS builders (`tfds_reader`) and sharded
records (`records`).
"""

import dataclasses
import logging
import os

import numpy as np

from dcl_keras.contract import AIRCRAFT_LEVELS
from dcl_keras.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")


class DatasetError(UserError):
    """Problems found while listing a dataset, all reported at once."""

    def __init__(self, what, problems):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{what}: {len(self.problems)} problem(s):\n  {shown}{more}")


@dataclasses.dataclass
class FileSplit:
    """Image files with integer labels in [0, len(class_names)).

    Attributes:
        paths: list of absolute file paths.
        labels: list of int labels.
        class_names: ordered class names; label i is class_names[i].
        boxes: optional float32 [len(paths), 4] boxes (x, y, width, height) in
            pixels of the image file, for localization work; not used by DCL
            training.
        name: a short description used in logs and errors.
        crop_bottom: rows removed from the bottom of every image after
            decoding (FGVC-Aircraft's copyright banner), 0 for none.
        key_root: the folder that `keys()` are relative to (see there);
            None: the keys are the paths.
    """

    paths: list
    labels: list
    class_names: list
    boxes: np.ndarray | None = None
    name: str = "dataset"
    crop_bottom: int = 0
    key_root: str | None = None

    @property
    def num_examples(self):
        return len(self.paths)

    @property
    def num_classes(self):
        return len(self.class_names)

    def subset(self, indices, name=None):
        indices = list(indices)
        return dataclasses.replace(
            self,
            paths=[self.paths[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            boxes=None if self.boxes is None else self.boxes[indices],
            name=name or self.name,
        )

    def keys(self):
        """One str per example, in split order: its path relative to `key_root`, as the source names it.

        What `data.exclude` and `data.relabel` list. Per layout (`key_root`):

        * image folder and the demo: relative to the dataset root, split
          folder included (`train/Black_footed_Albatross/x.jpg`, or
          `Black_footed_Albatross/x.jpg` in a folder without split folders);
        * annotation lists: the path as the list file writes it (`imgs/x.jpg`);
        * CUB-200-2011: relative to `images/`, as images.txt writes it
          (`001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg`);
        * FGVC-Aircraft: relative to `data/images/` (`0034309.jpg`).

        A path outside `key_root` (an absolute path in an annotation list), or
        every path when `key_root` is None, is its own key.
        """
        if self.key_root is None:
            return list(self.paths)
        prefix = os.path.join(self.key_root, "")
        return [p[len(prefix) :].replace(os.sep, "/") if p.startswith(prefix) else p for p in self.paths]

    def relabel(self, positions, labels, name=None):
        """The split with the examples at `positions` labelled `labels` (class indices)."""
        new = list(self.labels)
        for position, label in zip(positions, labels, strict=True):
            new[position] = int(label)
        return dataclasses.replace(self, labels=new, name=name or self.name)


def _require_dir(path, what):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: expected a directory at {path!r}")


def _require_file(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: expected a file at {path!r}")


def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _list_class_folders(root):
    """(class_names, {class: [files]}) for root/<class>/**/<image>, problems listed."""
    _require_dir(root, "Image folder")
    class_names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not class_names:
        raise DatasetError(f"Image folder {root!r}", [f"{root}: no class sub-folders (expected root/<class>/*.jpg)"])
    files, problems, ignored, kinds = {}, [], 0, {}
    for name in class_names:
        folder = os.path.join(root, name)
        images = []
        for current, subdirs, entries in sorted(os.walk(folder)):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            found = [e for e in sorted(entries) if is_image_file(e)]
            images += [os.path.join(current, e) for e in found]
            ignored += len(entries) - len(found)
            for e in found:
                kind = os.path.splitext(e)[1].lower().lstrip(".").replace("jpeg", "jpg")
                kinds[kind] = kinds.get(kind, 0) + 1
        if not images:
            problems.append(f"{folder}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        files[name] = sorted(images)
    logging.info(
        "%s: %d image file(s) (%s); ignored %d other file(s).",
        root,
        sum(kinds.values()),
        ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())) or "none",
        ignored,
    )
    if problems:
        raise DatasetError(f"Image folder {root!r}", problems)
    return class_names, files


def image_folder(root, split="train", test_fraction=0.2, seed=0):
    """Reads `root/<class>/*` images.

    If `root/train` and `root/test` exist they are the splits (classes from
    `train/`, and an optional `root/val` is the "val" split); otherwise every
    class folder is split, class by class, with a seeded `test_fraction`
    going to "test".

    Args:
        root: str, dataset directory.
        split: "train", "val" (split folders only) or "test".
        test_fraction: float in (0, 1), used when there are no split folders.
        seed: int, seed of that split.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"`split` must be 'train', 'val' or 'test'. Received: split={split!r}")
    root = os.path.abspath(os.path.expanduser(root))
    _require_dir(root, "Image folder")
    split_folders = os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test"))
    if split == "val":
        if not split_folders:
            raise FileNotFoundError(f"Image folder {root!r}: a 'val' split needs train/, val/ and test/ folders")
        _require_dir(os.path.join(root, "val"), "Validation folder of the image folder")
    if split_folders:
        class_names, _ = _list_class_folders(os.path.join(root, "train"))
        split_names, files = _list_class_folders(os.path.join(root, split))
        unknown = sorted(set(split_names) - set(class_names))
        if unknown:
            raise DatasetError(
                f"Image folder {root!r}",
                [f"{os.path.join(root, split, u)}: class not present in train/" for u in unknown],
            )
        paths, labels = [], []
        for label, name in enumerate(class_names):
            for path in files.get(name, []):
                paths.append(path)
                labels.append(label)
        return FileSplit(paths, labels, class_names, name=f"{root} [{split}]", key_root=root)
    if not 0.0 < test_fraction < 1.0:
        raise UserError(
            f"`test_fraction` must be in (0, 1) for an unsplit image folder. Received: test_fraction={test_fraction!r}"
        )
    class_names, files = _list_class_folders(root)
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for label, name in enumerate(class_names):
        members = files[name]
        order = rng.permutation(len(members))
        n_test = int(round(len(members) * test_fraction))
        chosen = order[:n_test] if split == "test" else order[n_test:]
        for i in sorted(chosen):
            paths.append(members[i])
            labels.append(label)
    return FileSplit(paths, labels, class_names, name=f"{root} [{split}, seed {seed}]", key_root=root)


def _read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [(i + 1, line.strip()) for i, line in enumerate(f) if line.strip()]


def _detect_label_base(labels, where):
    if min(labels) != 1:
        return 0
    logging.warning(
        "%s: labels run from 1 to %d with no 0; treating them as 1-based and shifting them "
        "down by one (set the label base to 0 to keep them).",
        where,
        max(labels),
    )
    return 1


def detect_label_base(root, list_files):
    """0 or 1: the label base of several annotation lists read together (1 when no 0 appears)."""
    labels = []
    for list_file in list_files:
        path = list_file if os.path.isabs(list_file) else os.path.join(os.path.expanduser(root), list_file)
        _require_file(path, "Annotation list")
        for _, line in _read_lines(path):
            try:
                labels.append(int(line.split()[-1]))
            except ValueError:
                continue
    return _detect_label_base(labels, ", ".join(list_files)) if labels else 0


def annotation_lists(root, list_file, num_classes=None, label_base=None, class_names=None):
    """Reads a reference-code annotation list of `<relative path> <label>` lines.

    Args:
        root: str, the directory that paths are relative to.
        list_file: str, path of the list (absolute, or relative to `root`).
        num_classes: int or None; inferred from the labels when None.
        label_base: 0, 1 or None. None detects it: labels that run 1..C (no 0)
            are shifted down by one, with a log line saying so. The reference
            code's shipped lists start at 1.
        class_names: optional list of names; defaults to "class_<i>".
    """
    root = os.path.abspath(os.path.expanduser(root))
    _require_dir(root, "Annotation root")
    list_path = list_file if os.path.isabs(list_file) else os.path.join(root, list_file)
    _require_file(list_path, "Annotation list")
    if label_base not in (None, 0, 1):
        raise UserError(f"`label_base` must be 0, 1 or None. Received: label_base={label_base!r}")
    entries, problems = [], []
    for line_no, line in _read_lines(list_path):
        parts = line.rsplit(None, 1)  # The label is the last field; paths may hold spaces.
        rel, label_text = (parts[0], parts[1]) if len(parts) == 2 else ("", line)
        try:
            label = int(label_text)
        except ValueError:
            label = None
        if not rel or label is None:
            problems.append(f"{list_path}:{line_no}: expected '<relative path> <int label>', got {line!r}")
            continue
        entries.append((line_no, rel.strip(), label))
    if not entries and not problems:
        problems.append(f"{list_path}: no entries")
    if label_base is None and entries:
        label_base = _detect_label_base([e[2] for e in entries], list_path)
    if num_classes is None:
        num_classes = len(class_names) if class_names else max([e[2] for e in entries] or [0]) - (label_base or 0) + 1
    paths, labels = [], []
    for line_no, rel, label in entries:
        label -= label_base or 0
        path = os.path.join(root, rel)
        if not 0 <= label < num_classes:
            problems.append(
                f"{list_path}:{line_no}: label {label + (label_base or 0)} is outside "
                f"[{label_base or 0}, {num_classes + (label_base or 0)}) for {rel!r}"
            )
        elif not os.path.isfile(path):
            problems.append(f"{list_path}:{line_no}: file does not exist: {path}")
        else:
            paths.append(path)
            labels.append(label)
    if problems:
        raise DatasetError(f"Annotation list {list_path!r}", problems)
    names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(names)} names but there are {num_classes} classes. "
            f"Received: class_names of length {len(names)}"
        )
    return FileSplit(paths, labels, names, name=list_path, key_root=root)


def _id_table(path, what):
    _require_file(path, what)
    table, problems = {}, []
    for line_no, line in _read_lines(path):
        key, _, value = line.partition(" ")
        if not value:
            problems.append(f"{path}:{line_no}: expected '<id> <value>', got {line!r}")
        table[key] = value.strip()
    if problems:
        raise DatasetError(what, problems)
    return table


def cub200(root, split="train"):
    """CUB-200-2011 in its official layout (the folder that holds images.txt).

    Returns a FileSplit with labels 0..199, class names from classes.txt and
    the bounding boxes of bounding_boxes.txt (kept for localization work).
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    root = os.path.abspath(os.path.expanduser(root))
    _require_dir(root, "CUB-200-2011 root (the folder with images.txt)")
    images = _id_table(os.path.join(root, "images.txt"), "CUB images.txt")
    labels = _id_table(os.path.join(root, "image_class_labels.txt"), "CUB image_class_labels.txt")
    is_train = _id_table(os.path.join(root, "train_test_split.txt"), "CUB train_test_split.txt")
    classes = _id_table(os.path.join(root, "classes.txt"), "CUB classes.txt")
    boxes_path = os.path.join(root, "bounding_boxes.txt")
    boxes = _id_table(boxes_path, "CUB bounding_boxes.txt") if os.path.isfile(boxes_path) else {}
    class_ids = sorted(classes, key=int)
    class_names = [classes[c] for c in class_ids]
    want = "1" if split == "train" else "0"
    paths, out_labels, out_boxes, problems = [], [], [], []
    for image_id in sorted(images, key=int):
        if is_train.get(image_id) != want:
            continue
        path = os.path.join(root, "images", images[image_id])
        label = int(labels.get(image_id, "0")) - 1
        if image_id not in labels or not 0 <= label < len(class_names):
            problems.append(f"image_class_labels.txt: image id {image_id}: missing or bad label")
        elif not os.path.isfile(path):
            problems.append(f"images.txt: image id {image_id}: file does not exist: {path}")
        else:
            paths.append(path)
            out_labels.append(label)
            box = boxes.get(image_id)
            out_boxes.append([float(v) for v in box.split()] if box else [np.nan] * 4)
    if problems:
        raise DatasetError(f"CUB-200-2011 at {root!r}", problems)
    return FileSplit(
        paths,
        out_labels,
        class_names,
        np.asarray(out_boxes, np.float32).reshape(-1, 4),
        name=f"CUB-200-2011 [{split}]",
        key_root=os.path.join(root, "images"),
    )


AIRCRAFT_SPLITS = ("train", "val", "trainval", "test")
AIRCRAFT_CLASS_LISTS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
AIRCRAFT_BANNER_ROWS = 20  # The copyright banner at the bottom of every FGVC-Aircraft image.


def fgvc_aircraft(root, split="trainval", level="variant", remove_banner=True):
    """FGVC-Aircraft in its official layout (the folder that holds data/).

    Reads `data/images_<level>_<split>.txt` ("<image id> <class name>"), the
    class list of the level (`variants.txt`, `families.txt` or
    `manufacturers.txt`) and the boxes of `data/images_box.txt` ("<image id>
    xmin ymin xmax ymax", 1-based inclusive pixels), kept as (x, y, width,
    height) like CUB's.

    Args:
        root: str, the dataset folder (e.g. fgvc-aircraft-2013b).
        split: one of AIRCRAFT_SPLITS.
        level: one of AIRCRAFT_LEVELS.
        remove_banner: drop the 20-pixel copyright banner at the bottom of
            every image after decoding, as the dataset's README asks.
    """
    if split not in AIRCRAFT_SPLITS:
        raise ValueError(f"`split` must be one of {AIRCRAFT_SPLITS}. Received: split={split!r}")
    if level not in AIRCRAFT_LEVELS:
        raise ValueError(f"`level` must be one of {AIRCRAFT_LEVELS}. Received: level={level!r}")
    root = os.path.abspath(os.path.expanduser(root))
    data = os.path.join(root, "data")
    _require_dir(data, "FGVC-Aircraft data/ folder")
    names_path = os.path.join(data, AIRCRAFT_CLASS_LISTS[level])
    _require_file(names_path, f"FGVC-Aircraft class list of level {level!r}")
    class_names = [line for _, line in _read_lines(names_path)]
    index = {name: i for i, name in enumerate(class_names)}
    list_path = os.path.join(data, f"images_{level}_{split}.txt")
    _require_file(list_path, "FGVC-Aircraft split list")
    boxes_path = os.path.join(data, "images_box.txt")
    boxes = _id_table(boxes_path, "FGVC-Aircraft images_box.txt") if os.path.isfile(boxes_path) else {}
    paths, labels, out_boxes, problems = [], [], [], []
    for line_no, line in _read_lines(list_path):
        image_id, _, name = line.partition(" ")
        path = os.path.join(data, "images", f"{image_id}.jpg")
        if name not in index:
            problems.append(f"{list_path}:{line_no}: class {name!r} is not in {names_path}")
        elif not os.path.isfile(path):
            problems.append(f"{list_path}:{line_no}: file does not exist: {path}")
        else:
            paths.append(path)
            labels.append(index[name])
            out_boxes.append(_aircraft_box(boxes.get(image_id), image_id, boxes_path, problems))
    if problems:
        raise DatasetError(f"FGVC-Aircraft at {root!r}", problems)
    return FileSplit(
        paths,
        labels,
        class_names,
        np.asarray(out_boxes, np.float32).reshape(-1, 4),
        name=f"FGVC-Aircraft [{split}, {level}]",
        crop_bottom=AIRCRAFT_BANNER_ROWS if remove_banner else 0,
        key_root=os.path.join(data, "images"),
    )


def _aircraft_box(text, image_id, boxes_path, problems):
    """(x, y, width, height) from "xmin ymin xmax ymax" (1-based, inclusive); NaNs when absent."""
    if text is None:
        return [np.nan] * 4
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in text.split())
    except ValueError:
        problems.append(f"{boxes_path}: image {image_id}: expected 'xmin ymin xmax ymax', got {text!r}")
        return [np.nan] * 4
    return [xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0]
