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
