"""The pretraining corpus (dcl_keras/data/corpus.py): its classes, and what its slant and weight variants draw."""

import os

import numpy as np
import pytest

from dcl_keras.data import corpus, demo, typefaces
from dcl_keras.errors import UserError

pytestmark = pytest.mark.backend_agnostic


def test_the_corpus_shares_no_class_or_font_with_the_testbeds():
    attributes = corpus.attributes(demo.MAX_PRETRAIN_CLASSES, demo.coarse_attributes(demo.MAX_COARSE_CLASSES))
    names = [corpus.class_name(a) for a in attributes]
    assert len(names) == len(set(names)) == demo.MAX_PRETRAIN_CLASSES == 138
    testbed_fonts = {os.path.basename(typefaces.font_path(a)) for a in typefaces.ATTRIBUTES}
    assert not testbed_fonts & {f"{font}.ttf" for font in corpus.FONTS}
    testbed_names = {typefaces.class_name(a) for a in typefaces.ATTRIBUTES}
    testbed_names |= {demo.class_name(a) for a in demo.class_attributes(demo.MAX_CLASSES)}
    assert not testbed_names & set(names)


def _ink(image):
    """The dark (text) pixels of a page: a boolean mask."""
    return np.asarray(image.convert("L"), np.float32) < 100


def _lean(mask):
    """How far the ink's x grows per pixel upwards (positive: leaning right)."""
    y, x = np.nonzero(mask)
    return float(-np.cov(x, y)[0, 1] / np.var(y))


def test_a_right_slant_leans_right_a_left_slant_left_and_heavy_strokes_have_more_ink():
    def page(seed, slant="upright", weight="regular"):
        # Only the letter l: upright vertical strokes, so the lean is the slant's.
        font = os.path.join(os.path.dirname(typefaces.font_path(typefaces.ATTRIBUTES[0])), "cmr10.ttf")
        rng = np.random.default_rng(seed)
        shear, thicken = corpus.SLANTS[slant], corpus.WEIGHTS[weight]
        return typefaces.render_page(rng, font, 224, shear=shear, thicken=thicken, letters="l")[0]

    for seed in range(3):  # The same random numbers draw the same page but for the slant or weight.
        leans = {slant: _lean(_ink(page(seed, slant))) for slant in corpus.SLANTS}
        assert leans["left"] < leans["upright"] - 0.1 < leans["right"] - 0.2, leans
        assert _ink(page(seed, weight="heavy")).sum() > 1.3 * _ink(page(seed)).sum()


def test_the_typefaces_page_is_render_page_at_its_defaults():
    attributes = typefaces.ATTRIBUTES[5]
    image, box = typefaces.render_with_box(np.random.default_rng(7), attributes, 96)
    again, again_box = typefaces.render_page(np.random.default_rng(7), typefaces.font_path(attributes), 96)
    assert box == again_box and np.array_equal(np.asarray(image), np.asarray(again))


def test_the_pretrain_kind_writes_glyph_and_shape_classes(tmp_path):
    count = len(corpus.GLYPH_ATTRIBUTES) + 2
    demo.generate(str(tmp_path), num_classes=count, train_per_class=1, test_per_class=1, image_size=48, kind="pretrain")
    classes = sorted(os.listdir(tmp_path / "train"))
    assert len(classes) == count and sorted(os.listdir(tmp_path / "test")) == classes
    assert sum(c.startswith("glyphs-font_") for c in classes) == len(corpus.GLYPH_ATTRIBUTES)
    assert {"shapes-ellipse-plain-warm", "shapes-ellipse-plain-cool"} <= set(classes)


def test_the_pretrain_kind_refuses_more_classes_than_it_has(tmp_path):
    with pytest.raises(UserError, match="pretrain set has between 2 and 138 classes. Received: num_classes=139"):
        demo.generate(str(tmp_path), num_classes=139, kind="pretrain")
