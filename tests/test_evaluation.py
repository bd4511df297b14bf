"""Evaluation users expect: mean per-class accuracy, flip averaging, confused pairs, precise BN."""

import json

import keras
import numpy as np
import pytest

from dcl_keras import evaluation, training
from dcl_keras.data import datasets, specs
from dcl_keras.models import dcl

from helpers import tiny_dcl_model


def test_mean_class_accuracy_weights_every_class_equally():
    # Class 0: 8 images, all right; class 1: 2 images, none right. Top-1 0.8, mean per-class 0.5.
    labels = np.array([0] * 8 + [1] * 2)
    logits = np.zeros((10, 3), np.float32)
    logits[:8, 0] = 1.0
    logits[8:, 2] = 1.0
    report = evaluation.classification_report(logits, labels, ["a", "b", "c"])
    assert report["top1"] == pytest.approx(0.8)
    assert report["mean_class_accuracy"] == pytest.approx(0.5)  # Class c is absent from the split: not counted.


def test_confused_pairs_are_ranked_by_mistakes_in_both_directions():
    confusion = np.array([[5, 1, 0, 0], [2, 4, 0, 0], [0, 0, 3, 4], [0, 0, 0, 6]])
    pairs = evaluation.confused_pairs(confusion, list("abcd"), top=3)
    assert pairs == [(2, 3, 4, 0), (0, 1, 1, 2)]  # Pairs without a mistake are left out.


def test_attribute_accuracy_counts_a_prediction_right_on_each_attribute_it_shares_with_the_truth():
    names = ["crest_spike-tail_fan", "crest_spike-tail_fork", "crest_none-tail_fan", "crest_none-tail_fork"]
    # Every image is taken for its tail twin (fan <-> fork): crest always right, tail always wrong.
    confusion = np.array([[0, 3, 0, 0], [2, 0, 0, 0], [0, 0, 0, 1], [0, 0, 4, 0]])
    accuracy = evaluation.attribute_accuracy(confusion, names)
    assert accuracy["crest"] == {"accuracy": 1.0, "chance": 0.5}
    assert accuracy["tail"] == {"accuracy": 0.0, "chance": 0.5}
    # Class 0's 3 images: one right, one taken for a spike-crested fork (tail wrong), one for a bare fan (crest wrong).
    confusion = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    accuracy = evaluation.attribute_accuracy(confusion, names)
    assert accuracy["crest"]["accuracy"] == pytest.approx(2 / 3) and accuracy["tail"]["accuracy"] == pytest.approx(
        2 / 3
    )
    # Uneven classes: images count, not classes; chance weighs each true class by its images.
    uneven = ["a_x-b_p", "a_x-b_q", "a_y-b_p"]
    counts = np.array([[2, 1, 1], [0, 0, 2], [1, 0, 0]])  # 4, 2 and 1 images.
    accuracy = evaluation.attribute_accuracy(counts, uneven)
    assert accuracy["a"]["accuracy"] == pytest.approx(3 / 7) and accuracy["a"]["chance"] == pytest.approx(13 / 21)
    assert accuracy["b"]["accuracy"] == pytest.approx(4 / 7) and accuracy["b"]["chance"] == pytest.approx(4 / 7)
    # Names that are not attribute combinations, or not all the same attributes: no table.
    assert evaluation.attribute_accuracy(np.eye(2), ["Boeing 707-320", "Airbus A320"]) is None
    assert evaluation.attribute_accuracy(np.eye(2), ["crest_spike-tail_fan", "crest_none-wing_dots"]) is None
    assert evaluation.attribute_accuracy(np.eye(2), ["001.Black_footed_Albatross", "002.Laysan_Albatross"]) is None
    # An attribute shared by every class is always right and says nothing: left out.
    assert set(evaluation.attribute_accuracy(confusion, [n.replace("crest_none", "crest_spike") for n in names])) == {
        "tail"
    }


class _Mirror(keras.layers.Layer):
    """Logits that tell a left-bright image from a right-bright one: [mean(left) - mean(right), opposite]."""

    def call(self, x):
        half = x.shape[2] // 2
        d = keras.ops.mean(x[:, :, :half], axis=(1, 2, 3)) - keras.ops.mean(x[:, :, half:], axis=(1, 2, 3))
        return keras.ops.stack([d, -d], axis=1)


def test_flip_averages_each_image_with_its_mirror(tiny_config):
    split = datasets.load_splits(tiny_config.data).test
    inputs = keras.Input((32, 32, 3))
    classifier = keras.Model(inputs, _Mirror()(inputs))
    plain, _ = evaluation.predict_logits(classifier, split, specs.EvalSpec(32, 40))
    flipped, _ = evaluation.predict_logits(classifier, split, specs.EvalSpec(32, 40), flip=True)
    assert np.abs(plain).max() > 0.1  # The images are not symmetric ...
    np.testing.assert_allclose(flipped, 0.0, atol=1e-4)  # ... and this model's logits cancel with the mirror's.


@pytest.mark.backend_agnostic
def test_precise_batchnorm_sets_the_average_of_the_batch_statistics():
    inputs = keras.Input((4,))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, bn(inputs))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 1.0, (16, 4)).astype("float32") for loc in (0.0, 2.0, 4.0)]
    assert evaluation.precise_batchnorm(model, iter(batches)) == 1
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean), np.mean([b.mean(0) for b in batches], 0), atol=1e-5
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance), np.mean([b.var(0) for b in batches], 0), atol=1e-4
    )
    assert bn.momentum == 0.99  # Restored.
    group_norm = dcl.classifier_model(tiny_dcl_model(32, n=4, classes=3, norm="group"))
    assert evaluation.precise_batchnorm(group_norm, iter([np.zeros((2, 32, 32, 3), "float32")])) == 0


def test_training_with_precise_bn_and_flip_reports_both_and_draws_the_confused_pairs(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.train.epochs = 1
    config.export.enabled = False
    config.eval.flip = True
    config.eval.precise_bn_batches = 2
    result = training.train_and_evaluate(config, str(tmp_path))
    report = json.load(open(tmp_path / "evaluation.json"))
    assert report["flip"] is True and report["top1"] == result["evaluation"]["top1"]
    before = report["before_precise_bn"]
    assert before["batchnorm_layers"] > 0 and {"top1", "mean_class_accuracy"} <= set(before)
    assert (tmp_path / "confused_pairs.png").stat().st_size > 1000
    assert all(len(pair["classes"]) == 2 for pair in report["most_confused_pairs"])
    # The demo's classes are attribute combinations: each attribute is at least as often right as the whole class.
    # Its first 4 classes share the crest (none), so only wing and tail are reported.
    attributes = report["attribute_accuracy"]
    assert set(attributes) == {"wing", "tail"}
    assert all(report["top1"] <= a["accuracy"] <= 1 and 0 < a["chance"] < 1 for a in attributes.values())
    # The saved model carries the re-estimated statistics (not the checkpoint's): evaluating it gives the report.
    from dcl_keras.saving import load_model

    def moving_means(model):
        return np.concatenate(
            [keras.ops.convert_to_numpy(v).ravel() for v in model.weights if v.path.endswith("moving_mean")]
        )

    trained = moving_means(load_model(str(tmp_path / "checkpoints" / "latest.keras")))
    assert np.abs(moving_means(load_model(str(tmp_path / "model.keras"))) - trained).max() > 1e-4

    split = datasets.load_splits(config.data).test
    logits, labels = evaluation.predict_logits(
        dcl.classifier_model(load_model(str(tmp_path / "model.keras"))), split, specs.EvalSpec(32, 40), flip=True
    )
    assert float(np.mean(np.argmax(logits, 1) == labels)) == pytest.approx(report["top1"])


@pytest.mark.slow
def test_bin_evaluate_re_estimates_bn_without_touching_the_saved_model(tiny_config, tmp_path):
    from helpers import run_bin

    config = tiny_config.copy_and_resolve_references()
    config.train.epochs = 1
    config.export.enabled = False
    result = training.train_and_evaluate(config, str(tmp_path / "run"))
    saved = (tmp_path / "run" / "model.keras").read_bytes()
    done = run_bin(
        "evaluate", f"--workdir={tmp_path / 'run'}", "--precise_bn_batches=2", f"--out_dir={tmp_path / 'pbn'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.load(open(tmp_path / "pbn" / "evaluation.json"))
    assert report["before_precise_bn"]["top1"] == pytest.approx(result["evaluation"]["top1"])
    assert report["before_precise_bn"]["batchnorm_layers"] > 0 and "before precise BN" in done.stdout
    assert (tmp_path / "run" / "model.keras").read_bytes() == saved
