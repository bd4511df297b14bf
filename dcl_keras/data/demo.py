"""The embedded demo dataset: procedural fine-grained "birds".

Every image shows the same kind of object: a bird of body, head, beak, wing and
tail at a random position, scale, small rotation and facing, over a cluttered
background, with random colours. Classes differ only in local part details:
the crest on the head, the pattern on the wing and the shape of the tail. No
global cue (mean colour, size, position) separates them, which is what makes
the task fine-grained in the paper's sense: a model has to look at parts.

The dataset is deterministic from its seed and is written as JPEG files in the
image-folder layout (`root/train/<class>/*.jpg`, `root/test/<class>/*.jpg`) so
that the demo exercises the same decode path as real data, with each object's
box in `bounding_boxes.txt`.

A second kind, `coarse`, is the broad set to pretrain a backbone on (the toy
version of ImageNet pretraining): up to 96 classes of whole-object categories
(shape x surface texture x colour family) drawn over the same clutter. A
third, `typefaces` (`dcl_keras.data.typefaces`), is a fine-grained set of
thin, high-contrast detail, meant to be rendered larger than the resize side.
A fourth, `pretrain` (`dcl_keras.data.corpus`), is the pretraining corpus:
glyph pages in fonts the typefaces do not use, and the coarse classes.
"""

import dataclasses
import hashlib
import itertools
import json
import math
import os
import tempfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dcl_keras import workdir as run_folder
from dcl_keras.contract import DEMO_KINDS
from dcl_keras.data import corpus, typefaces
from dcl_keras.errors import UserError

CRESTS = ("none", "spike", "tuft", "double")
WINGS = ("plain", "stripes", "dots")
TAILS = ("fan", "fork")
MAX_CLASSES = len(CRESTS) * len(WINGS) * len(TAILS)
KINDS = DEMO_KINDS  # The kinds of generated data, in dcl_keras.contract so that configs load light.
# Each kind's generator version, part of its cache folder's digest: bump a kind's own entry when its images
# or files change, so that only its folder (and benchmarks/learning.py's history for it) starts anew.
# birds 2: bounding_boxes.txt; 3: part_boxes.txt; 4: the double crest's box; 5: larger parts in a contrasting
# colour. coarse and typefaces have not changed since version 4, the version all kinds shared until then.
GENERATOR_VERSIONS = {"birds": 5, "coarse": 4, "typefaces": 4, "pretrain": 1}
SHAPES = ("ellipse", "triangle", "square", "pentagon", "star", "cross", "ring", "crescent")
TEXTURES = ("plain", "stripes", "dots", "checker")
COLOURS = ("warm", "cool", "grey")
MAX_COARSE_CLASSES = len(SHAPES) * len(TEXTURES) * len(COLOURS)
MAX_PRETRAIN_CLASSES = len(corpus.GLYPH_ATTRIBUTES) + MAX_COARSE_CLASSES


def class_attributes(num_classes):
    """The (crest, wing, tail) triples of the first `num_classes` classes."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise UserError(
            f"The demo dataset has between 2 and {MAX_CLASSES} classes. Received: num_classes={num_classes}"
        )
    return list(itertools.product(CRESTS, WINGS, TAILS))[:num_classes]


def class_name(attributes):
    crest, wing, tail = attributes
    return f"crest_{crest}-wing_{wing}-tail_{tail}"


def coarse_attributes(num_classes):
    """The (shape, texture, colour) triples of the first `num_classes` coarse classes."""
    if not 2 <= num_classes <= MAX_COARSE_CLASSES:
        raise UserError(
            f"The coarse set has between 2 and {MAX_COARSE_CLASSES} classes. Received: num_classes={num_classes}"
        )
    return list(itertools.product(SHAPES, TEXTURES, COLOURS))[:num_classes]


def _coarse_colour(rng, family):
    if family == "grey":
        v = int(rng.integers(60, 220))
        return (v, v, v)
    hi, lo = int(rng.integers(170, 250)), int(rng.integers(20, 90))
    mid = int(rng.integers(lo, hi))
    return (hi, mid, lo) if family == "warm" else (lo, mid, hi)


def _outline(shape, side):
    """The shape's mask on a side x side canvas (PIL "L")."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    c, r = side / 2, side * 0.45
    polygon = {3: "triangle", 4: "square", 5: "pentagon"}
    if shape == "ellipse":
        draw.ellipse([c - r, c - 0.6 * r, c + r, c + 0.6 * r], fill=255)
    elif shape in polygon.values():
        sides = {v: k for k, v in polygon.items()}[shape]
        angles = np.pi / 2 + 2 * np.pi * np.arange(sides) / sides
        draw.polygon([(c + r * np.cos(a), c - r * np.sin(a)) for a in angles], fill=255)
    elif shape == "star":
        angles = np.pi / 2 + np.pi * np.arange(10) / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
        draw.polygon([(c + q * np.cos(a), c - q * np.sin(a)) for q, a in zip(radii, angles, strict=True)], fill=255)
    elif shape == "cross":
        w = 0.3 * r
        draw.rectangle([c - r, c - w, c + r, c + w], fill=255)
        draw.rectangle([c - w, c - r, c + w, c + r], fill=255)
    elif shape == "ring":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        draw.ellipse([c - 0.55 * r, c - 0.55 * r, c + 0.55 * r, c + 0.55 * r], fill=0)
    else:  # crescent
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        draw.ellipse([c - 0.4 * r, c - 1.1 * r, c + 1.3 * r, c + 0.7 * r], fill=0)
    return mask


def _coarse_object(rng, attributes, side):
    """One coarse-class object on a transparent side x side canvas."""
    shape, texture, family = attributes
    base, detail = _coarse_colour(rng, family), _coarse_colour(rng, family)
    surface = Image.new("RGBA", (side, side), base + (255,))
    draw = ImageDraw.Draw(surface)
    step = side / float(rng.uniform(6, 10))
    if texture == "stripes":
        for x in np.arange(0, side, step):
            draw.rectangle([x, 0, x + step / 2, side], fill=detail)
    elif texture == "dots":
        for x in np.arange(step / 2, side, step):
            for y in np.arange(step / 2, side, step):
                draw.ellipse([x - step / 4, y - step / 4, x + step / 4, y + step / 4], fill=detail)
    elif texture == "checker":
        for i, x in enumerate(np.arange(0, side, step)):
            for j, y in enumerate(np.arange(0, side, step)):
                if (i + j) % 2:
                    draw.rectangle([x, y, x + step, y + step], fill=detail)
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    layer.paste(surface, (0, 0), _outline(shape, side))
    return layer


def _random_colour(rng, lo=40, hi=230):
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def _shade(colour, factor):
    return tuple(int(max(0, min(255, c * factor))) for c in colour)


def _background(rng, size):
    image = Image.new("RGB", (size, size), _random_colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(15, 30))):
        x, y = rng.uniform(-0.1, 1.1, size=2) * size
        r = rng.uniform(0.03, 0.2) * size
        colour = _random_colour(rng)
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r * rng.uniform(0.3, 1), x + r, y + r], fill=colour)
        else:
            x2, y2 = rng.uniform(-0.1, 1.1, size=2) * size
            draw.line([x, y, x2, y2], fill=colour, width=max(1, int(r / 4)))
    return image.filter(ImageFilter.GaussianBlur(size / 100))


PARTS = ("crest", "wing", "tail")  # The parts that tell the classes apart, with boxes in PARTS_FILE.


def _contrasting(colour):
    """A detail colour that stands out from `colour`: much darker for a light colour, much lighter for a dark one."""
    if sum(colour) / 3 > 120:
        return _shade(colour, 0.3)
    return tuple(int(c + 0.7 * (255 - c)) for c in colour)


def _bird(rng, attributes, side):
    """Draws one bird, facing right, on a transparent side x side canvas: (layer, {part: box x0 y0 x1 y1}).

    The class-defining parts are drawn in a detail colour that contrasts with
    the body and are large enough to survive the demo's 64-px crops: a
    crest of 4 shapes, a wing of 3 patterns, and a tail that is a wide fan
    or two prongs with a deep notch.
    """
    crest, wing, tail = attributes
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    s = side / 100.0
    body = _random_colour(rng)
    detail = _contrasting(body)
    cx, cy = 50 * s, 54 * s
    # Tail (left of the body, in the detail colour).
    if tail == "fan":
        draw.polygon([(28 * s, 50 * s), (4 * s, 33 * s), (4 * s, 75 * s), (28 * s, 60 * s)], fill=detail)
    else:
        draw.polygon([(28 * s, 50 * s), (3 * s, 31 * s), (19 * s, 55 * s), (28 * s, 56 * s)], fill=detail)
        draw.polygon([(28 * s, 54 * s), (19 * s, 55 * s), (3 * s, 79 * s), (28 * s, 60 * s)], fill=detail)
    draw.ellipse([cx - 26 * s, cy - 15 * s, cx + 24 * s, cy + 15 * s], fill=body)
    # Head, beak, eye.
    hx, hy, hr = 78 * s, 40 * s, 11 * s
    draw.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=body)
    draw.polygon([(hx + hr - s, hy - 3 * s), (hx + hr + 9 * s, hy + s), (hx + hr - s, hy + 4 * s)], fill=detail)
    draw.ellipse([hx + 3 * s, hy - 4 * s, hx + 7 * s, hy], fill=(10, 10, 10, 255))
    # Crest on top of the head.
    top = hy - hr + s
    if crest == "spike":
        draw.polygon([(hx - 6 * s, top + 2 * s), (hx - 1 * s, top - 18 * s), (hx + 5 * s, top + 2 * s)], fill=detail)
    elif crest == "tuft":
        draw.ellipse([hx - 9 * s, top - 13 * s, hx + 7 * s, top + 3 * s], fill=detail)
    elif crest == "double":
        for dx in (-7, 4):
            draw.polygon(
                [(hx + (dx - 3.5) * s, top + 2 * s), (hx + dx * s, top - 16 * s), (hx + (dx + 3.5) * s, top + 2 * s)],
                fill=detail,
            )
    # Wing with its pattern, clipped to the wing's outline.
    wing_box = [cx - 18 * s, cy - 10 * s, cx + 16 * s, cy + 10 * s]
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).ellipse(wing_box, fill=255)
    pattern = Image.new("RGBA", (side, side), _shade(body, 0.8) + (255,))
    pdraw = ImageDraw.Draw(pattern)
    if wing == "stripes":
        for x in np.arange(wing_box[0], wing_box[2], 8 * s):
            pdraw.rectangle([x, wing_box[1], x + 4 * s, wing_box[3]], fill=detail)
    elif wing == "dots":
        for x in np.arange(wing_box[0] + 4 * s, wing_box[2], 9 * s):
            for y in np.arange(wing_box[1] + 4 * s, wing_box[3], 9 * s):
                pdraw.ellipse([x - 3 * s, y - 3 * s, x + 3 * s, y + 3 * s], fill=detail)
    layer.paste(pattern, (0, 0), mask)
    parts = {
        "crest": (hx - 11 * s, top - 19 * s, hx + 8 * s, top + 3 * s),
        "wing": tuple(wing_box),
        "tail": (2 * s, 30 * s, 29 * s, 80 * s),
    }
    return layer, parts


def _moved_box(box, scale, flip, angle, side, offset):
    """A box on the bird canvas after the resize, the flip, the rotation about the centre and the paste."""
    x0, y0, x1, y1 = (v * scale for v in box)
    if flip:
        x0, x1 = side - x1, side - x0
    c = side / 2
    theta = np.deg2rad(angle)  # PIL rotates counter-clockwise on screen (y down).
    corners = np.array([(x0, y0), (x1, y0), (x0, y1), (x1, y1)]) - c
    xs = c + corners[:, 0] * np.cos(theta) + corners[:, 1] * np.sin(theta)
    ys = c - corners[:, 0] * np.sin(theta) + corners[:, 1] * np.cos(theta)
    return xs.min() + offset[0], ys.min() + offset[1], xs.max() + offset[0], ys.max() + offset[1]


def render(rng, attributes, size):
    """One demo image (PIL RGB, size x size) of the class with these attributes."""
    return render_with_box(rng, attributes, size)[0]


def render_with_box(rng, attributes, size, kind="birds"):
    """(image, box): one image and the object's tight box (x, y, width, height) inside the image."""
    image, box, _ = render_with_parts(rng, attributes, size, kind)
    return image, box


def render_with_parts(rng, attributes, size, kind="birds"):
    """(image, box, parts): `render_with_box` plus, for birds, each part's box (x, y, width, height).

    Parts (crest, wing, tail; `PARTS`) are where the classes differ; their
    boxes follow the bird through its resize, flip, rotation and placement
    and are clipped to the image. The other kinds have no parts ({}).
    """
    if kind == "typefaces":
        image, box = typefaces.render_with_box(rng, attributes, size)
        return image, box, {}
    if kind == "pretrain":
        family, *attributes = attributes
        if family == "glyphs":
            image, box = corpus.render_glyphs(rng, attributes, size)
            return image, box, {}
        kind = "coarse"
    image = _background(rng, size)
    side = int(size * rng.uniform(0.75, 0.95))
    if kind == "birds":
        canvas, canvas_parts = _bird(rng, attributes, side * 2)
    else:
        canvas, canvas_parts = _coarse_object(rng, attributes, side * 2), {}
    bird = canvas.resize((side, side), Image.LANCZOS)
    flip = rng.random() < 0.5
    if flip:
        bird = bird.transpose(Image.FLIP_LEFT_RIGHT)
    angle = float(rng.uniform(-15, 15))
    bird = bird.rotate(angle, resample=Image.BILINEAR, expand=False)
    x, y = (int(v) for v in rng.integers(-size // 10, size - side + size // 10 + 1, size=2))
    image.paste(bird, (x, y), bird)

    def clipped(x0, y0, x1, y1):
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        return (x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))

    # The visible object: its alpha above 1/2, shifted to the image and clipped to it.
    left, top, right, bottom = bird.getchannel("A").point(lambda a: 255 if a >= 128 else 0).getbbox()
    box = tuple(int(v) for v in clipped(x + left, y + top, x + right, y + bottom))
    parts = {
        name: tuple(round(float(v), 1) for v in clipped(*_moved_box(part, 0.5, flip, angle, side, (x, y))))
        for name, part in canvas_parts.items()
    }
    return image, box, parts


def default_cache_dir():
    return os.environ.get("DCL_KERAS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dcl_keras"))


BOXES = "bounding_boxes.txt"  # "<split>/<class>/<file> x y width height" per image, in pixels.
PARTS_FILE = "part_boxes.txt"  # "<split>/<class>/<file> <part> x y width height" per part (birds only).


def generate(root, num_classes=20, train_per_class=40, test_per_class=20, image_size=96, seed=0, kind="birds"):
    """Writes the demo dataset to `root`: train/ and test/ class folders of JPEGs, and the objects' boxes."""
    if kind not in KINDS:
        raise UserError(f"The demo dataset kind must be one of {KINDS}. Received: kind={kind!r}")
    limit = {"typefaces": typefaces.NUM_CLASSES, "pretrain": MAX_PRETRAIN_CLASSES}.get(kind)
    if limit and not 2 <= num_classes <= limit:
        raise UserError(f"The {kind} set has between 2 and {limit} classes. Received: num_classes={num_classes}")
    attributes = {
        "birds": class_attributes,
        "coarse": coarse_attributes,
        "typefaces": lambda n: typefaces.ATTRIBUTES[:n],
        "pretrain": lambda n: corpus.attributes(n, coarse_attributes(MAX_COARSE_CLASSES)),
    }[kind](num_classes)
    names = {"birds": class_name, "coarse": "-".join, "typefaces": typefaces.class_name, "pretrain": corpus.class_name}[
        kind
    ]
    rng = np.random.default_rng(seed)
    lines, part_lines = [], []
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, attrs in enumerate(attributes):
            folder = os.path.join(split, names(attrs))
            os.makedirs(os.path.join(root, folder), exist_ok=True)
            for i in range(count):
                image, box, parts = render_with_parts(rng, attrs, image_size, kind)
                name = os.path.join(folder, f"{split}_{label:02d}_{i:04d}.jpg")
                image.save(os.path.join(root, name), quality=92)
                lines.append(f"{name} {' '.join(str(v) for v in box)}\n")
                part_lines += [f"{name} {part} {' '.join(str(v) for v in b)}\n" for part, b in parts.items()]
    with open(os.path.join(root, BOXES), "w") as f:
        f.writelines(lines)
    if part_lines:
        with open(os.path.join(root, PARTS_FILE), "w") as f:
            f.writelines(part_lines)


def _box_table(root, filename, keyed_by_part):
    """{(absolute path, part or None): [x, y, width, height]} from a box file of the demo at `root`."""
    table = {}
    path = os.path.join(root, filename)
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                name, *rest = line.split()
                part, values = (rest[0], rest[1:]) if keyed_by_part else (None, rest)
                table[(os.path.normpath(os.path.join(root, name)), part)] = [float(v) for v in values]
    return table


def _lookup(table, split, parts):
    nan = [float("nan")] * 4
    boxes = [[table.get((os.path.normpath(p), part), nan) for part in parts] for p in split.paths]
    return np.asarray(boxes, np.float32).reshape(-1, len(parts), 4)


def part_boxes(split, root):
    """float32 [E, len(PARTS), 4] part boxes (x, y, width, height) of a demo split's images (NaN: none)."""
    return _lookup(_box_table(root, PARTS_FILE, keyed_by_part=True), split, PARTS)


def with_boxes(split, root):
    """The FileSplit `split` of the demo at `root` with each image's bird box (NaN where unknown)."""
    return dataclasses.replace(split, boxes=_lookup(_box_table(root, BOXES, keyed_by_part=False), split, [None])[:, 0])


def folder_name(num_classes=20, train_per_class=40, test_per_class=20, image_size=96, seed=0, kind="birds"):
    """(the cache folder's name, its demo.json) for these generator parameters: demo-<digest of them>."""
    params = dict(
        num_classes=num_classes,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        image_size=image_size,
        seed=seed,
        version=GENERATOR_VERSIONS.get(kind, 0),  # An unknown kind is refused by generate.
    )
    if kind != "birds":  # The birds keep the digest they had before kinds existed.
        params["kind"] = kind
    return "demo-" + hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10], params


def ensure_demo_dataset(
    cache_dir=None, num_classes=20, train_per_class=40, test_per_class=20, image_size=96, seed=0, kind="birds"
):
    """Returns the demo dataset's root, generating it the first time.

    The folder name encodes the parameters and the kind's generator version
    (`folder_name`), and it appears atomically (written to a temporary
    folder, then renamed), so an interrupted run never leaves a half-written
    dataset behind. Several processes may generate it at once (parallel
    sweeps on a fresh machine): the first rename wins, and the others, whose
    copies are identical (the generator is deterministic), use it.
    """
    name, params = folder_name(num_classes, train_per_class, test_per_class, image_size, seed, kind)
    cache_dir = os.path.expanduser(cache_dir or default_cache_dir())
    root = os.path.join(cache_dir, name)
    if os.path.isdir(root):
        return root
    os.makedirs(cache_dir, exist_ok=True)
    try:
        with run_folder.atomic_path(root, tmp=tempfile.mkdtemp(prefix=".demo-", dir=cache_dir)) as tmp:
            generate(tmp, **{k: v for k, v in params.items() if k != "version"})
            with open(os.path.join(tmp, "demo.json"), "w") as f:
                json.dump(params, f, indent=2)
    except OSError:
        if not os.path.isfile(os.path.join(root, "demo.json")):  # Not another process's finished copy.
            raise
    return root


def dataset_root(d):
    """The root of the demo dataset that a config's `data.demo` section describes (generated if missing)."""
    return ensure_demo_dataset(
        d.cache_dir or None, d.num_classes, d.train_per_class, d.test_per_class, d.image_size, d.seed, d.kind
    )


def global_statistics(image):
    """Per-image global cues (mean and std per channel, brightness): used to check the demo."""
    pixels = np.asarray(image, np.float32).reshape(-1, 3)
    return np.concatenate([pixels.mean(0), pixels.std(0), [pixels.mean()], [math.sqrt(pixels.var())]])


def first_test_image(workdir):
    """The first test image of the demo dataset that a bin/train workdir used."""
    d = run_folder.read_config(workdir)["data"]["demo"]
    root = ensure_demo_dataset(
        d["cache_dir"] or None,
        d["num_classes"],
        d["train_per_class"],
        d["test_per_class"],
        d["image_size"],
        d["seed"],
        d.get("kind", "birds"),
    )
    folder = os.path.join(root, "test", sorted(os.listdir(os.path.join(root, "test")))[0])
    return os.path.join(folder, sorted(os.listdir(folder))[0])


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "--print_test_image":
        sys.exit("usage: python -m dcl_keras.data.demo --print_test_image WORKDIR")
    print(first_test_image(sys.argv[2]))
