"""A generated fine-grained set of typefaces: thin, high-contrast detail in images larger than the resize side.

Sixteen classes: four families (DejaVu Sans, DejaVu Sans Mono, DejaVu Serif
and STIX General, a second serif roman that looks like DejaVu Serif to an
untrained eye) in two weights and two slants. Every image shows a few lines
of random lowercase letters in one typeface, at a random size, position,
small rotation and ink colour, over a light, lightly cluttered page. Nothing
but the glyphs' strokes tells the classes apart: serifs, stroke contrast,
stroke width and slant, a few pixels wide, which is what a resize or an
augmentation that smooths away fine detail costs accuracy on.

The fonts are the TrueType files that matplotlib ships, so the set needs no
download and renders the same wherever the pinned matplotlib and Pillow are
installed. Class names read `family_serif-weight_bold-slant_italic`, so
evaluation reports the accuracy per attribute.
"""

import itertools
import os

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FAMILIES = {
    "sans": ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique"),
    "mono": ("DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique"),
    "serif": ("DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic"),
    "stix": ("STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta"),
}
WEIGHTS = ("regular", "bold")
SLANTS = ("upright", "slanted")
ATTRIBUTES = list(itertools.product(FAMILIES, WEIGHTS, SLANTS))
NUM_CLASSES = len(ATTRIBUTES)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def class_name(attributes):
    family, weight, slant = attributes
    return f"family_{family}-weight_{weight}-slant_{slant}"


def font_path(attributes):
    family, weight, slant = attributes
    stem = FAMILIES[family][WEIGHTS.index(weight) + 2 * SLANTS.index(slant)]
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", f"{stem}.ttf")


def _words(rng, count, letters=LETTERS):
    return " ".join("".join(rng.choice(list(letters), size=int(rng.integers(3, 7)))) for _ in range(count))


def render_with_box(rng, attributes, size):
    """(image, box): one size x size page of text in the class's typeface, and the text's box (x, y, w, h)."""
    return render_page(rng, font_path(attributes), size)


def render_page(rng, font_file, size, shear=0.0, thicken=0, letters=LETTERS):
    """(image, box): a page of text in the font at `font_file`, and the text's box (x, y, w, h).

    `shear` slants the text layer (the tangent of its angle, positive leaning
    right) and `thicken` widens every stroke by that many pixels a side, so
    that one font file gives oblique and heavier variants (the pretraining
    corpus, `dcl_keras.data.corpus`). At their defaults the page is the
    typefaces class's, drawn from the same random numbers.
    """
    paper = tuple(int(v) for v in rng.integers(185, 256, size=3))
    image = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(image)
    # Clutter: faint strokes and blobs, as on a scanned or photographed page.
    for _ in range(int(rng.integers(4, 10))):
        colour = tuple(int(v) for v in np.clip(np.array(paper) - rng.integers(15, 60, size=3), 0, 255))
        x0, y0, x1, y1 = rng.uniform(-0.1, 1.1, size=4) * size
        if rng.random() < 0.5:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 4)))
        else:
            r = rng.uniform(0.02, 0.1) * size
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(size / 300))
    font = ImageFont.truetype(font_file, int(size * rng.uniform(0.10, 0.15)))
    lines = [_words(rng, 3, letters) for _ in range(int(rng.integers(2, 4)))]
    text = "\n".join(lines)
    # The text on its own layer, slanted and thickened where asked, rotated a little, then pasted at a random place.
    layer = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(layer).multiline_text((size // 2, size // 2), text, font=font, fill=255, spacing=size // 40)
    if shear:
        # Output (x, y) samples input (x + shear * (y - size), y): the text leans right about the layer's centre.
        layer = layer.transform(layer.size, Image.AFFINE, (1, shear, -shear * size, 0, 1, 0), Image.BICUBIC)
    if thicken:
        layer = layer.filter(ImageFilter.MaxFilter(2 * thicken + 1))
    layer = layer.rotate(float(rng.uniform(-5, 5)), resample=Image.BICUBIC, center=(size, size))
    left, top, right, bottom = layer.getbbox() or (0, 0, 1, 1)
    layer = layer.crop((left, top, right, bottom))
    x = int(rng.integers(min(0, size - layer.width), max(0, size - layer.width) + 1))
    y = int(rng.integers(min(0, size - layer.height), max(0, size - layer.height) + 1))
    ink = tuple(int(v) for v in rng.integers(0, 90, size=3))
    image.paste(Image.new("RGB", layer.size, ink), (x, y), layer)
    x0, y0 = max(x, 0), max(y, 0)
    box = (x0, y0, min(x + layer.width, size) - x0, min(y + layer.height, size) - y0)
    return image, box
