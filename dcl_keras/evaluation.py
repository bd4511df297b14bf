"""Evaluation of the classifier on originals.

Top-1/top-5, mean per-class accuracy, the confusion matrix, a gallery of the
most-confused class pairs and, for classes named as attribute combinations
(the demo's), the accuracy per attribute; optionally horizontal-flip test-time averaging and
BatchNorm statistics re-estimated on evaluation-preprocessed training images
("precise BN", `precise_batchnorm`).
"""

import functools
import os

import keras
import numpy as np

from dcl_keras import contract
from dcl_keras import workdir as run_folder
from dcl_keras.data import keyed_hash, pipeline, specs
from dcl_keras.errors import UserError
from dcl_keras.viz import figures


def predict_logits(classifier, split, spec, *, batch_size=32, bad_files="skip", flip=False):
    """(logits [E, C], labels [E]) over a split with the evaluation preprocessing of `spec` (a `specs.EvalSpec`).

    `flip` averages the logits of each image and its horizontal mirror.
    """
    ds = pipeline.eval_batches(split, spec, batch_size=batch_size, bad_files=bad_files)
    logits, labels = [], []
    for images, batch_labels in ds:
        images = images.numpy()
        batch_logits = np.asarray(classifier.predict_on_batch(images), np.float32)
        if flip:
            batch_logits = 0.5 * (
                batch_logits + np.asarray(classifier.predict_on_batch(images[:, :, ::-1]), np.float32)
            )
        logits.append(batch_logits)
        labels.append(batch_labels.numpy())
    if not logits:
        raise UserError(f"No decodable images to evaluate in {split.name}")
    return np.concatenate(logits), np.concatenate(labels)


def classification_report(logits, labels, class_names):
    num_classes = len(class_names)
    order = np.argsort(-logits, axis=1)
    top1 = float(np.mean(order[:, 0] == labels))
    k = min(5, num_classes)
    top5 = float(np.mean(np.any(order[:, :k] == labels[:, None], axis=1)))
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, order[:, 0]), 1)
    support = confusion.sum(axis=1)
    per_class = {
        name: (float(confusion[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)
    }
    present = [value for value in per_class.values() if value is not None]
    return {
        "num_examples": int(len(labels)),
        "top1": top1,
        f"top{k}": top5,
        "mean_class_accuracy": float(np.mean(present)),  # Over the classes present in the split.
        "per_class_accuracy": per_class,
        **confusion_fields(confusion),
        "class_names": list(class_names),
    }


DENSE_CONFUSION_MAX = 200  # Classes up to which evaluation.json holds the dense confusion matrix.


def confusion_fields(confusion):
    """The report's confusion matrix: dense rows up to DENSE_CONFUSION_MAX classes, else only its non-zero cells.

    A catalogue of 2,000 classes would otherwise write 4 million counts (36 MB
    of JSON) where at most one cell per test image is non-zero.
    """
    if len(confusion) <= DENSE_CONFUSION_MAX:
        return {"confusion_matrix": confusion.tolist()}
    true, predicted = np.nonzero(confusion)
    cells = np.stack([true, predicted, confusion[true, predicted]], axis=1)
    return {"confusion_matrix_cells": {"shape": list(confusion.shape), "true_predicted_count": cells.tolist()}}


def confusion_matrix(report):
    """The dense confusion matrix (rows: true class) of a report, from either of its forms."""
    if "confusion_matrix" in report:
        return np.asarray(report["confusion_matrix"], np.int64)
    sparse = report["confusion_matrix_cells"]
    confusion = np.zeros(sparse["shape"], np.int64)
    cells = np.asarray(sparse["true_predicted_count"], np.int64).reshape(-1, 3)
    confusion[cells[:, 0], cells[:, 1]] = cells[:, 2]
    return confusion


def parse_attributes(class_name):
    """{attribute: value} of a class named `attribute_value-attribute_value-...` (the demo's names), else None."""
    fields = [field.split("_", 1) for field in class_name.split("-")]
    if any(len(field) != 2 or not all(field) for field in fields):
        return None
    attributes = dict(fields)
    return attributes if len(attributes) == len(fields) else None


def attribute_accuracy(confusion, class_names):
    """Accuracy per attribute for classes that are combinations of attributes, from the confusion matrix.

    When every class name reads `attribute_value-attribute_value-...` with the
    same attributes (the demo's `crest_spike-wing_dots-tail_fan`), a prediction
    is right on an attribute when the predicted class has the true class's
    value, whatever the other attributes. This says which part a model has
    learned: on the demo, a model right on crest and wing but at chance on the
    tail scores about 0.5 top-1. `chance` is the same measure for predictions
    drawn uniformly from the classes. Returns {attribute: {"accuracy", "chance"}}
    for the attributes that vary between classes, or None when the names are
    not attribute combinations.
    """
    parsed = [parse_attributes(name) for name in class_names]
    if not parsed or any(p is None or p.keys() != parsed[0].keys() for p in parsed) or len(parsed[0]) < 2:
        return None
    confusion = np.asarray(confusion, np.float64)
    support = confusion.sum(axis=1)
    if support.sum() == 0:
        return None
    result = {}
    for attribute in parsed[0]:
        values = np.array([p[attribute] for p in parsed])
        if len(set(values)) < 2:  # The same for every class: always right, says nothing.
            continue
        same = values[:, None] == values[None, :]  # [true, predicted]: same value of this attribute.
        result[attribute] = {
            "accuracy": float((confusion * same).sum() / support.sum()),
            "chance": float((support * same.mean(axis=1)).sum() / support.sum()),
        }
    return result or None


def plot_confusion_matrix(confusion, class_names, path):
    """A PNG of the row-normalised confusion matrix; `path`, a file path or a binary file object."""
    confusion = np.asarray(confusion, np.float64)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = min(4 + 0.25 * n, 40)
    fig, ax = figures.figure(size, size)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=6)
        ax.set_yticks(range(n), class_names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (row-normalised)")
    figures.save_png(fig, path)


def confused_pairs(confusion, class_names, top=6):
    """The `top` most-confused class pairs: [(a, b, a taken for b, b taken for a)], most mistakes first."""
    confusion = np.asarray(confusion)
    mistakes = confusion + confusion.T
    np.fill_diagonal(mistakes, 0)
    a, b = np.triu_indices(len(class_names), k=1)
    order = np.argsort(-mistakes[a, b], kind="stable")
    return [
        (int(a[i]), int(b[i]), int(confusion[a[i], b[i]]), int(confusion[b[i], a[i]]))
        for i in order[:top]
        if mistakes[a[i], b[i]] > 0
    ]


def plot_confused_pairs(pairs, class_names, examples, path, per_side=3):
    """A PNG grid: one row per pair, images of a taken for b, then of b taken for a.

    `examples[(true, predicted)]` holds uint8 images of that kind; a side with
    no mistake shows correctly classified images of its class, so every row
    shows what both classes look like.
    """
    rows = max(len(pairs), 1)
    fig, axes = figures.figure(2 * per_side * 1.6, rows * 1.9, rows, 2 * per_side)
    for ax in axes.ravel():
        ax.axis("off")
    for row, (a, b, a_as_b, b_as_a) in enumerate(pairs):
        for side, (true, other, count) in enumerate(((a, b, a_as_b), (b, a, b_as_a))):
            images = examples.get((true, other), []) if count else examples.get((true, true), [])
            label = (
                f"{class_names[true]} as {class_names[other]} ({count})" if count else f"{class_names[true]} (right)"
            )
            for i, image in enumerate(images[:per_side]):
                ax = axes[row, side * per_side + i]
                ax.imshow(image)
                if i == 0:
                    ax.set_title(label, fontsize=7, loc="left")
    if not pairs:
        axes[0, 0].set_title("No confused pairs", fontsize=8, loc="left")
    fig.suptitle("Most-confused class pairs (test images)", fontsize=9)
    figures.save_png(fig, path)


def pair_examples(split, pairs, predictions, spec, *, bad_files="skip", per_side=3):
    """Images for `plot_confused_pairs`, from a second pass in the order `predictions` were made."""
    wanted = {}
    for a, b, _, _ in pairs:
        for key in ((a, b), (b, a), (a, a), (b, b)):
            wanted[key] = []
    ds = pipeline.eval_batches(split, spec, batch_size=64, bad_files=bad_files)
    index = 0
    for images, labels in ds:
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            key = (int(label), int(predictions[index]))
            if key in wanted and len(wanted[key]) < per_side:
                wanted[key].append(np.clip(image, 0, 255).astype(np.uint8))
            index += 1
    return wanted


def precise_batchnorm(model, batches):
    """Re-estimates every BatchNormalization layer's moving statistics as the average over `batches`.

    Each batch runs through `model` in training mode with the layer momentum
    set so that the moving mean and variance end as the plain average of the
    batch statistics (momentum i / (i + 1) at batch i), the "precise BN" of
    Wu & Johnson (2021). Only the moving statistics change. Returns the number
    of BatchNormalization layers (0: nothing to re-estimate, e.g. GroupNorm).
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for i, images in enumerate(batches):
            for layer in layers:
                layer.momentum = i / (i + 1)
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)


def headline(report):
    """The figures of a report worth comparing: top-k and mean per-class accuracy."""
    return {key: value for key, value in report.items() if key.startswith(("top", "mean_"))}


def precise_bn_for_config(classifier, train_split, config, num_batches=None):
    """`precise_batchnorm` over `eval.precise_bn_batches` (or `num_batches`) training batches of a run's config."""
    return precise_batchnorm(
        classifier,
        precise_bn_batches(
            train_split,
            specs.EvalSpec.from_config(config),
            seed=config.seed,
            num_batches=num_batches or config.eval.precise_bn_batches,
            batch_size=config.eval.batch_size,
            bad_files=config.data.bad_files,
        ),
    )


def precise_bn_batches(split, spec, *, seed, num_batches, batch_size, bad_files="skip"):
    """`num_batches` batches of training images with the evaluation preprocessing, in a seeded random order."""
    ds = pipeline.eval_batches(
        split,
        spec,
        batch_size=batch_size,
        bad_files=bad_files,
        order_key=keyed_hash.combine_keys(seed, contract.PRECISE_BN_EPOCH, contract.ORDER_POSITION),
    )
    return (images.numpy() for images, _ in ds.take(num_batches))


def evaluator(config, class_names, **overrides):
    """`evaluate` with a run config's preprocessing, batch size, bad-file policy and flip (`overrides` win)."""
    settings = dict(
        spec=specs.EvalSpec.from_config(config),
        batch_size=config.eval.batch_size,
        class_names=class_names,
        bad_files=config.data.bad_files,
        flip=config.eval.flip,
    )
    return functools.partial(evaluate, **{**settings, **overrides})


def evaluate(
    classifier,
    split,
    spec,
    *,
    batch_size=32,
    class_names=None,
    out_dir=None,
    bad_files="skip",
    split_role="test",
    flip=False,
    extra=None,
):
    """Evaluates a classifier model on a split; writes evaluation.json and two PNGs to out_dir.

    `spec` (a `specs.EvalSpec`) is the evaluation preprocessing.

    The report names the split: `split` is its role ("test", "val" or "train") and
    `split_name` the dataset split it was read from. `flip` averages each
    image with its mirror. `extra` adds fields to the report. The PNGs are the
    confusion matrix and a gallery of the most-confused pairs.
    """
    class_names = list(class_names or split.class_names)
    logits, labels = predict_logits(classifier, split, spec, batch_size=batch_size, bad_files=bad_files, flip=flip)
    report = {"split": split_role, "split_name": split.name, "flip": bool(flip)}
    report.update(classification_report(logits, labels, class_names), **(extra or {}))
    confusion = confusion_matrix(report)
    pairs = confused_pairs(confusion, class_names)
    report["most_confused_pairs"] = [
        {"classes": [class_names[a], class_names[b]], "a_as_b": ab, "b_as_a": ba} for a, b, ab, ba in pairs
    ]
    attributes = attribute_accuracy(confusion, class_names)
    if attributes:
        report["attribute_accuracy"] = attributes
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        report["report_path"] = os.path.join(out_dir, run_folder.EVALUATION)
        report["confusion_matrix_png"] = os.path.join(out_dir, run_folder.CONFUSION_MATRIX_PNG)
        report["confused_pairs_png"] = os.path.join(out_dir, run_folder.CONFUSED_PAIRS_PNG)
        plot_confusion_matrix(confusion, class_names, report["confusion_matrix_png"])
        examples = pair_examples(split, pairs, np.argmax(logits, axis=1), spec, bad_files=bad_files)
        plot_confused_pairs(pairs, class_names, examples, report["confused_pairs_png"])
        # Last and atomic: bin/sweep takes a complete evaluation.json for a finished run.
        run_folder.write_json(report["report_path"], report)
    return report
