"""The label studies (flip_labels, long_tail) and load_splits: their order and the curation (exclude, relabel, audit
folds) on every source."""

import os

import numpy as np
import pytest

from dcl_keras.config import base_config
from dcl_keras.data import datasets, readers, records, tfds_reader
from dcl_keras.errors import UserError

from conftest import write_image

CLASSES = ("a", "b", "c")


def _folder(root, per_class=6, test_per_class=2):
    """An image folder (train/ and test/) of tiny images, every one different."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            write_image(os.path.join(root, "train", name, f"{i}.jpg"), size=(8, 8), seed=100 * c + i)
        for i in range(test_per_class):
            write_image(os.path.join(root, "test", name, f"{i}.jpg"), size=(8, 8), seed=9000 + 10 * c + i)
    return str(root)


def _data(source, root, **fields):
    data = base_config().data
    data.source, data.root, data.check_files = source, str(root), False
    for field, value in fields.items():
        data[field] = value
    return data


def _write(path, text):
    path.write_text(text)
    return str(path)


def _pairs(split):
    return list(zip(split.keys(), split.labels, strict=True))


def test_without_curation_the_training_split_is_what_it_was(tmp_path):
    root = _folder(tmp_path / "folder")
    data = _data("image_folder", root, val_fraction=0.25, label_noise=0.3, split_seed=3)
    train = datasets.load_splits(data).train
    rest, _ = datasets.carve_validation(readers.image_folder(root, "train"), 0.25, seed=3)
    expected = datasets.flip_labels(rest, 0.3, seed=3)  # The steps load_splits took before curation existed.
    assert _pairs(train) == _pairs(expected) and train.paths == expected.paths
    assert _pairs(datasets.load_splits(data).train) == _pairs(train)
    data.exclude = _write(tmp_path / "none.txt", "# Nothing flagged.\n\n")
    assert _pairs(datasets.load_splits(data).train) == _pairs(train)


def test_an_exclude_list_leaves_the_other_examples_their_flipped_labels(tmp_path):
    root = _folder(tmp_path / "folder")
    data = _data("image_folder", root, label_noise=0.4, split_seed=1)
    noisy = dict(_pairs(datasets.load_splits(data).train))
    clean = dict(_pairs(readers.image_folder(root, "train")))
    flipped = sorted(k for k in noisy if noisy[k] != clean[k])
    kept_flips = flipped[1:]
    assert len(flipped) == 7 and kept_flips
    excluded = [flipped[0], *sorted(k for k in noisy if noisy[k] == clean[k])[:3]]
    data.exclude = _write(tmp_path / "exclude.txt", "".join(f"{k}\n" for k in excluded))
    train = datasets.load_splits(data).train
    assert _pairs(train) == [(k, y) for k, y in noisy.items() if k not in excluded]
    assert all(dict(_pairs(train))[k] != clean[k] for k in kept_flips)  # The same flips, not new ones.


def test_exclude_reads_comments_blank_lines_and_absolute_paths_and_logs_what_it_did(tmp_path, caplog):
    root = _folder(tmp_path / "folder")
    listed = f"# flagged by hand\n\ntrain/a/0.jpg\n   \n{os.path.join(root, 'train', 'b', '1.jpg')}\n"
    data = _data("image_folder", root, exclude=_write(tmp_path / "exclude.txt", listed))
    with caplog.at_level("INFO"):
        train = datasets.load_splits(data).train
    assert train.num_examples == 16 and not {"train/a/0.jpg", "train/b/1.jpg"} & set(train.keys())
    assert f"data.exclude: 2 training example(s) left out, as {data.exclude} lists; 16 remain." in caplog.text


def test_annotation_lists_are_curated_by_the_path_the_list_writes(tmp_path, caplog):
    lines = []
    for c in range(3):
        for i in range(3):
            write_image(str(tmp_path / "imgs" / f"{c}_{i}.jpg"), size=(8, 8), seed=10 * c + i)
            lines.append(f"imgs/{c}_{i}.jpg {c}")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.txt").write_text("imgs/0_0.jpg 0\n")
    data = _data("annotation_lists", tmp_path, train_list="train.txt", test_list="test.txt")
    data.exclude = _write(tmp_path / "exclude.txt", "imgs/1_1.jpg\n")
    data.relabel = _write(tmp_path / "relabel.csv", "key,class_name\nimgs/0_2.jpg,class_2\n")
    with caplog.at_level("INFO"):
        train = datasets.load_splits(data).train
    assert "imgs/1_1.jpg" not in train.keys() and train.num_examples == 8
    assert dict(_pairs(train))["imgs/0_2.jpg"] == 2
    assert f"data.relabel: 1 training label(s) changed, as {data.relabel} lists." in caplog.text


def test_cub_is_curated_by_images_txt_paths_root_relative_or_absolute(tmp_path, caplog):
    from test_readers import _write_cub

    classes = _write_cub(tmp_path)  # Train: img_1..img_4, classes 0, 1, 0, 1; test: img_5, img_6.
    data = _data("cub200", tmp_path)
    data.exclude = _write(tmp_path / "exclude.txt", f"{classes[0]}/img_1.jpg\nimages/{classes[1]}/img_2.jpg\n")
    assert datasets.load_splits(data).train.keys() == [f"{classes[0]}/img_3.jpg", f"{classes[1]}/img_4.jpg"]
    data.exclude = _write(tmp_path / "exclude.txt", str(tmp_path / "images" / classes[0] / "img_3.jpg") + "\n")
    data.relabel = _write(tmp_path / "relabel.csv", f"{classes[1]}/img_2.jpg,{classes[0]}\n")
    train = datasets.load_splits(data).train
    assert _pairs(train) == [
        (f"{classes[0]}/img_1.jpg", 0),
        (f"{classes[1]}/img_2.jpg", 0),
        (f"{classes[1]}/img_4.jpg", 1),
    ]
    # A test image's key is not an error: it stays in the test split, with a warning.
    data.relabel = ""
    data.exclude = _write(tmp_path / "exclude.txt", f"{classes[0]}/img_5.jpg\n{classes[0]}/img_1.jpg\n")
    with caplog.at_level("WARNING"):
        splits = datasets.load_splits(data)
    assert splits.train.num_examples == 3 and splits.test.num_examples == 2
    assert "1 key(s) name validation or test examples" in caplog.text and "img_5.jpg" in caplog.text
    # Leaving a class without a training example is refused, naming the class.
    data.exclude = _write(tmp_path / "exclude.txt", f"{classes[0]}/img_1.jpg\n{classes[0]}/img_3.jpg\n")
    with pytest.raises(UserError, match=f"leave no training example of 1 class\\(es\\): '{classes[0]}'"):
        datasets.load_splits(data)


def test_records_take_the_lists_written_against_their_folder(tmp_path):
    root = _folder(tmp_path / "folder")
    folder = {split: readers.image_folder(root, split) for split in ("train", "test")}
    out = str(tmp_path / "records")
    records.write_records(folder, out, num_shards=2)
    exclude = _write(tmp_path / "exclude.txt", "train/a/0.jpg\ntrain/c/3.jpg\n")
    relabel = _write(tmp_path / "relabel.csv", "train/b/2.jpg,a\n")
    from_folder = datasets.load_splits(_data("image_folder", root, exclude=exclude, relabel=relabel)).train
    from_records = datasets.load_splits(_data("records", out, exclude=exclude, relabel=relabel)).train
    assert isinstance(from_records, records.RecordsSplit)
    assert sorted(_pairs(from_records)) == sorted(_pairs(from_folder)) and len(from_folder.keys()) == 16
    label_of_image = {open(p, "rb").read(): y for p, y in zip(from_folder.paths, from_folder.labels, strict=True)}
    streamed = {data: int(y) for data, y in from_records.encoded_dataset().as_numpy_iterator()}
    assert streamed == label_of_image  # The stream gives the new label, and none of the excluded images.
    data = _data("records", out, exclude=exclude, audit_folds=2, audit_fold=1)
    held_out = datasets.load_heldout_fold(data)
    assert isinstance(held_out, records.RecordsSplit) and held_out.num_examples == 8


def test_audit_folds_hold_out_one_fold_with_the_labels_training_sees(tmp_path):
    root = _folder(tmp_path / "folder")
    exclude = _write(tmp_path / "exclude.txt", "train/a/5.jpg\n")
    data = _data("image_folder", root, label_noise=0.3, exclude=exclude, split_seed=2)
    pool = dict(_pairs(datasets.load_splits(data).train))
    data.audit_folds = 3
    held = []
    for fold in range(3):
        data.audit_fold = fold
        train, held_out = datasets.load_splits(data).train, datasets.load_heldout_fold(data)
        assert set(train.keys()) | set(held_out.keys()) == set(pool) and not set(train.keys()) & set(held_out.keys())
        assert all(pool[k] == y for k, y in _pairs(train) + _pairs(held_out))  # Noisy labels, as trained on.
        held.append(held_out.keys())
    assert sorted(k for keys in held for k in keys) == sorted(pool) and [len(h) for h in held] == [6, 6, 5]
    data.audit_fold = 0
    assert datasets.load_heldout_fold(data).keys() == held[0]  # Deterministic.
    data.audit_folds = 0
    with pytest.raises(UserError, match="needs data.audit_folds >= 2"):
        datasets.load_heldout_fold(data)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"exclude": "missing.txt"}, r"data.exclude: no such file '.*missing.txt'; expected a text file of keys"),
        ({"relabel": "missing.csv"}, r"data.relabel: no such file '.*missing.csv'; expected a CSV file"),
        (
            {"exclude": ("exclude.txt", "".join(f"b/{i}.jpg\n" for i in range(7)))},
            r"7 key\(s\) match no training example of .*: 'b/0.jpg', 'b/1.jpg', 'b/2.jpg', 'b/3.jpg', 'b/4.jpg' and 2 more\. "
            r"Keys are .* relative to data.root .*; e.g. 'train/a/0.jpg'",
        ),
        (
            {"relabel": ("relabel.csv", "train/a/0.jpg,b\ntrain/a/1.jpg,d\n")},
            r"1 class name\(s\) are not among the 3 class names of the training split \(e.g. 'a'\): line 2: 'd'",
        ),
        ({"relabel": ("relabel.csv", "train/a/0.jpg,b,c\n")}, r"line 1: expected `key,class_name`"),
        ({"relabel": ("relabel.csv", "train/a/0.jpg,b\ntrain/a/0.jpg,c\n")}, r"'train/a/0.jpg' is given two classes"),
        ({"audit_folds": 3, "audit_fold": 3}, r"data.audit_fold: expected a fold in \[0, 3\)"),
        ({"audit_folds": 7}, r"data.audit_folds=7 needs at least 7 training examples in every class; 3 class\(es\)"),
    ],
)
def test_curation_errors_name_the_file_and_what_was_expected(tmp_path, fields, message):
    root = _folder(tmp_path / "folder")
    for field, value in fields.items():
        if isinstance(value, tuple):
            value = _write(tmp_path / value[0], value[1])
        elif isinstance(value, str):
            value = str(tmp_path / value)
        fields[field] = value
    with pytest.raises(UserError, match=message) as error:
        datasets.load_splits(_data("image_folder", root, **fields))
    assert "\n" not in str(error.value)


def test_tfds_splits_are_curated_by_their_tfds_ids(tmp_path):
    import toy_tfds

    name = toy_tfds.prepare(str(tmp_path / "tfds"))
    data = _data("tfds", "", tfds_name=name, tfds_data_dir=str(tmp_path / "tfds"))
    source = datasets.load_splits(data).train
    keys = source.keys()
    assert len(set(keys)) == 12 and keys[3] == f"{name}-train.tfrecord-00000-of-00001__3"
    data.exclude = _write(tmp_path / "exclude.txt", f"{keys[0]}\n{keys[5]}\n")
    data.relabel = _write(tmp_path / "relabel.csv", f"{keys[1]},bird_0\n")
    train = datasets.load_splits(data).train
    assert isinstance(train, tfds_reader.TfdsSplit) and train.keys() == [
        k for i, k in enumerate(keys) if i not in (0, 5)
    ]
    expected = [0 if i == 1 else y for i, y in enumerate(source.labels) if i not in (0, 5)]
    assert train.labels == expected
    assert [int(y) for _, y in train.encoded_dataset().as_numpy_iterator()] == expected
    assert np.array_equal(train.subset([0, 1]).labels, expected[:2])


def _split(per_class=(10, 10, 10, 10)):
    labels = [c for c, n in enumerate(per_class) for _ in range(n)]
    paths = [f"/data/{c}/{i}.jpg" for i, c in enumerate(labels)]
    return readers.FileSplit(paths, labels, [f"c{c}" for c in range(len(per_class))], name="toy")


def test_label_noise_flips_exactly_that_share_to_other_classes_with_a_seed():
    split = _split()
    noisy = datasets.flip_labels(split, 0.25, seed=3)
    changed = np.flatnonzero(np.array(noisy.labels) != np.array(split.labels))
    assert len(changed) == 10 and noisy.paths == split.paths  # round(0.25 x 40), every one to another class.
    assert datasets.flip_labels(split, 0.25, seed=3).labels == noisy.labels
    assert datasets.flip_labels(split, 0.25, seed=4).labels != noisy.labels
    assert "0.25 of the labels flipped" in noisy.name


def test_long_tail_keeps_an_exponential_profile_of_each_class():
    split = _split((12, 20, 20, 20))
    tail = datasets.long_tail(split, 8.0, seed=0)
    sizes = np.bincount(tail.labels, minlength=4)
    np.testing.assert_array_equal(sizes, [12, 6, 3, 1])  # 12 x 8^(-c/3), floored, at least one.
    assert set(tail.paths) <= set(split.paths)
    assert datasets.long_tail(split, 8.0, seed=0).paths == tail.paths
