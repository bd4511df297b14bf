"""The three-output DCL model: shapes, the paper's parameter count, serialization, metrics."""

import keras
import numpy as np
import pytest

from dcl_keras import losses
from dcl_keras.models import backbones, dcl
from dcl_keras.models.layers import AdaptiveAveragePooling2D, PixelNormalization
from dcl_keras.saving import load_model

from helpers import tiny_dcl_model

pytestmark = pytest.mark.backend_agnostic  # Also run under KERAS_BACKEND=jax.


def _tiny_model(image_size=56, n=7, classes=3, **kwargs):
    return tiny_dcl_model(image_size, n, classes, **kwargs)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_output_shapes_for_any_n_even_when_the_map_is_not_divisible(n):
    model = _tiny_model(56, n)  # Feature map 7 x 7: not divisible by 2 or 3.
    out = model(np.zeros((2, 56, 56, 3), "float32"))
    assert set(out) == {"classifier", "destruction_discriminator", "region_alignment"}
    assert tuple(out["classifier"].shape) == (2, 3)
    assert tuple(out["destruction_discriminator"].shape) == (2, 2)
    assert tuple(out["region_alignment"].shape) == (2, n, n, 2)
    assert np.all(keras.ops.convert_to_numpy(out["region_alignment"]) >= 0)  # ReLU.


def _reference_adaptive_pool(x, n):
    b, h, w, c = x.shape
    out = np.zeros((b, n, n, c))
    for i in range(n):
        r0, r1 = (i * h) // n, -((-(i + 1) * h) // n)
        for j in range(n):
            c0, c1 = (j * w) // n, -((-(j + 1) * w) // n)
            out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("h,w,n", [(7, 7, 2), (7, 7, 3), (14, 14, 7), (5, 9, 4), (8, 8, 8)])
def test_adaptive_pooling_matches_pytorch_bins(h, w, n):
    x = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(AdaptiveAveragePooling2D(n)(x))
    np.testing.assert_allclose(out, _reference_adaptive_pool(x, n), rtol=1e-5, atol=1e-6)


def test_resnet50_heads_add_8192_parameters_as_in_the_paper():
    backbone = backbones.build_backbone("resnet50", 64, weights="none")
    model = dcl.DCLModel(backbone, 200, 7)
    classifier_params = 2048 * 200 + 200
    assert model.count_params() - backbone.count_params() - classifier_params == 8192
    exported = dcl.classifier_model(model)
    assert exported.count_params() == backbone.count_params() + classifier_params


def test_classifier_model_shares_weights_and_drops_the_heads():
    model = _tiny_model()
    classifier = dcl.classifier_model(model)
    names = {v.path.split("/")[0] for v in classifier.weights}
    assert "destruction_discriminator" not in names and "region_alignment_conv" not in names
    x = np.random.default_rng(1).uniform(0, 255, (2, 56, 56, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(classifier(x)), keras.ops.convert_to_numpy(model(x)["classifier"]), atol=1e-6
    )


def test_embedding_model_is_the_unit_length_pooled_feature_of_the_model_and_of_its_classifier():
    model = _tiny_model()
    x = np.random.default_rng(2).uniform(0, 255, (3, 56, 56, 3)).astype("float32")
    pooled = keras.Model(model.input, model.get_layer("pooled_features").output)(x)
    pooled = keras.ops.convert_to_numpy(pooled)
    for source in (model, dcl.classifier_model(model)):
        embedding = keras.ops.convert_to_numpy(dcl.embedding_model(source)(x))
        assert embedding.shape == (3, pooled.shape[-1]) and embedding.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(embedding, axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(embedding, pooled / np.linalg.norm(pooled, axis=-1, keepdims=True), atol=1e-5)


def test_embedding_model_refuses_a_model_without_the_pooled_layer():
    plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)], name="not_dcl")
    with pytest.raises(ValueError, match="not_dcl.*pooled_features"):
        dcl.embedding_model(plain)


def test_pixel_normalization_refuses_an_unknown_mode():
    # Config and .keras file round trips of every layer and model: tests/test_saving.py.
    with pytest.raises(ValueError, match="mode='bgr'"):
        PixelNormalization("bgr")


def test_classification_metrics_count_originals_only():
    model = _tiny_model(classes=3, n=7)
    model.compile(loss=losses.dcl_losses(), weighted_metrics=losses.dcl_metrics(3))
    labels = np.array([0, 0, 1, 1])
    is_destructed = np.array([0, 1, 0, 1])
    logits = np.full((4, 3), -5.0, "float32")
    logits[[0, 2], labels[[0, 2]]] = 5.0  # Originals right.
    logits[[1, 3], 2] = 5.0  # Destructed copies wrong.
    y = {
        "classifier": labels,
        "destruction_discriminator": is_destructed,
        "region_alignment": np.zeros((4, 7, 7, 2), "float32"),
    }
    y_pred = {
        "classifier": logits,
        "destruction_discriminator": np.zeros((4, 2), "float32"),
        "region_alignment": np.zeros((4, 7, 7, 2), "float32"),
    }
    model.build((None, 56, 56, 3))
    model.compute_metrics(None, y, y_pred)  # Builds the compile metrics.
    for m in model.metrics:
        m.reset_state()
    results = model.compute_metrics(None, y, y_pred)
    assert float(results["classifier_top1"]) == pytest.approx(1.0)
    assert float(results["destruction_discriminator_accuracy"]) == pytest.approx(0.5)


def test_the_model_implements_the_contract_outputs_and_head_layers():
    from dcl_keras import contract

    model = _tiny_model()
    assert set(model.output) == set(contract.OUTPUTS) == set(model.heads)
    for name in contract.HEAD_LAYERS:  # The layers the optimizer gives the head learning rate.
        assert model.get_layer(name).trainable_weights, name


def test_the_plain_baseline_has_the_classifier_and_nothing_else():
    model = _tiny_model(discriminator="none", alignment=False)
    assert model.heads == ("classifier",) and set(model.output) == {"classifier"}
    assert model.count_params() == dcl.classifier_model(model).count_params()
    names = {v.path.split("/")[0] for v in model.weights}
    assert not names & {"destruction_discriminator", "region_alignment_conv"}
    full = _tiny_model()
    assert full.count_params() > model.count_params()
    y = {
        "classifier": np.array([0, 1]),
        "destruction_discriminator": np.array([0, 1]),
        "region_alignment": np.zeros((2, 7, 7, 2), "float32"),
    }
    assert set(model.loss_targets(y)) == {"classifier"}


def test_only_the_discriminator_or_only_the_alignment_head():
    discriminator_only = _tiny_model(alignment=False)
    alignment_only = _tiny_model(discriminator="none")
    assert discriminator_only.heads == ("classifier", "destruction_discriminator")
    assert alignment_only.heads == ("classifier", "region_alignment")


def test_2c_discriminator_targets_class_times_destruction_and_stays_out_of_the_classifier(tmp_path):
    classes = 3
    model = _tiny_model(classes=classes, discriminator="2c")
    x = np.random.default_rng(3).uniform(0, 255, (4, 56, 56, 3)).astype("float32")
    assert tuple(model(x)["destruction_discriminator"].shape) == (4, 2 * classes)
    y = {
        "classifier": np.array([0, 2, 1, 2]),
        "destruction_discriminator": np.array([0, 0, 1, 1]),
        "region_alignment": np.zeros((4, 7, 7, 2), "float32"),
    }
    targets = model.loss_targets(y)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(targets["destruction_discriminator"]), [0, 2, 4, 5])
    # The 2C head is trained, never used for classification: the classifier has the 2-way model's parameters.
    assert (
        dcl.classifier_model(model).count_params() == dcl.classifier_model(_tiny_model(classes=classes)).count_params()
    )
    model.save(str(tmp_path / "m.keras"))
    assert load_model(str(tmp_path / "m.keras")).discriminator == "2c"
    with pytest.raises(ValueError, match="discriminator"):
        _tiny_model(discriminator="3way")


def _loss_batch(classes=3, n=7):
    y = {
        "classifier": np.array([0, 2, 1, 1]),
        "destruction_discriminator": np.array([0, 1, 0, 1]),
        "region_alignment": np.full((4, n, n, 2), 0.5, "float32"),
    }
    y_pred = {
        "classifier": np.random.default_rng(5).normal(size=(4, classes)).astype("float32"),
        "destruction_discriminator": np.zeros((4, 2), "float32"),
        "region_alignment": np.zeros((4, n, n, 2), "float32"),
    }
    return y, y_pred


@pytest.mark.parametrize("alpha", [0.0, 0.25])
def test_destructed_alpha_weighs_only_the_destructed_views_classification(alpha):
    y, y_pred = _loss_batch()
    logits = y_pred["classifier"]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -log_probs[np.arange(4), y["classifier"]]
    weighted = (ce[0] + ce[2] + alpha * (ce[1] + ce[3])) / 4  # Still divided by all 4 images of the batch.
    expected = weighted + np.log(2.0) + 0.5  # + the discriminator's CE at zero logits + the mean L1 of 0.5.
    for destructed_alpha, want in ((1.0, ce.mean() + np.log(2.0) + 0.5), (alpha, expected)):
        model = _tiny_model(destructed_alpha=destructed_alpha)
        model.compile(loss=losses.dcl_losses(), loss_weights=losses.loss_weights())
        model.build((None, 56, 56, 3))
        loss = float(keras.ops.convert_to_numpy(model.compute_loss(None, y, y_pred)))
        assert loss == pytest.approx(float(want), rel=1e-5), destructed_alpha


def test_destructed_alpha_composes_with_sample_weights_and_round_trips(tmp_path):
    weights = dcl.destructed_views_weights(_loss_batch()[0], 0.0, np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights["classifier"]), [1.0, 0.0, 3.0, 0.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights["region_alignment"]), [1.0, 2.0, 3.0, 4.0])
    assert dcl.destructed_views_weights(_loss_batch()[0], 1.0, None) is None  # The paper's loss, untouched.
    model = _tiny_model(destructed_alpha=0.0)
    model.save(str(tmp_path / "m.keras"))
    assert load_model(str(tmp_path / "m.keras")).destructed_alpha == 0.0
    with pytest.raises(ValueError, match="destructed_alpha"):
        _tiny_model(destructed_alpha=-1.0)


def test_destructed_alpha_applies_with_rcm_on_the_device():
    from dcl_keras.models.region_confusion import RegionConfusion

    x = np.random.default_rng(7).uniform(0, 255, (2, 56, 56, 3)).astype("float32")
    labels = np.array([2, 0])
    keys = np.array([11, 12], "uint32")
    losses_of, first = {}, None
    for alpha in (1.0, 0.0):
        model = _tiny_model(destructed_alpha=alpha)
        if first is None:
            first = model
        model.set_weights(first.get_weights())  # The same weights, so only the loss's terms differ.
        trainer = dcl.DeviceRCMTrainer(model, RegionConfusion(7, 2, seed=0))
        trainer.compile(loss=losses.dcl_losses(), loss_weights=losses.loss_weights())
        y_pred = trainer({"images": x, "rcm_keys": keys}, training=False)  # Builds; originals only.
        y_pred = trainer({"images": x, "rcm_keys": keys}, training=True)
        targets = trainer._targets(labels, y_pred)
        # The same loss as the model's own on the views the device built.
        model.compile(loss=losses.dcl_losses(), loss_weights=losses.loss_weights())
        want = model.compute_loss(None, targets, y_pred["outputs"])
        got = trainer.compute_loss({"images": x, "rcm_keys": keys}, labels, y_pred)
        losses_of[alpha] = float(keras.ops.convert_to_numpy(got))
        assert losses_of[alpha] == pytest.approx(float(keras.ops.convert_to_numpy(want)), rel=1e-6)
    assert losses_of[0.0] < losses_of[1.0]  # The destructed views' classification terms are gone.
