"""The generated typefaces set: deterministic, attribute-named classes, fine-grained, larger than its resize side."""

import os

import numpy as np
import pytest
from PIL import Image

from dcl_keras import evaluation
from dcl_keras.config import load_config_file
from dcl_keras.data import demo, readers, typefaces
from dcl_keras.errors import UserError

from helpers import global_statistics_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _generate(path, seed=0):
    return demo.ensure_demo_dataset(
        str(path), num_classes=16, train_per_class=1, test_per_class=1, image_size=64, seed=seed, kind="typefaces"
    )


def test_deterministic_and_written_as_attribute_named_jpeg_folders(tmp_path):
    a, b, c = _generate(tmp_path / "a"), _generate(tmp_path / "b"), _generate(tmp_path / "c", seed=1)
    split = readers.image_folder(a, "train")
    assert split.num_classes == 16 and split.num_examples == 16
    images = [np.asarray(Image.open(p)) for p in split.paths]
    assert all(image.shape == (64, 64, 3) for image in images)
    again = [np.asarray(Image.open(p)) for p in readers.image_folder(b, "train").paths]
    assert all(np.array_equal(x, y) for x, y in zip(images, again, strict=True))
    assert not np.array_equal(images[0], np.asarray(Image.open(readers.image_folder(c, "train").paths[0])))
    parsed = [evaluation.parse_attributes(name) for name in split.class_names]
    assert {tuple(p) for p in parsed} == {("family", "weight", "slant")}
    assert {p["family"] for p in parsed} == set(typefaces.FAMILIES)


def test_every_class_has_its_own_font_file():
    paths = [typefaces.font_path(a) for a in typefaces.ATTRIBUTES]
    assert len(set(paths)) == typefaces.NUM_CLASSES == 16
    assert all(os.path.isfile(p) for p in paths), [p for p in paths if not os.path.isfile(p)]


def test_class_count_is_checked(tmp_path):
    with pytest.raises(UserError, match="typefaces set has between 2 and 16 classes. Received: num_classes=17"):
        demo.generate(str(tmp_path), num_classes=17, kind="typefaces")


def test_classes_differ_in_the_glyphs_not_the_page():
    """The same draw in two typefaces: same page and layout, different strokes."""
    pages = [
        np.asarray(typefaces.render_with_box(np.random.default_rng(3), attributes, 96)[0], np.int16)
        for attributes in typefaces.ATTRIBUTES[:2]
    ]
    changed = np.abs(pages[0] - pages[1]).max(-1) > 30
    assert 0.005 < changed.mean() < 0.2, changed.mean()


def test_global_statistics_carry_little_of_the_class():
    """Nearest centroid on global colour statistics: 0.13 against chance 0.0625 (a bold face inks more)."""
    rng = np.random.default_rng(0)
    render = lambda label: typefaces.render_with_box(rng, typefaces.ATTRIBUTES[label], 96)[0]  # noqa: E731
    assert global_statistics_accuracy(render, typefaces.NUM_CLASSES) < 0.2


def test_the_config_renders_larger_than_its_resize_side():
    config = load_config_file(os.path.join(ROOT, "configs", "typefaces.py"))
    assert config.data.demo.kind == "typefaces"
    assert config.data.demo.image_size > config.input.resize_size >= config.input.image_size
    assert config.input.image_size % config.rcm.n == 0
