"""The three DCL losses (dcl-spec.md section 3): L = alpha L_cls + beta L_adv + gamma L_loc."""

import keras
from keras import ops

from dcl_keras.contract import ALIGNMENT, CLASSIFIER, DISCRIMINATOR

ALIGNMENT_REDUCTIONS = ("mean", "sum")


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


def dcl_losses(alignment_reduction="mean"):
    """The loss for each model output."""
    return {
        CLASSIFIER: keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="classification_loss"),
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
