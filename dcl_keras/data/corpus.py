"""The pretraining corpus: a broad generated set to pretrain a backbone on, the miniature of ImageNet.

The paper fine-tunes an ImageNet-pretrained backbone. ImageNet shares no
class with CUB, Cars or Aircraft, yet shares their low-level statistics:
edges, strokes, textures, object outlines. This corpus plays that part for
the generated testbeds (the demo's birds and the typefaces). Its classes are
of two families, none of them a testbed class:

- glyphs: pages of text in the Computer Modern fonts that matplotlib ships
  (roman, bold, text italic, math italic, sans, typewriter, and the symbol
  font), which the typefaces testbed does not use, each upright, slanted
  right by about 12 degrees or left by about 12 degrees, at its own weight
  or with strokes 1 px heavier: 7 x 3 x 2 = 42 classes. Slant and stroke
  weight are made by transforming one font file, so no class is a font the
  testbed knows;
- shapes: the demo's `coarse` classes, 8 shapes x 4 surface textures x 3
  colour families over the demo's clutter: 96 classes.

The glyph pages are drawn as the typefaces' pages are (same paper, clutter,
size range, rotation and placement), with mixed-case letters and digits.
Class names read `glyphs-font_cmr10-slant_right-weight_heavy` and
`shapes-star-dots-warm`. Pretrain on it with configs/pretrain.py
(`bin/pretrain`).
"""

import itertools
import os

import matplotlib

from dcl_keras.data import typefaces

FONTS = ("cmr10", "cmb10", "cmti10", "cmmi10", "cmss10", "cmtt10", "cmsy10")
SLANTS = {"upright": 0.0, "right": 0.21, "left": -0.21}  # tan(12 degrees) = 0.21
WEIGHTS = {"regular": 0, "heavy": 1}  # pixels added to each side of a stroke, at the page's size of 224
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
GLYPH_ATTRIBUTES = [("glyphs", *a) for a in itertools.product(FONTS, SLANTS, WEIGHTS)]


def attributes(num_classes, shape_attributes):
    """The first `num_classes` classes: the glyph classes, then `shape_attributes` (the demo's coarse classes)."""
    return (GLYPH_ATTRIBUTES + [("shapes", *a) for a in shape_attributes])[:num_classes]


def class_name(attributes):
    family, *rest = attributes
    if family == "glyphs":
        font, slant, weight = rest
        return f"glyphs-font_{font}-slant_{slant}-weight_{weight}"
    return "-".join(attributes)


def render_glyphs(rng, attributes, size):
    """(image, box): a page of text in one glyph class (font, slant, weight)."""
    font, slant, weight = attributes
    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", f"{font}.ttf")
    thicken = WEIGHTS[weight] * max(1, round(size / 224))
    return typefaces.render_page(rng, path, size, shear=SLANTS[slant], thicken=thicken, letters=LETTERS)
