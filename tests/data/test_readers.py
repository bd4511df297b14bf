"""Readers on tiny datasets written in the real on-disk layouts."""

import os

import numpy as np
import pytest

from dcl_keras.data import datasets, pipeline, readers, specs, train_stream
from dcl_keras.errors import UserError

from conftest import write_image
from helpers import config_file

TRAIN_SPEC = specs.TrainSpec(seed=0, batch_size=2, image_size=32, resize_size=40, n=4, k=2)


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


AIRCRAFT = {  # image id: (variant, family, manufacturer), as in the official lists.
    "0034309": ("707-320", "Boeing 707", "Boeing"),
    "0034958": ("A300B4", "A300", "Airbus"),
    "0037511": ("747-400", "Boeing 747", "Boeing"),
    "0041975": ("A300B4", "A300", "Airbus"),
    "1514522": ("707-320", "Boeing 707", "Boeing"),
}
AIRCRAFT_SPLIT_IDS = {
    "train": ["0034309", "0034958"],
    "val": ["0037511"],
    "trainval": ["0034309", "0034958", "0037511"],
    "test": ["0041975", "1514522"],
}


def _write_aircraft(root, width=120, height=90):
    """fgvc-aircraft-2013b/data as distributed: lists per level and split, boxes, images with a banner."""
    from PIL import Image

    data = root / "data"
    (data / "images").mkdir(parents=True)
    for image_id in AIRCRAFT:
        array = np.full((height, width, 3), 60, np.uint8)
        array[-20:] = 255  # The copyright banner of every image.
        Image.fromarray(array).save(data / "images" / f"{image_id}.jpg", quality=95)
    (data / "images_box.txt").write_text("".join(f"{i} 11 21 60 70\n" for i in AIRCRAFT))
    for level, column, listing in (
        ("variant", 0, "variants.txt"),
        ("family", 1, "families.txt"),
        ("manufacturer", 2, "manufacturers.txt"),
    ):
        names = sorted({v[column] for v in AIRCRAFT.values()})
        (data / listing).write_text("\n".join(names) + "\n")
        for split, ids in AIRCRAFT_SPLIT_IDS.items():
            (data / f"images_{level}_{split}.txt").write_text("".join(f"{i} {AIRCRAFT[i][column]}\n" for i in ids))
    return root


@pytest.mark.parametrize("level,column", [("variant", 0), ("family", 1), ("manufacturer", 2)])
def test_fgvc_aircraft_official_layout_at_every_level(tmp_path, level, column):
    root = str(_write_aircraft(tmp_path))
    trainval = readers.fgvc_aircraft(root, "trainval", level)
    names = sorted({v[column] for v in AIRCRAFT.values()})
    assert trainval.class_names == names
    assert [names[label] for label in trainval.labels] == [AIRCRAFT[i][column] for i in AIRCRAFT_SPLIT_IDS["trainval"]]
    assert readers.fgvc_aircraft(root, "test", level).num_examples == 2
    # Boxes: 1-based inclusive (xmin, ymin, xmax, ymax) -> 0-based (x, y, width, height).
    np.testing.assert_allclose(trainval.boxes, [[10, 20, 50, 50]] * 3)
    with pytest.raises(ValueError, match="split='valid'"):
        readers.fgvc_aircraft(root, "valid", level)


def test_fgvc_aircraft_banner_is_removed_in_training_and_evaluation_unless_kept(tmp_path):
    root = str(_write_aircraft(tmp_path))
    split = readers.fgvc_aircraft(root, "test")
    assert split.crop_bottom == 20
    images = [image for image, _ in pipeline.examples(split).as_numpy_iterator()]
    assert all(image.shape == (70, 120, 3) and image.max() < 100 for image in images)
    evaluated, _ = next(iter(pipeline.eval_batches(split, specs.EvalSpec(32, 40), batch_size=2)))
    assert float(evaluated.numpy().max()) < 100  # No banner row reaches the model.
    trained, _ = next(iter(train_stream.train_batches(split, TRAIN_SPEC)))
    assert float(trained.numpy().max()) < 100
    kept = readers.fgvc_aircraft(root, "test", remove_banner=False)
    assert next(iter(pipeline.examples(kept)))[0].shape == (90, 120, 3)


def test_fgvc_aircraft_missing_level_list_is_named(tmp_path):
    root = _write_aircraft(tmp_path)
    os.remove(root / "data" / "families.txt")
    with pytest.raises(FileNotFoundError, match="families.txt"):
        readers.fgvc_aircraft(str(root), "trainval", "family")


def test_aircraft_validation_is_the_official_val_split_when_training_on_train(tmp_path):
    root = str(_write_aircraft(tmp_path))
    config = config_file("aircraft_resnet50", f"root={root},split=train,level=family")
    config.data.check_files = False
    train, val, test = datasets.load_splits(config.data)
    assert (train.num_examples, val.num_examples, test.num_examples) == (2, 1, 2)
    assert "val" in val.name and train.crop_bottom == val.crop_bottom == test.crop_bottom == 20
    assert config_file("aircraft_resnet50", f"root={root},banner=true").data.aircraft_remove_banner is False


def test_webp_and_gif_files_are_listed_and_decoded(tmp_path, caplog):
    from PIL import Image

    _write_folder(tmp_path / "train" / "a", [""], 1)
    _write_folder(tmp_path / "test" / "a", [""], 1)
    frames = [Image.fromarray(np.full((30, 40, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "train" / "a" / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(tmp_path / "train" / "a" / "shop.webp", lossless=True)
    with caplog.at_level("INFO"):
        split = readers.image_folder(str(tmp_path), "train")
    assert sorted(os.path.basename(p) for p in split.paths) == ["0.jpg", "anim.gif", "shop.webp"]
    assert "gif 1" in caplog.text and "webp 1" in caplog.text and "jpg 1" in caplog.text
    images = {os.path.basename(p): pipeline.read_image(p).numpy() for p in split.paths}
    assert images["anim.gif"].shape == (30, 40, 3) and abs(float(images["anim.gif"].mean()) - 10) < 3  # First frame.
    assert images["shop.webp"].shape == (30, 40, 3) and float(images["shop.webp"].mean()) == 90.0
    assert pipeline.check_images(split).num_examples == 3


def test_validation_carve_out_is_seeded_stratified_and_disjoint(tmp_path):
    _write_folder(tmp_path, ["x", "y", "z"], 10)
    train = readers.image_folder(str(tmp_path), "train", test_fraction=0.2, seed=1)
    rest, val = datasets.carve_validation(train, 0.25, seed=4)
    assert np.bincount(val.labels).tolist() == [2, 2, 2] and rest.num_examples == 18
    assert not set(rest.paths) & set(val.paths) and set(rest.paths) | set(val.paths) == set(train.paths)
    assert datasets.carve_validation(train, 0.25, seed=4)[1].paths == val.paths
    assert datasets.carve_validation(train, 0.25, seed=5)[1].paths != val.paths


def test_a_small_validation_fraction_of_many_small_classes_is_not_empty():
    split = readers.FileSplit([f"{i}.jpg" for i in range(300)], [i % 10 for i in range(300)], list("abcdefghij"))
    train, val = datasets.carve_validation(split, 0.01, seed=0)  # 30 per class: 0.3 each, 3 in all.
    assert (train.num_examples, val.num_examples) == (297, 3) and len(set(val.labels)) == 3
    tiny = readers.FileSplit(["a.jpg", "b.jpg"], [0, 1], ["x", "y"], name="two")
    with pytest.raises(UserError, match="leaves no validation example"):
        datasets.carve_validation(tiny, 0.2, seed=0)


def test_image_folder_val_folder_is_the_validation_split(tmp_path, tiny_config):
    for split in ("train", "val", "test"):
        _write_folder(tmp_path / split, ["a", "b"], 2)
    config = tiny_config.copy_and_resolve_references()
    config.data.source, config.data.root = "image_folder", str(tmp_path)
    train, val, test = datasets.load_splits(config.data)
    assert val.num_examples == 4 and all("/val/" in p for p in val.paths)
    _write_folder(tmp_path / "flat", ["a", "b"], 5)
    config.data.root = str(tmp_path / "flat")  # No split folders: carve out of training.
    config.data.val_fraction = 0.5
    train, val, test = datasets.load_splits(config.data)
    assert (train.num_examples, val.num_examples, test.num_examples) == (4, 4, 2)
    assert not set(train.paths) & set(val.paths) and not set(val.paths) & set(test.paths)


def test_load_splits_from_config_demo(tiny_config):
    train, val, test = datasets.load_splits(tiny_config.data)
    assert train.num_classes == 4 and train.num_examples == 24 and test.num_examples == 12 and val is None


def test_keys_name_each_example_as_its_source_writes_it(tmp_path):
    _write_folder(tmp_path / "split" / "train", ["a"], 2)
    _write_folder(tmp_path / "split" / "test", ["a"], 1)
    assert readers.image_folder(str(tmp_path / "split"), "train").keys() == ["train/a/0.jpg", "train/a/1.jpg"]
    _write_folder(tmp_path / "flat", ["a", "b"], 2)
    flat = [readers.image_folder(str(tmp_path / "flat"), s, test_fraction=0.5).keys() for s in ("train", "test")]
    assert sorted(flat[0] + flat[1]) == ["a/0.jpg", "a/1.jpg", "b/0.jpg", "b/1.jpg"]
    write_image(str(tmp_path / "lists" / "my birds" / "a b.jpg"))
    write_image(str(tmp_path / "lists" / "c.jpg"))
    (tmp_path / "lists" / "train.txt").write_text("my birds/a b.jpg 0\nc.jpg 1\n")
    assert readers.annotation_lists(str(tmp_path / "lists"), "train.txt").keys() == ["my birds/a b.jpg", "c.jpg"]
    (tmp_path / "cub").mkdir()
    classes = _write_cub(tmp_path / "cub")  # Keys are relative to images/, as images.txt writes them.
    cub = readers.cub200(str(tmp_path / "cub"), "train")
    assert cub.keys() == [f"{classes[(i - 1) % 2]}/img_{i}.jpg" for i in range(1, 5)]
    aircraft = readers.fgvc_aircraft(str(_write_aircraft(tmp_path / "aircraft")), "trainval")
    assert aircraft.keys() == [f"{i}.jpg" for i in AIRCRAFT_SPLIT_IDS["trainval"]]
    subset = cub.subset([3, 1])  # Keys follow the examples through a subset.
    assert subset.keys() == [cub.keys()[3], cub.keys()[1]]
    assert readers.FileSplit(["/x/a.jpg"], [0], ["a"]).keys() == ["/x/a.jpg"]  # No key_root: the path.
