"""Readers on tiny datasets written in the real on-disk layouts."""

import os
import time

import numpy as np
import pytest

from dcl_keras.data import datasets, pipeline, readers

from conftest import write_image


def _write_folder(root, classes, per_class, ext=".jpg"):
    for c in classes:
        for i in range(per_class):
            write_image(os.path.join(root, c, f"{i}{ext}"), seed=i)


def test_image_folder_with_split_folders(tmp_path):
    _write_folder(tmp_path / "train", ["b_class", "a_class"], 3)
    _write_folder(tmp_path / "test", ["a_class", "b_class"], 2, ".png")
    train = readers.image_folder(str(tmp_path), "train")
    test = readers.image_folder(str(tmp_path), "test")
    assert train.class_names == test.class_names == ["a_class", "b_class"]
    assert train.num_examples == 6 and test.num_examples == 4
    assert sorted(set(test.labels)) == [0, 1]
    assert all(p.endswith(".png") for p in test.paths)


def test_image_folder_seeded_split_is_disjoint_and_reproducible(tmp_path):
    _write_folder(tmp_path, ["x", "y", "z"], 10)
    train = readers.image_folder(str(tmp_path), "train", test_fraction=0.3, seed=1)
    test = readers.image_folder(str(tmp_path), "test", test_fraction=0.3, seed=1)
    assert not set(train.paths) & set(test.paths)
    assert train.num_examples + test.num_examples == 30 and test.num_examples == 9
    assert readers.image_folder(str(tmp_path), "test", test_fraction=0.3, seed=1).paths == test.paths
    assert readers.image_folder(str(tmp_path), "test", test_fraction=0.3, seed=2).paths != test.paths


def test_image_folder_reports_empty_class_and_ignores_non_images(tmp_path):
    _write_folder(tmp_path, ["full"], 2)
    (tmp_path / "full" / "notes.txt").write_text("not an image")
    (tmp_path / "full" / ".DS_Store").write_bytes(b"\0")
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(readers.DatasetError, match="empty.*empty class folder"):
        readers.image_folder(str(tmp_path), "train", test_fraction=0.5)
    os.remove(tmp_path / "empty" / "readme.md")
    os.rmdir(tmp_path / "empty")
    split = readers.image_folder(str(tmp_path), "train", test_fraction=0.5)
    assert all(p.endswith(".jpg") for p in split.paths)


def _write_lists(root, lines_train, lines_test):
    (root / "train.txt").write_text("\n".join(lines_train) + "\n")
    (root / "test.txt").write_text("\n".join(lines_test) + "\n")


def test_annotation_lists_one_based_are_detected_and_last_class_works(tmp_path, caplog):
    for i in range(3):
        write_image(str(tmp_path / "imgs" / f"{i}.jpg"), seed=i)
    _write_lists(tmp_path, ["imgs/0.jpg 1", "imgs/1.jpg 2", "imgs/2.jpg 3"], ["imgs/2.jpg 3"])
    base = readers.detect_label_base(str(tmp_path), ["train.txt", "test.txt"])
    assert base == 1 and "1-based" in caplog.text
    split = readers.annotation_lists(str(tmp_path), "train.txt", label_base=base)
    assert split.labels == [0, 1, 2] and split.num_classes == 3
    explicit = readers.annotation_lists(str(tmp_path), "train.txt", num_classes=4, label_base=0)
    assert explicit.labels == [1, 2, 3]


def test_annotation_lists_with_tabs_and_spaces_in_paths(tmp_path):
    write_image(str(tmp_path / "my birds" / "a b.jpg"))
    write_image(str(tmp_path / "my birds" / "c.jpg"))
    (tmp_path / "train.txt").write_text("my birds/a b.jpg 0\nmy birds/c.jpg\t1\n")
    split = readers.annotation_lists(str(tmp_path), "train.txt", label_base=0)
    assert [os.path.basename(p) for p in split.paths] == ["a b.jpg", "c.jpg"] and split.labels == [0, 1]


def test_image_folder_finds_images_in_nested_folders(tmp_path):
    write_image(str(tmp_path / "train" / "gull" / "2019" / "a.jpg"))
    write_image(str(tmp_path / "train" / "gull" / "b.jpg"))
    write_image(str(tmp_path / "train" / "tern" / "c.png"))
    write_image(str(tmp_path / "test" / "tern" / "d.jpg"))
    split = readers.image_folder(str(tmp_path), "train")
    assert sorted(os.path.relpath(p, tmp_path) for p in split.paths) == [
        "train/gull/2019/a.jpg",
        "train/gull/b.jpg",
        "train/tern/c.png",
    ]
    assert split.labels.count(0) == 2


def test_annotation_lists_report_every_problem_with_line_numbers(tmp_path):
    write_image(str(tmp_path / "a.jpg"))
    _write_lists(tmp_path, ["a.jpg 0", "missing.jpg 1", "a.jpg 7", "no_label_here"], ["a.jpg 0"])
    with pytest.raises(readers.DatasetError) as err:
        readers.annotation_lists(str(tmp_path), "train.txt", num_classes=2, label_base=0)
    message = str(err.value)
    assert "train.txt:2: file does not exist" in message and "missing.jpg" in message
    assert "train.txt:3: label 7 is outside [0, 2)" in message
    assert "train.txt:4: expected '<relative path> <int label>'" in message
    assert "3 problem(s)" in message


def _write_cub(root):
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    images, labels, split, boxes = [], [], [], []
    for i in range(1, 7):
        cls = (i - 1) % 2
        rel = f"{classes[cls]}/img_{i}.jpg"
        write_image(str(root / "images" / rel), seed=i)
        images.append(f"{i} {rel}")
        labels.append(f"{i} {cls + 1}")
        split.append(f"{i} {1 if i <= 4 else 0}")
        boxes.append(f"{i} 1.0 2.0 10.0 20.0")
    for name, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("classes.txt", [f"{j + 1} {c}" for j, c in enumerate(classes)]),
        ("bounding_boxes.txt", boxes),
    ):
        (root / name).write_text("\n".join(lines) + "\n")
    return classes


def test_cub200_official_layout(tmp_path):
    classes = _write_cub(tmp_path)
    train, test = readers.cub200(str(tmp_path), "train"), readers.cub200(str(tmp_path), "test")
    assert train.class_names == classes
    assert train.num_examples == 4 and test.num_examples == 2
    assert train.labels == [0, 1, 0, 1]
    assert train.boxes.shape == (4, 4) and train.boxes[0].tolist() == [1.0, 2.0, 10.0, 20.0]


def test_cub200_missing_file_is_named(tmp_path):
    _write_cub(tmp_path)
    os.remove(tmp_path / "images" / "002.Laysan_Albatross" / "img_2.jpg")
    with pytest.raises(readers.DatasetError, match="image id 2: file does not exist"):
        readers.cub200(str(tmp_path), "train")


def test_fgvc_aircraft_official_layout(tmp_path):
    data = tmp_path / "data"
    names = ["707-320", "A300B4", "Boeing 747"]
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(names) + "\n")
    for split, ids in (
        ("trainval", ["0001", "0002", "0003"]),
        ("test", ["0004"]),
        ("train", ["0001"]),
        ("val", ["0002"]),
    ):
        lines = []
        for j, image_id in enumerate(ids):
            write_image(str(data / "images" / f"{image_id}.jpg"), seed=j)
            lines.append(f"{image_id} {names[(int(image_id) - 1) % 3]}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    trainval = readers.fgvc_aircraft(str(tmp_path), "trainval")
    assert trainval.class_names == names and trainval.labels == [0, 1, 2]
    assert readers.fgvc_aircraft(str(tmp_path), "test").labels == [0]
    with pytest.raises(ValueError, match="split='valid'"):
        readers.fgvc_aircraft(str(tmp_path), "valid")


def test_tfds_not_prepared_fails_within_seconds(tmp_path):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="not prepared.*tfds build cars196"):
        readers.tfds("cars196", "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 30


def test_tfds_unknown_name():
    with pytest.raises(ValueError, match="name='no_such_birds'"):
        readers.tfds("no_such_birds")


def test_tfds_reader_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        split = readers.tfds("cars196", "train", prepare=True)
        assert split.num_classes == 196
        images = list(pipeline.examples(split).take(3).as_numpy_iterator())
        assert all(img.ndim == 3 and img.shape[-1] == 3 and img.dtype == np.uint8 for img, _ in images)
        batches = pipeline.train_batches(split, seed=0, batch_size=2, image_size=32, resize_size=40, n=4, k=2)
        images, targets = next(iter(batches))
        assert images.shape == (4, 32, 32, 3)
        assert 0 <= int(targets["classifier"].numpy().max()) < 196


def test_load_splits_from_config_demo(tiny_config):
    train, test = datasets.load_splits(tiny_config.data)
    assert train.num_classes == 4 and train.num_examples == 24 and test.num_examples == 12
