"""Curation on splits built in memory: the audit folds, the key and relabel files, how listed keys are matched."""

import numpy as np
import pytest

from dcl_keras.data import curation, readers
from dcl_keras.errors import UserError


def _split(sizes=(7, 5, 9), root="/data/birds"):
    labels = [c for c, size in enumerate(sizes) for _ in range(size)]
    paths = [f"{root}/train/class_{c}/{i}.jpg" for i, c in enumerate(labels)]
    names = [f"class_{c}" for c in range(len(sizes))]
    return readers.FileSplit(paths, labels, names, name="birds", key_root=root)


def test_audit_folds_are_disjoint_cover_the_split_stratified_and_seeded():
    split = _split()
    folds = curation.audit_folds(split, 4, seed=0)
    assert len(folds) == 4 and all(np.array_equal(f, np.sort(f)) for f in folds)
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(split.num_examples))  # Each in exactly one.
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    labels = np.asarray(split.labels)
    per_class = np.stack([np.bincount(labels[f], minlength=3) for f in folds])  # [fold, class]
    assert (per_class.max(axis=0) - per_class.min(axis=0) <= 1).all()
    assert all(np.array_equal(a, b) for a, b in zip(folds, curation.audit_folds(split, 4, seed=0), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(folds, curation.audit_folds(split, 4, seed=1), strict=True))


def test_split_fold_trains_on_the_other_folds():
    split = _split()
    folds = curation.audit_folds(split, 3, seed=5)
    train, held_out = curation.split_fold(split, 3, 2, seed=5)
    assert held_out.paths == [split.paths[i] for i in folds[2]]
    assert sorted(train.paths + held_out.paths) == sorted(split.paths) and "audit fold 2 of 3" in held_out.name


def test_audit_folds_refuse_a_class_smaller_than_the_fold_count_and_a_fold_out_of_range():
    with pytest.raises(UserError, match=r"1 class\(es\) have fewer: 'class_1' \(5\)\. Lower data.audit_folds"):
        curation.audit_folds(_split(), 6, seed=0)
    with pytest.raises(UserError, match="expected at least 2 audit folds"):
        curation.audit_folds(_split(), 1, seed=0)
    with pytest.raises(UserError, match=r"data.audit_fold: expected a fold in \[0, 3\).*data.audit_fold=-1"):
        curation.split_fold(_split(), 3, -1, seed=0)


def test_relabel_files_take_a_header_comments_and_quoted_commas(tmp_path):
    path = tmp_path / "relabel.csv"
    path.write_text('key,class_name\n# checked by hand\n\n"x/a,b.jpg", Heermann gull \nx/c.jpg,tern\n')
    assert curation.read_relabels(str(path), ["tern", "Heermann gull"]) == [(4, "x/a,b.jpg", 1), (5, "x/c.jpg", 0)]
    path.write_text("x/a.jpg,gull\n")  # No header: the first row is a key.
    assert curation.read_relabels(str(path), ["gull"]) == [(1, "x/a.jpg", 0)]


def test_keys_match_as_written_as_absolute_paths_or_relative_to_the_root():
    split = _split(root="/data/cub/images")
    found = curation.match_keys(
        split,
        ["train/class_0/0.jpg", "/data/cub/images/train/class_1/8.jpg", "images/train/class_2/20.jpg"],
        "data.exclude",
        "exclude.txt",
        data_root="/data/cub",
    )
    assert found == [[0], [8], [20]]
    with pytest.raises(UserError, match=r"1 key\(s\) match no training example of birds: '/data/other/0.jpg'"):
        curation.match_keys(split, ["/data/other/0.jpg"], "data.exclude", "exclude.txt", data_root="/data/cub")


def test_a_key_listed_twice_in_the_source_is_relabelled_everywhere_and_unchanged_labels_are_not_counted(tmp_path):
    split = readers.FileSplit(["/r/a.jpg", "/r/b.jpg", "/r/a.jpg"], [0, 1, 0], ["x", "y"], key_root="/r")
    path = tmp_path / "relabel.csv"
    path.write_text("a.jpg,y\nb.jpg,y\n")
    relabelled, changed = curation.relabel(split, str(path))
    assert relabelled.labels == [1, 1, 1] and changed == 2 and split.labels == [0, 1, 0]
