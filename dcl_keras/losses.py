"""The three DCL losses (dcl-spec.md section 3): L = alpha L_cls + beta L_adv + gamma L_loc."""

import keras
from keras import ops

from dcl_keras.contract import ALIGNMENT, ALIGNMENT_REDUCTIONS, CLASSIFICATION_LOSSES, CLASSIFIER, DISCRIMINATOR


@keras.saving.register_keras_serializable(package="dcl_keras")
class RegionAlignmentLoss(keras.losses.Loss):
    """L1 distance between predicted and true source coordinates (construction loss).

    Per image, the absolute errors over the N x N cells and both coordinates
    are averaged ("mean", the reference code's nn.L1Loss, which produced every
    published number with gamma = 1 on CUB and 0.01 on Cars and Aircraft) or
    summed ("sum", L_loc as the paper writes it: 2 N^2 times larger, 98x at
    N = 7, so the same gamma means a far heavier construction term). The batch
    takes the mean over images.

    Args:
        cell_reduction: "mean" or "sum".
    """

    def __init__(self, cell_reduction="mean", name="region_alignment_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if cell_reduction not in ALIGNMENT_REDUCTIONS:
            raise ValueError(
                f"`cell_reduction` must be one of {ALIGNMENT_REDUCTIONS}. Received: cell_reduction={cell_reduction!r}"
            )
        self.cell_reduction = cell_reduction

    def call(self, y_true, y_pred):
        error = ops.abs(ops.cast(y_pred, "float32") - ops.cast(y_true, "float32"))
        reduce = ops.sum if self.cell_reduction == "sum" else ops.mean
        return reduce(error, axis=(1, 2, 3))

    def get_config(self):
        return {**super().get_config(), "cell_reduction": self.cell_reduction}


@keras.saving.register_keras_serializable(package="dcl_keras")
class ClassificationLoss(keras.losses.Loss):
    """Classification loss from logits for noisy or long-tailed labels.

    * "cross_entropy" with `label_smoothing` e: (1 - e) x the cross entropy
      of the label + e x the mean cross entropy over all classes (Szegedy et
      al., 2016).
    * "gce", generalized cross entropy (Zhang and Sabuncu, NeurIPS 2018):
      (1 - p_y^q) / q, which goes from cross entropy (q -> 0) to the
      noise-robust mean absolute error (q = 1); the paper's q = 0.7 by default.

    `class_weights` (one per class, or None) multiplies each example's loss by
    its class's weight (re-weighting for long tails; see
    `class_balanced_weights`).
    """

    def __init__(
        self,
        kind="cross_entropy",
        label_smoothing=0.0,
        q=0.7,
        class_weights=None,
        name="classification_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if kind not in CLASSIFICATION_LOSSES:
            raise ValueError(f"`kind` must be one of {CLASSIFICATION_LOSSES}. Received: kind={kind!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing!r}")
        if not 0.0 < q <= 1.0:
            raise ValueError(f"`q` must be in (0, 1]. Received: q={q!r}")
        if kind == "gce" and label_smoothing:
            raise ValueError(
                f"`label_smoothing` applies to kind='cross_entropy' only. Received: kind={kind!r}, "
                f"label_smoothing={label_smoothing!r}"
            )
        self.kind = kind
        self.label_smoothing = float(label_smoothing)
        self.q = float(q)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        picked = ops.take_along_axis(log_probs, ops.expand_dims(labels, -1), axis=-1)[:, 0]
        if self.kind == "gce":
            loss = (1.0 - ops.exp(self.q * picked)) / self.q
        else:
            loss = -(1.0 - self.label_smoothing) * picked - self.label_smoothing * ops.mean(log_probs, axis=-1)
        if self.class_weights is not None:
            loss = loss * ops.take(ops.convert_to_tensor(self.class_weights, "float32"), labels)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "label_smoothing": self.label_smoothing,
            "q": self.q,
            "class_weights": self.class_weights,
        }


def class_balanced_weights(class_counts, beta=0.999):
    """Per-class weights from the effective number of samples (Cui et al., CVPR 2019).

    w_c proportional to (1 - beta) / (1 - beta^n_c): beta = 0 weighs every
    class alike, beta -> 1 approaches inverse class frequency. Normalised so
    that the mean weight over the training examples is 1 (the loss keeps its
    scale). Classes without examples get weight 0.
    """
    import numpy as np

    counts = np.asarray(class_counts, np.float64)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"`beta` must be in [0, 1). Received: beta={beta!r}")
    effective = (1.0 - np.power(beta, counts)) / (1.0 - beta) if beta > 0 else np.minimum(counts, 1.0)
    weights = np.where(counts > 0, 1.0 / np.maximum(effective, 1e-12), 0.0)
    weights *= counts.sum() / max(float((weights * counts).sum()), 1e-12)
    return weights.tolist()


def dcl_losses(alignment_reduction="mean", classification=None):
    """The loss for each model output; `classification` replaces plain cross entropy (a ClassificationLoss)."""
    return {
        CLASSIFIER: classification
        or keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="classification_loss"),
        DISCRIMINATOR: keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="adversarial_loss"),
        ALIGNMENT: RegionAlignmentLoss(alignment_reduction),
    }


def loss_weights(alpha=1.0, beta=1.0, gamma=1.0):
    """alpha, beta, gamma of the paper as Keras `loss_weights`."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value < 0:
            raise ValueError(f"Loss weight `{name}` must be >= 0. Received: {name}={value}")
    return {CLASSIFIER: float(alpha), DISCRIMINATOR: float(beta), ALIGNMENT: float(gamma)}


def dcl_metrics(num_classes):
    """Metrics per output. Classification ones count originals only (see DCLModel)."""
    return {
        CLASSIFIER: [
            keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name=f"top{min(5, num_classes)}"),
        ],
        DISCRIMINATOR: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        ALIGNMENT: [keras.metrics.MeanAbsoluteError(name="error")],
    }
