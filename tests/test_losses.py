"""Each DCL loss checked by hand on a tiny batch with a known answer."""

import math

import keras
import numpy as np
import pytest

from dcl_keras import losses

from helpers import tiny_dcl_model

pytestmark = pytest.mark.backend_agnostic  # Also run under KERAS_BACKEND=jax.


def test_region_alignment_loss_sum_and_mean_by_hand():
    y_true = np.zeros((2, 2, 2, 2), "float32")
    y_pred = np.zeros((2, 2, 2, 2), "float32")
    y_pred[0, 0, 0, 0] = 0.5  # Image 0: one error of 0.5.
    y_pred[1] = 0.25  # Image 1: eight errors of 0.25.
    total = losses.RegionAlignmentLoss("sum")(y_true, y_pred)
    assert float(total) == pytest.approx((0.5 + 2.0) / 2)  # Summed per image, mean over images.
    mean = losses.RegionAlignmentLoss("mean")(y_true, y_pred)
    assert float(mean) == pytest.approx((0.5 / 8 + 0.25) / 2)
    # The default is the mean, the scale of the published numbers; the sum is 2 N^2 times larger.
    assert float(losses.RegionAlignmentLoss()(y_true, y_pred)) == pytest.approx(float(mean))
    assert losses.dcl_losses()["region_alignment"].cell_reduction == "mean"


def test_weighted_total_is_alpha_cls_plus_beta_adv_plus_gamma_loc():
    model = tiny_dcl_model(32, n=2, classes=2, width=4)
    model.compile(
        loss=losses.dcl_losses("sum"),
        loss_weights=losses.loss_weights(alpha=1.0, beta=2.0, gamma=0.5),
    )
    # Zero the three heads: uniform class and discriminator logits, zero alignment.
    for name in ("classifier", "destruction_discriminator", "region_alignment_conv"):
        layer = model.get_layer(name)
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = np.zeros((2, 32, 32, 3), "float32")
    y = {
        "classifier": np.array([0, 1]),
        "destruction_discriminator": np.array([0, 1]),
        "region_alignment": np.full((2, 2, 2, 2), 0.25, "float32"),
    }
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    cls, adv, loc = math.log(2), math.log(2), 8 * 0.25
    assert result["classifier_loss"] == pytest.approx(cls, rel=1e-5)
    assert result["destruction_discriminator_loss"] == pytest.approx(adv, rel=1e-5)
    assert result["region_alignment_loss"] == pytest.approx(loc, rel=1e-5)
    assert result["loss"] == pytest.approx(1.0 * cls + 2.0 * adv + 0.5 * loc, rel=1e-5)


def test_classification_cross_entropy_by_hand():
    loss = losses.dcl_losses()["classifier"]
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32"))
    expected = -(math.log(0.7) + math.log(0.8)) / 2
    assert float(keras.ops.convert_to_numpy(loss(np.array([0, 2]), logits))) == pytest.approx(expected, rel=1e-5)


def test_negative_weight_is_refused():
    with pytest.raises(ValueError, match="gamma=-1"):
        losses.loss_weights(gamma=-1)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]], "float32")
LABELS = np.array([0, 1, 2], "int32")


def test_classification_loss_without_options_is_cross_entropy():
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(LABELS, LOGITS)
    assert float(losses.ClassificationLoss()(LABELS, LOGITS)) == pytest.approx(float(plain), rel=1e-6)


def test_label_smoothing_and_generalized_cross_entropy_by_hand():
    log_p = _log_softmax(LOGITS.astype(np.float64))
    picked = log_p[np.arange(3), LABELS]
    smoothed = np.mean(-0.9 * picked - 0.1 * log_p.mean(axis=1))
    loss = losses.ClassificationLoss("cross_entropy", label_smoothing=0.1)
    assert float(loss(LABELS, LOGITS)) == pytest.approx(smoothed, rel=1e-5)
    gce = np.mean((1.0 - np.exp(0.7 * picked)) / 0.7)
    assert float(losses.ClassificationLoss("gce", q=0.7)(LABELS, LOGITS)) == pytest.approx(gce, rel=1e-5)
    # q = 1 is the mean absolute error 1 - p_y: bounded, so one mislabelled example weighs at most 1.
    mae = np.mean(1.0 - np.exp(picked))
    assert float(losses.ClassificationLoss("gce", q=1.0)(LABELS, LOGITS)) == pytest.approx(mae, rel=1e-5)


def test_class_weights_scale_each_example_and_balanced_weights_average_one():
    weights = losses.class_balanced_weights([100, 10, 1], beta=0.999)
    counts = np.array([100, 10, 1])
    assert np.dot(weights, counts) / counts.sum() == pytest.approx(1.0)
    assert weights[0] < weights[1] < weights[2]  # Rarer classes weigh more.
    assert losses.class_balanced_weights([5, 5, 0], beta=0.0) == [1.0, 1.0, 0.0]
    log_p = _log_softmax(LOGITS.astype(np.float64))
    per_example = -log_p[np.arange(3), LABELS]
    loss = losses.ClassificationLoss(class_weights=[1.0, 2.0, 0.5])
    assert float(loss(LABELS, LOGITS)) == pytest.approx(np.mean(per_example * [1.0, 2.0, 0.5]), rel=1e-5)
    restored = losses.ClassificationLoss.from_config(loss.get_config())
    assert float(restored(LABELS, LOGITS)) == pytest.approx(float(loss(LABELS, LOGITS)))
    with pytest.raises(ValueError, match="kind='focal'"):
        losses.ClassificationLoss("focal")
    with pytest.raises(ValueError, match="cross_entropy' only. Received: kind='gce', label_smoothing=0.1"):
        losses.ClassificationLoss("gce", label_smoothing=0.1)
