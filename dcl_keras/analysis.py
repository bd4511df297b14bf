"""Where the model looks: class activation maps, per-filter responses, the pointing game.

The paper's Figs. 5 and 6 (dcl-spec.md section 5), on any trained DCLModel:

* `class_activation_maps`: CAM_c = sum_k W[k, c] F_k of the last feature map
  F and the classifier kernel W (Zhou et al., 2016); the classifier is a
  dense layer on the average-pooled map, so the CAM's mean plus the bias is
  the logit.
* `filter_responses`: r^k(I, c) = mean(F^k(I)) W[k, c] for an image and its
  RCM-destructed copy, and delta_k = mean(F^k(I)) theta_adv[k, original] -
  mean(F^k(phi(I))) theta_adv[k, destructed] from the 2-way discriminator.
* `pointing_game`: the share of images whose CAM peak (true class) falls
  inside the object box, next to the share of boxes that hold the image centre
  (what a model that always points at the centre would score).

Images go through the evaluation preprocessing (resize, center crop); boxes
are mapped through the same resize and crop.
"""

import numpy as np
from keras import ops

from dcl_keras.contract import CLASSIFIER_LAYER, DESTRUCTED, DISCRIMINATOR, DISCRIMINATOR_LAYER, ORIGINAL
from dcl_keras.data import pipeline, rcm
from dcl_keras.errors import UserError


def features_and_logits(model, images):
    """(last feature map [B, h, w, K], logits [B, C]) of a DCLModel, as numpy."""
    features = model.backbone(images, training=False)
    layer = model.get_layer(CLASSIFIER_LAYER)
    pooled = ops.mean(ops.cast(features, "float32"), axis=(1, 2))
    logits = ops.matmul(pooled, layer.kernel) + layer.bias
    return ops.convert_to_numpy(ops.cast(features, "float32")), ops.convert_to_numpy(logits)


def class_activation_maps(model, images, classes):
    """CAMs [B, h, w] of a DCLModel for one class per image (int [B])."""
    features, _ = features_and_logits(model, images)
    kernel = ops.convert_to_numpy(model.get_layer(CLASSIFIER_LAYER).kernel)
    return np.einsum("bhwk,kb->bhw", features, kernel[:, np.asarray(classes)])


def upsample(maps, size):
    """[B, h, w] -> [B, size, size], bilinear with half-pixel centres (Pillow's resize)."""
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(m.astype(np.float32), "F").resize((size, size), Image.BILINEAR)) for m in maps]
    )


def crop_box(box, file_size, spec, *, crop_bottom=0):
    """A file box (x, y, width, height) in the crop of `spec` (a `specs.EvalSpec`): (x0, y0, x1, y1), clipped."""
    resize_size, image_size = spec.resize_size, spec.image_size
    width, height = file_size
    height -= crop_bottom
    x, y, w, h = box
    sx, sy = resize_size / width, resize_size / height
    offset = (resize_size - image_size) // 2
    x0, x1 = np.clip([x * sx - offset, (x + w) * sx - offset], 0, image_size)
    y0, y1 = np.clip([y * sy - offset, (y + h) * sy - offset], 0, image_size)
    return float(x0), float(y0), float(x1), float(y1)


def _decodable_with_boxes(split):
    """The examples of a file split that have a box and decode: (subset, their indices, file sizes)."""
    from PIL import Image

    boxes = getattr(split, "boxes", None)
    if boxes is None or not hasattr(split, "paths"):
        raise UserError(
            f"{split.name}: the pointing game needs object boxes; sources with boxes are demo, cub200 and fgvc_aircraft"
        )
    bad = set(pipeline.find_undecodable(split.paths))
    keep, sizes = [], []
    for i, path in enumerate(split.paths):
        if i in bad or not np.isfinite(boxes[i]).all():
            continue
        with Image.open(path) as image:
            sizes.append(image.size)
        keep.append(i)
    if not keep:
        raise UserError(f"{split.name}: no decodable image with a box")
    return split.subset(keep), keep, sizes


def _inside(row, col, box):
    x0, y0, x1, y1 = box
    return x0 <= col + 0.5 <= x1 and y0 <= row + 0.5 <= y1


def pointing_game(model, split, spec, *, batch_size=32, parts=None, part_names=()):
    """Pointing-game figures of a DCLModel on a split with boxes (see the module docstring).

    `spec` (a `specs.EvalSpec`) is the evaluation preprocessing the boxes go through too.

    `parts` (optional, float [E, P, 4] file boxes of the P `part_names` per
    example of `split`, NaN where absent) adds where the peaks fall: the
    share on each part, on any part, and the parts' mean share of the crop
    (what a peak drawn at random would score).
    """
    split, keep, sizes = _decodable_with_boxes(split)
    crop_bottom = getattr(split, "crop_bottom", 0)

    def to_crop(box, size):
        return crop_box(box, size, spec, crop_bottom=crop_bottom)

    boxes = [to_crop(b, s) for b, s in zip(split.boxes, sizes, strict=True)]
    part_boxes = None
    if parts is not None:
        part_boxes = [
            [to_crop(b, s) if np.isfinite(b).all() else None for b in parts[i]]
            for i, s in zip(keep, sizes, strict=True)
        ]
    ds = pipeline.eval_batches(split, spec, batch_size=batch_size, bad_files="strict")
    image_size = spec.image_size
    hits, correct, on_part, index = [], [], [], 0
    for images, labels in ds:
        labels = labels.numpy()
        maps = upsample(class_activation_maps(model, images.numpy(), labels), image_size)
        _, logits = features_and_logits(model, images.numpy())
        for cam, label, logit in zip(maps, labels, logits, strict=True):
            row, col = np.unravel_index(np.argmax(cam), cam.shape)
            hits.append(_inside(row, col, boxes[index]))
            correct.append(int(np.argmax(logit)) == int(label))
            if part_boxes is not None:
                on_part.append([b is not None and _inside(row, col, b) for b in part_boxes[index]])
            index += 1
    centre = image_size / 2
    centre_hits = [x0 <= centre <= x1 and y0 <= centre <= y1 for x0, y0, x1, y1 in boxes]
    hits, correct = np.asarray(hits), np.asarray(correct)
    report = {
        "split_name": split.name,
        "num_images": int(len(hits)),
        "hit_rate": float(hits.mean()),
        "hit_rate_correctly_classified": float(hits[correct].mean()) if correct.any() else None,
        "centre_hit_rate": float(np.mean(centre_hits)),
        "mean_box_area_fraction": float(np.mean([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes]) / image_size**2),
    }
    if part_boxes is not None:
        on_part = np.asarray(on_part, bool)
        areas = [
            sum((b[2] - b[0]) * (b[3] - b[1]) for b in example if b is not None) / image_size**2
            for example in part_boxes
        ]
        report["part_hit_rate"] = float(on_part.any(axis=1).mean())
        report["part_hit_rate_by_part"] = {name: float(on_part[:, i].mean()) for i, name in enumerate(part_names)}
        report["mean_part_area_fraction"] = float(np.mean(areas))
    return report


def filter_responses(model, image, label, *, n, k, key):
    """Per-filter responses of one preprocessed image [S, S, 3] and its RCM-destructed copy.

    Returns a dict of numpy arrays over the K filters: r_original, r_destructed
    (r^k(I, c) and r^k(phi(I), c) for the true class c) and, for a model with
    the paper's 2-way discriminator, delta (else None).
    """
    import tensorflow as tf

    destructed, _ = rcm.region_confusion(tf.convert_to_tensor(image, tf.float32), key, n, k)
    pair = np.stack([np.asarray(image, np.float32), destructed.numpy()])
    features, _ = features_and_logits(model, pair)
    means = features.mean(axis=(1, 2))  # [2, K]
    kernel = ops.convert_to_numpy(model.get_layer(CLASSIFIER_LAYER).kernel)[:, int(label)]
    delta = None
    if getattr(model, "discriminator", "2way") == "2way" and DISCRIMINATOR in model.heads:
        theta = ops.convert_to_numpy(model.get_layer(DISCRIMINATOR_LAYER).kernel)  # [K, 2]: original, destructed.
        delta = means[0] * theta[:, ORIGINAL] - means[1] * theta[:, DESTRUCTED]
    return {"r_original": means[0] * kernel, "r_destructed": means[1] * kernel, "delta": delta}


SEAM_CONDITIONS = (
    "original",
    "destructed",
    "seams_only",
    "shifted_grid",
    "original_banded",
    "destructed_banded",
)


def _jitter_cells(image, n, shift, rng):
    """Each of the N x N cells refilled from its own place moved by up to `shift` px: seams, no layout change."""
    size = image.shape[0]
    padded = np.pad(image, ((shift, shift), (shift, shift), (0, 0)), mode="reflect")
    out = np.empty_like(image)
    edges = np.linspace(0, size, n + 1).round().astype(int)
    for i in range(n):
        for j in range(n):
            dy, dx = rng.integers(-shift, shift + 1, 2)
            y0, y1, x0, x1 = edges[i], edges[i + 1], edges[j], edges[j + 1]
            out[y0:y1, x0:x1] = padded[y0 + shift + dy : y1 + shift + dy, x0 + shift + dx : x1 + shift + dx]
    return out


def _band_grid(image, n, width):
    """The image with a band of `width` px either side of every inner cell boundary set to the image mean."""
    size = image.shape[0]
    out = image.copy()
    fill = image.mean(axis=(0, 1))
    for edge in np.linspace(0, size, n + 1).round().astype(int)[1:-1]:
        out[max(edge - width, 0) : edge + width, :] = fill
        out[:, max(edge - width, 0) : edge + width] = fill
    return out


def seam_probe(model, images, *, n, k, keys, seed=0, shift=None, band=None):
    """How the destruction discriminator decides: on RCM's layout change, or on the seams between regions?

    For preprocessed images [B, S, S, 3] (float, 0-255) and one uint32 RCM key
    per image, the share called "destructed" by a 2-way discriminator and its
    mean probability, under:

    * original, destructed: the training task (RCM with the run's N and k);
    * seams_only: every cell refilled from its own place shifted by up to
      `shift` px (default an eighth of a cell): seams at the grid lines, the
      layout unchanged;
    * shifted_grid: RCM on a grid moved by half a cell (seams where training
      never put them);
    * original_banded, destructed_banded: a band of `band` px (default a
      sixteenth of a cell, at least 1) either side of every grid line painted
      with the image mean on both, hiding the seams but not the layout.

    A discriminator that reads the layout separates the banded pair and
    ignores seams_only; one that reads seams calls seams_only destructed and
    cannot separate the banded pair.
    """
    import tensorflow as tf

    if DISCRIMINATOR not in getattr(model, "heads", ()) or getattr(model, "discriminator", "2way") != "2way":
        raise UserError("The seam probe needs a model with the paper's 2-way destruction discriminator.")
    images = np.asarray(images, np.float32)
    size = images.shape[1]
    cell = size / n
    shift = int(shift or max(1, round(cell / 8)))
    band = int(band or max(1, round(cell / 16)))
    rng = np.random.default_rng(seed)
    half = int(round(cell / 2))
    views = {name: [] for name in SEAM_CONDITIONS}
    for image, key in zip(images, keys, strict=True):
        destructed = rcm.region_confusion(tf.constant(image), key, n, k)[0].numpy()
        rolled = np.roll(image, (half, half), axis=(0, 1))
        shifted = np.roll(rcm.region_confusion(tf.constant(rolled), key, n, k)[0].numpy(), (-half, -half), (0, 1))
        views["original"].append(image)
        views["destructed"].append(destructed)
        views["seams_only"].append(_jitter_cells(image, n, shift, rng))
        views["shifted_grid"].append(shifted)
        views["original_banded"].append(_band_grid(image, n, band))
        views["destructed_banded"].append(_band_grid(destructed, n, band))
    report = {"n": n, "k": k, "shift_px": shift, "band_px": band, "num_images": int(len(images))}
    for name, batch in views.items():
        logits = ops.convert_to_numpy(ops.cast(model(np.stack(batch), training=False)[DISCRIMINATOR], "float32"))
        shifted_logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted_logits) / np.exp(shifted_logits).sum(axis=1, keepdims=True)
        report[name] = {
            "called_destructed": float(np.mean(np.argmax(logits, axis=1) == DESTRUCTED)),
            "mean_p_destructed": float(probs[:, DESTRUCTED].mean()),
        }
    report["banded_pair_accuracy"] = 0.5 * (
        1 - report["original_banded"]["called_destructed"] + report["destructed_banded"]["called_destructed"]
    )
    report["pair_accuracy"] = 0.5 * (
        1 - report["original"]["called_destructed"] + report["destructed"]["called_destructed"]
    )
    return report
