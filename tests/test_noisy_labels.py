"""Noisy and long-tailed catalogues: the study options on the data, and training with the robust losses."""

import numpy as np
import pytest

from dcl_keras import losses, training
from dcl_keras.config import ConfigError, validate_config
from dcl_keras.data import datasets, readers
from dcl_keras.errors import UserError


def _split(per_class=(10, 10, 10, 10)):
    labels = [c for c, n in enumerate(per_class) for _ in range(n)]
    paths = [f"/data/{c}/{i}.jpg" for i, c in enumerate(labels)]
    return readers.FileSplit(paths, labels, [f"c{c}" for c in range(len(per_class))], name="toy")


def test_label_noise_flips_exactly_that_share_to_other_classes_with_a_seed():
    split = _split()
    noisy = datasets.flip_labels(split, 0.25, seed=3)
    changed = np.flatnonzero(np.array(noisy.labels) != np.array(split.labels))
    assert len(changed) == 10 and noisy.paths == split.paths  # round(0.25 x 40), every one to another class.
    assert datasets.flip_labels(split, 0.25, seed=3).labels == noisy.labels
    assert datasets.flip_labels(split, 0.25, seed=4).labels != noisy.labels
    assert "0.25 of the labels flipped" in noisy.name


def test_long_tail_keeps_an_exponential_profile_of_each_class():
    split = _split((12, 20, 20, 20))
    tail = datasets.long_tail(split, 8.0, seed=0)
    sizes = np.bincount(tail.labels, minlength=4)
    np.testing.assert_array_equal(sizes, [12, 6, 3, 1])  # 12 x 8^(-c/3), floored, at least one.
    assert set(tail.paths) <= set(split.paths)
    assert datasets.long_tail(split, 8.0, seed=0).paths == tail.paths


def test_the_study_options_are_checked_and_refused_where_they_cannot_apply(tiny_config):
    config = tiny_config.copy_and_resolve_references()
    config.data.label_noise = 1.0
    with pytest.raises(ConfigError, match="data.label_noise"):
        validate_config(config)
    config = tiny_config.copy_and_resolve_references()
    config.loss.classification = "gce"
    config.loss.label_smoothing = 0.1
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        validate_config(config)
    config = tiny_config.copy_and_resolve_references()
    config.data.source, config.data.tfds_name, config.data.label_noise = "tfds", "cars196", 0.2
    with pytest.raises(ConfigError, match="need a file-based source"):
        validate_config(config)
    with pytest.raises(UserError, match="file-based sources"):  # Also when the splits are loaded directly.
        datasets.load_splits(config.data)


def test_training_with_noisy_long_tailed_labels_gce_and_class_weights_resumes(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.data.label_noise = 0.25
    config.data.long_tail_ratio = 3.0
    config.loss.classification = "gce"
    config.loss.class_balance_beta = 0.99
    config.train.epochs = 1
    config.export.enabled = False
    first = training.train_and_evaluate(config, str(tmp_path))
    assert first["evaluation"]["num_examples"] == 12  # The test split is untouched.
    config.train.epochs = 2
    training.train_and_evaluate(config, str(tmp_path))  # Resumes: the loss is rebuilt with the class weights.
    model = training.saving.load_model(str(tmp_path / "model.keras"))
    loss = model.loss["classifier"] if isinstance(model.loss, dict) else None
    assert isinstance(loss, losses.ClassificationLoss) and loss.kind == "gce"
    splits = datasets.load_splits(config.data)
    counts = training.split_class_counts(splits.train)
    assert sum(counts) == 14  # 6, 4, 2, 2 kept of 6 per class (ratio 3); then a quarter relabelled.
    assert loss.class_weights == pytest.approx(losses.class_balanced_weights(counts, 0.99))
