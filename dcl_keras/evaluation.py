"""Evaluation of the classifier on originals: top-1/top-5, per-class accuracy, confusion matrix."""

import json
import os

import numpy as np

from dcl_keras.data import pipeline
from dcl_keras.errors import UserError


def predict_logits(classifier, split, *, image_size, resize_size, batch_size=32, bad_files="skip"):
    """(logits [E, C], labels [E]) over a split with the evaluation preprocessing."""
    ds = pipeline.eval_batches(
        split, batch_size=batch_size, image_size=image_size, resize_size=resize_size, bad_files=bad_files
    )
    logits, labels = [], []
    for images, batch_labels in ds:
        logits.append(np.asarray(classifier.predict_on_batch(images.numpy())))
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
    return {
        "num_examples": int(len(labels)),
        "top1": top1,
        f"top{k}": top5,
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
    }


def plot_confusion_matrix(confusion, class_names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion, np.float64)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = min(4 + 0.25 * n, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=6)
        ax.set_yticks(range(n), class_names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(
    classifier,
    split,
    *,
    image_size,
    resize_size,
    batch_size=32,
    class_names=None,
    out_dir=None,
    bad_files="skip",
    split_role="test",
):
    """Evaluates a classifier model on a split; writes evaluation.json and confusion_matrix.png to out_dir.

    The report names the split: `split` is its role ("test" or "val") and
    `split_name` the dataset split it was read from.
    """
    class_names = list(class_names or split.class_names)
    logits, labels = predict_logits(
        classifier, split, image_size=image_size, resize_size=resize_size, batch_size=batch_size, bad_files=bad_files
    )
    report = {"split": split_role, "split_name": split.name, **classification_report(logits, labels, class_names)}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        report["report_path"] = os.path.join(out_dir, "evaluation.json")
        report["confusion_matrix_png"] = os.path.join(out_dir, "confusion_matrix.png")
        with open(report["report_path"], "w") as f:
            json.dump(report, f, indent=2)
        plot_confusion_matrix(report["confusion_matrix"], class_names, report["confusion_matrix_png"])
    return report
