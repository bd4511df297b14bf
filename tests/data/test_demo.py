"""The embedded demo dataset: deterministic, image-folder layout, fine-grained."""

import hashlib
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from dcl_keras.data import demo, readers

from helpers import global_statistics_accuracy


def _digest(root):
    h = hashlib.sha1()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            with open(os.path.join(folder, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_deterministic_from_the_seed_and_written_as_jpeg_folders(tmp_path):
    a = demo.ensure_demo_dataset(str(tmp_path / "a"), num_classes=3, train_per_class=2, test_per_class=1, image_size=32)
    b = demo.ensure_demo_dataset(str(tmp_path / "b"), num_classes=3, train_per_class=2, test_per_class=1, image_size=32)
    c = demo.ensure_demo_dataset(
        str(tmp_path / "c"), num_classes=3, train_per_class=2, test_per_class=1, image_size=32, seed=1
    )
    assert _digest(a) == _digest(b) != _digest(c)
    split = readers.image_folder(a, "train")
    assert split.num_classes == 3 and split.num_examples == 6
    assert all(p.endswith(".jpg") for p in split.paths)
    with Image.open(split.paths[0]) as image:
        assert image.format == "JPEG" and image.size == (32, 32)
    # A second call reuses the cache; no temporary folders are left behind.
    assert (
        demo.ensure_demo_dataset(str(tmp_path / "a"), num_classes=3, train_per_class=2, test_per_class=1, image_size=32)
        == a
    )
    assert not [d for d in os.listdir(tmp_path / "a") if d.startswith(".")]


def test_a_copy_finished_by_another_process_meanwhile_is_used(tmp_path, monkeypatch):
    """Two runs generating the same demo at once: the second rename finds the first's folder and uses it."""
    args = dict(num_classes=3, train_per_class=2, test_per_class=1, image_size=32)
    other = demo.ensure_demo_dataset(str(tmp_path / "other"), **args)
    real = demo.generate

    def generate_while_another_process_finishes(folder, **kwargs):
        real(folder, **kwargs)
        shutil.copytree(other, os.path.join(str(tmp_path / "cache"), os.path.basename(other)))

    monkeypatch.setattr(demo, "generate", generate_while_another_process_finishes)
    root = demo.ensure_demo_dataset(str(tmp_path / "cache"), **args)
    assert os.path.basename(root) == os.path.basename(other) and _digest(root) == _digest(other)
    assert os.listdir(tmp_path / "cache") == [os.path.basename(other)]  # The losing copy is removed.


def test_a_failed_rename_is_raised_when_no_finished_copy_is_there(tmp_path, monkeypatch):
    def fail(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(demo.os, "replace", fail)
    with pytest.raises(PermissionError):
        demo.ensure_demo_dataset(str(tmp_path), num_classes=3, train_per_class=2, test_per_class=1, image_size=32)
    assert not os.listdir(tmp_path)


def test_class_count_is_checked():
    with pytest.raises(ValueError, match="num_classes=1"):
        demo.class_attributes(1)
    assert len(set(demo.class_attributes(demo.MAX_CLASSES))) == demo.MAX_CLASSES


def test_classes_differ_only_in_part_details():
    names = [demo.class_name(a) for a in demo.class_attributes(20)]
    assert len(set(names)) == 20
    assert all(n.startswith("crest_") and "-wing_" in n and "-tail_" in n for n in names)


def test_global_statistics_do_not_separate_the_classes():
    """A nearest-centroid classifier on global colour statistics stays near chance (1/20)."""
    rng = np.random.default_rng(0)
    classes = demo.class_attributes(20)
    accuracy = global_statistics_accuracy(lambda label: demo.render(rng, classes[label], 48), 20)
    # Chance is 0.05; the standard error over 400 test images is about 0.011.
    print(f"nearest-centroid accuracy on global statistics: {accuracy:.3f}")
    assert accuracy < 0.10, accuracy


def test_the_demo_box_holds_every_pixel_the_bird_changed():
    import copy

    from dcl_keras.data import demo

    for seed in range(5):
        rng = np.random.default_rng(seed)
        background = np.asarray(demo._background(copy.deepcopy(rng), 96), np.int16)
        image, (x, y, w, h) = demo.render_with_box(rng, demo.class_attributes(4)[seed % 4], 96)
        changed = np.abs(np.asarray(image, np.int16) - background).max(axis=2) > 60
        assert changed.any() and 0.2 * 96 < w <= 96 and 0.2 * 96 < h <= 96
        outside = changed.copy()
        outside[y : y + h, x : x + w] = False
        assert outside.sum() <= 0.01 * changed.sum(), (seed, outside.sum(), changed.sum())


def test_demo_splits_carry_the_boxes(tiny_config):
    from dcl_keras.data import datasets

    test = datasets.load_splits(tiny_config.data).test
    assert test.boxes is not None and test.boxes.shape == (test.num_examples, 4)
    assert np.isfinite(test.boxes).all()


@pytest.mark.parametrize(
    "part,variants", [("crest", ("none", "spike")), ("wing", ("plain", "stripes")), ("tail", ("fan", "fork"))]
)
def test_each_part_box_holds_the_pixels_that_part_changes(part, variants):
    """Two renders that share every draw and differ in one part differ only inside that part's box."""
    from dcl_keras.data import demo

    index = demo.PARTS.index(part)
    for seed in range(12):
        renders = []
        for variant in variants:
            attributes = ["tuft", "dots", "fork"]
            attributes[index] = variant
            renders.append(demo.render_with_parts(np.random.default_rng(seed), tuple(attributes), 128))
        (a, box, parts), (b, _, other_parts) = renders
        assert parts == other_parts
        changed = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max(axis=2) > 40
        x, y, w, h = parts[part]
        outside = changed.copy()
        outside[max(int(y) - 1, 0) : int(y + h) + 2, max(int(x) - 1, 0) : int(x + w) + 2] = False
        assert changed.sum() > 20 and outside.sum() <= 0.01 * changed.sum(), (seed, outside.sum(), changed.sum())


def test_each_kind_has_its_own_generator_version(monkeypatch):
    """A new birds generator renames the birds' cache folder only; the other kinds keep theirs."""
    typefaces = dict(num_classes=16, train_per_class=60, test_per_class=25, image_size=224, kind="typefaces")
    birds = dict(num_classes=20, train_per_class=60, test_per_class=20, image_size=128)
    before = demo.folder_name(**typefaces)[0], demo.folder_name(**birds)[0]
    monkeypatch.setitem(demo.GENERATOR_VERSIONS, "birds", demo.GENERATOR_VERSIONS["birds"] + 1)
    after = demo.folder_name(**typefaces)[0], demo.folder_name(**birds)[0]
    assert after[0] == before[0] and after[1] != before[1]


def test_the_accuracy_testbeds_keep_their_folders():
    """benchmarks/learning.py compares rows whose dataset folder matches: these names are its history's keys.

    Change them only with a generator change (a version bump), which starts that testbed's history anew.
    """
    from dcl_keras.config import load_config_file

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    expected = {"demo_study.py": "demo-0a3b15a558", "typefaces.py": "demo-bff1c4b30d"}
    for config_file, name in expected.items():
        d = load_config_file(os.path.join(root, "configs", config_file)).data.demo
        got = demo.folder_name(d.num_classes, d.train_per_class, d.test_per_class, d.image_size, d.seed, d.kind)[0]
        assert got == name, config_file
