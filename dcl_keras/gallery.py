"""Classes added after training, recognised without retraining: a gallery of class prototypes (imprinting).

A class's prototype is the L2-normalised mean of the L2-normalised embeddings
of its images (`dcl.embedding_model`: the pooled feature the classification
head reads). An image is ranked against every prototype by cosine
similarity, one dot product each: weight imprinting (Qi, Brown and Lowe,
"Low-Shot Learning with Imprinted Weights", CVPR 2018), the prototype rule of
Snell et al. ("Prototypical Networks", NeurIPS 2017). Known classes (a
config's training split) and new ones (folders of `<root>/<class>/*.jpg`)
are ranked together, so a new product is told apart from the products the
model was trained on, not only from the other new ones.

    predictor = Predictor("workdirs/demo/model.keras")   # or an export with `serve_embeddings`
    built, summary = build(predictor, ["new_products/"], split=datasets.load_splits(config.data).train)
    built.save("gallery.npz")
    for key, top in Gallery.load("gallery.npz").predict(predictor, ["photo.jpg"]):
        print(key, top)                                  # [(class name, cosine similarity), ...]

Why plain NumPy arrays and no nearest-neighbour library: a gallery holds one
prototype per class, C x D float32 (C up to tens of thousands, D <= 2048: at
most 160 MB at 20,000 x 2048, a few MB for most catalogues), and ranking a
batch of images is one [B, D] x [D, C] matrix product, milliseconds on a CPU
beside the backbone's forward pass. An index such as FAISS or ScaNN pays off
at millions of entries (one per image rather than per class), and would add a
dependency, a file format of its own and approximate answers.

A class name found in several sources (a known class given more images in a
new folder, or the same folder name under two roots) is one class, whose
prototype is the mean over all its images: a product photographed again next
week sharpens its prototype instead of becoming a second entry of the same
name. The summary lists such merged classes.

The file (`.npz`, no pickled objects) holds the prototypes, the class names,
each class's image count, the embedding size, the model it was built with and
that model's embedding of a fixed probe image: a gallery used with another
model (another embedding size, or a retrained model that embeds differently)
is refused with a one-line error instead of ranking nonsense.
"""

import dataclasses
import logging
import os
import zipfile

import numpy as np

from dcl_keras import workdir
from dcl_keras.data import readers
from dcl_keras.errors import UserError

FORMAT_VERSION = 1
MIN_IMAGES = 2  # A prototype from one image is that image: at least two, as bin/gallery's --min_images.
# The largest difference allowed between the probe's embedding now and when the gallery was built. Unit vectors:
# the same weights differ by ~1e-5 (.keras against its export, TensorFlow against JAX); other weights by ~0.1 or more.
PROBE_TOLERANCE = 0.02
FIELDS = ("format_version", "prototypes", "class_names", "counts", "embedding_size", "model", "probe", "sources")


def probe_image(side=48):
    """A fixed uint8 RGB image (smooth waves): its embedding fingerprints the model that built a gallery."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    channels = [np.sin(x * (0.21 + 0.05 * c) + c) * np.cos(y * (0.13 + 0.04 * c) - c) for c in range(3)]
    return np.round(127.5 + 127.5 * np.stack(channels, -1)).astype(np.uint8)


def normalize(rows):
    """Rows scaled to unit L2 length (a zero row stays zero)."""
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


@dataclasses.dataclass
class Gallery:
    """Class prototypes and what they were built from.

    Attributes:
        prototypes: float32 [C, D], unit rows.
        class_names: list of C str.
        counts: int64 [C], the images each prototype averages.
        model: str, the model (`.keras` file or export) that embedded them.
        probe: float32 [D], that model's embedding of `probe_image()`.
        sources: list of str, the folders and the split they came from.
        path: str, the file it was loaded from ("" when built here).
    """

    prototypes: np.ndarray
    class_names: list
    counts: np.ndarray
    model: str
    probe: np.ndarray
    sources: list
    path: str = ""

    @property
    def embedding_size(self):
        return int(self.prototypes.shape[1])

    @property
    def num_classes(self):
        return len(self.class_names)

    def scores(self, embeddings):
        """Cosine similarities [B, C] of unit embeddings [B, D] to every prototype."""
        return np.asarray(embeddings, np.float32) @ self.prototypes.T

    def rank(self, embeddings, top_k=5):
        """[[(class name, cosine similarity), ...] of the `top_k` nearest prototypes] per embedding."""
        scores = self.scores(embeddings)
        order = np.argsort(-scores, axis=1, kind="stable")[:, : min(top_k, self.num_classes)]
        return [[(self.class_names[j], float(row[j])) for j in top] for row, top in zip(scores, order, strict=True)]

    def predict(self, predictor, inputs, failures=None):
        """[(key, [(class name, cosine similarity), ...]), ...]: `predictor.predict`'s output, ranked by this gallery.

        `predictor` is a `dcl_keras.predict.Predictor` (its `top_k`); inputs,
        keys and `failures` as in its `predict`. Check the model first
        (`check_model`).
        """
        keys, embedded = predictor.keyed_embeddings(inputs, failures)
        return list(zip(keys, self.rank(embedded, predictor.top_k), strict=True))

    def check_model(self, predictor):
        """Raises a UserError unless `predictor`'s model embeds as the model that built this gallery did."""
        where = self.path or "the gallery"
        rebuild = f"rebuild it with bin/gallery --model={predictor.model_path}"
        size = predictor.embedding_size
        if size != self.embedding_size:
            raise UserError(
                f"{where} holds embeddings of size {self.embedding_size} from {self.model}, and "
                f"{predictor.model_path} embeds in size {size}: {rebuild}. Received: embedding size {size}"
            )
        difference = float(np.max(np.abs(predictor.embeddings([probe_image()])[0] - self.probe)))
        if difference > PROBE_TOLERANCE:
            raise UserError(
                f"{where} was built with {self.model}, and {predictor.model_path} embeds differently (another or a "
                f"retrained model): {rebuild}. Received: a probe embedding {difference:.3f} away (allowed "
                f"{PROBE_TOLERANCE})"
            )

    def save(self, path):
        """Writes the gallery to `path` (.npz) atomically; returns `path`."""
        arrays = {
            "format_version": np.int64(FORMAT_VERSION),
            "prototypes": np.asarray(self.prototypes, np.float32),
            "class_names": np.array(self.class_names, dtype=str),
            "counts": np.asarray(self.counts, np.int64),
            "embedding_size": np.int64(self.embedding_size),
            "model": np.array(self.model, dtype=str),
            "probe": np.asarray(self.probe, np.float32),
            "sources": np.array(self.sources, dtype=str),
        }

        def write(tmp):
            with open(tmp, "wb") as f:  # A file object: np.savez would add ".npz" to a name without it.
                np.savez(f, **arrays)

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return workdir.write_file(path, write)

    @classmethod
    def load(cls, path):
        """The gallery in a file that `save` (bin/gallery) wrote."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Gallery not found: expected a .npz file written by bin/gallery. Received: {path!r}"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise UserError(f"{path}: not a gallery file (bin/gallery writes them). Received: {e}") from None
        missing = [key for key in FIELDS if key not in arrays]
        if missing or int(arrays["format_version"]) != FORMAT_VERSION:
            raise UserError(
                f"{path}: not a gallery file of format {FORMAT_VERSION} (bin/gallery writes them): missing "
                f"{missing}. Received: {sorted(arrays)}"
            )
        return cls(
            prototypes=arrays["prototypes"].astype(np.float32),
            class_names=[str(name) for name in arrays["class_names"]],
            counts=arrays["counts"].astype(np.int64),
            model=str(arrays["model"]),
            probe=arrays["probe"].astype(np.float32),
            sources=[str(source) for source in arrays["sources"]],
            path=path,
        )


def _images_under(folder):
    """The image files under `folder` (sub-folders included, hidden ones skipped), sorted."""
    paths = []
    for current, subdirs, files in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        paths += [os.path.join(current, f) for f in files if readers.is_image_file(f)]
    return sorted(paths)


def class_folders(root):
    """{class name: (its folder, its image paths)} of `root/<class>/**` (bin/train's image folder layout)."""
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Image folder not found: expected a folder of class sub-folders (<root>/<class>/*.jpg). Received: {root!r}"
        )
    names = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    if not names:
        loose = sum(readers.is_image_file(f) for f in os.listdir(root))
        received = f"{loose} image file(s) in it and no sub-folder (one class's folder?)" if loose else "no sub-folder"
        raise UserError(
            f"{root}: expected one sub-folder of images per class (<root>/<class>/*.jpg). Received: {received}"
        )
    return {name: (os.path.join(root, name), _images_under(os.path.join(root, name))) for name in names}


def _require_images(classes, min_images):
    """A UserError naming every class with fewer than `min_images` usable images (and why, when some were skipped)."""
    short = []
    for entry in classes.values():
        if entry["count"] < min_images:
            skipped = entry["listed"] - entry["count"]
            why = f" ({skipped} could not be read)" if skipped else ""
            short.append(f"{' + '.join(entry['sources'])}: {entry['count']} image(s){why}")
    if short:
        more = f"; ... and {len(short) - 5} more" if len(short) > 5 else ""
        raise UserError(
            f"Each class needs at least min_images={min_images} usable images, the images its prototype averages "
            f"(bin/gallery --min_images). Received: {'; '.join(short[:5])}{more}"
        )


def _check_listing(folders, known, min_images):
    """`_require_images` on the files listed for the classes not in `known`, before any image is read."""
    listing = {}
    for name, folder, paths in folders:
        if name not in known:
            entry = listing.setdefault(name, {"count": 0, "listed": 0, "sources": []})
            entry["count"] += len(paths)
            entry["listed"] += len(paths)
            entry["sources"].append(folder)
    _require_images(listing, min_images)


def _add(classes, name, total, count, listed, source):
    """Adds a source's sum of `count` embeddings of class `name` (merged with the same name from other sources)."""
    entry = classes.setdefault(name, {"sum": 0.0, "count": 0, "listed": 0, "sources": []})
    entry["sum"] = entry["sum"] + total
    entry["count"] += count
    entry["listed"] += listed
    entry["sources"].append(source)


def _warn_if_other_classes(predictor, split):
    """Logs a warning when the split's classes are not the ones the model was trained on (a wrong --config?)."""
    names = list(predictor.class_names or [])
    unnamed = names == [str(i) for i in range(len(names))]  # A model saved without class names.
    if names and (len(names) != split.num_classes or (not unnamed and names != list(split.class_names))):
        logging.warning(
            "%s: its classes are not the %d %s was trained on.", split.name, len(names), predictor.model_path
        )


def _embed_files(predictor, paths, batch_size, failures):
    rows = [predictor.embeddings(paths[i : i + batch_size], failures) for i in range(0, len(paths), batch_size)]
    return np.concatenate([np.zeros((0, predictor.embedding_size), np.float32), *rows])


def build(predictor, image_roots=(), split=None, *, min_images=MIN_IMAGES, batch_size=32, failures=None):
    """(Gallery, summary): the prototypes of the classes in image folders and, optionally, a training split.

    Args:
        predictor: a `dcl_keras.predict.Predictor` over a `.keras` model or an
            export with the `serve_embeddings` signature.
        image_roots: folders of class sub-folders, `<root>/<class>/*.jpg`.
        split: optional training split (`datasets.load_splits(config.data).train`),
            whose known classes are ranked with the new ones; read as
            evaluation reads it (its undecodable examples are skipped).
        min_images: int, the fewest usable images a class needs.
        batch_size: int, images per forward pass.
        failures: optional list: image files that cannot be read or decoded
            are appended as (path, reason) and skipped; without it they raise.

    Returns the gallery and a summary dict: classes, images, known (the
    split's class count), new and merged (class names), skipped (split
    examples that did not decode) and sources.
    """
    image_roots = [image_roots] if isinstance(image_roots, str | os.PathLike) else list(image_roots)
    if not image_roots and split is None:
        raise UserError("A gallery needs images: expected image folders and/or a training split. Received: neither")
    if not isinstance(min_images, int) or min_images < 1:
        raise UserError(f"min_images: expected an integer >= 1. Received: min_images={min_images!r}")
    folders = [(name, *entry) for root in image_roots for name, entry in class_folders(root).items()]
    known = list(split.class_names) if split is not None else []
    _check_listing(folders, known, min_images)
    classes, skipped = {}, 0
    if split is not None:
        _warn_if_other_classes(predictor, split)
        embedded, labels = predictor.split_embeddings(split, batch_size)
        totals = np.zeros((len(known), embedded.shape[1]))
        np.add.at(totals, labels, embedded)
        counts = np.bincount(labels, minlength=len(known))
        for label, name in enumerate(known):
            _add(classes, name, totals[label], counts[label], counts[label], f"{split.name}: {name}")
        skipped = split.num_examples - len(labels)
    for name, folder, paths in folders:
        rows = _embed_files(predictor, paths, batch_size, failures)
        _add(classes, name, rows.sum(0, dtype=np.float64), len(rows), len(paths), folder)
    _require_images(classes, min_images)
    names = list(classes)
    gallery = Gallery(
        prototypes=normalize(np.stack([classes[name]["sum"] for name in names])),
        class_names=names,
        counts=np.array([classes[name]["count"] for name in names], np.int64),
        model=os.path.abspath(predictor.model_path),
        probe=predictor.embeddings([probe_image()])[0],
        sources=([split.name] if split is not None else []) + [os.path.abspath(root) for root in image_roots],
    )
    summary = {
        "classes": len(names),
        "images": int(gallery.counts.sum()),
        "known": len(known),
        "new": [name for name in names if name not in set(known)],
        "merged": [name for name in names if len(classes[name]["sources"]) > 1],
        "skipped": skipped,
        "sources": gallery.sources,
    }
    return gallery, summary
