"""bin/train end to end on the tiny config: outputs, resume, config errors before training."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from dcl_keras import losses, training
from dcl_keras.config import ConfigError
from dcl_keras.data import datasets, readers
from dcl_keras.models import dcl
from dcl_keras.saving import load_model

from helpers import run_bin


def _overrides(config):
    return [
        f"--config.data.demo.cache_dir={config.data.demo.cache_dir}",
        f"--config.data.demo.train_per_class={config.data.demo.train_per_class}",
        f"--config.data.demo.test_per_class={config.data.demo.test_per_class}",
    ]


def test_validation_without_a_validation_split_is_refused(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.train.validation_freq = 1
    with pytest.raises(ConfigError, match="train.validation_freq.*data.val_fraction"):
        training.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints" / "latest.keras").exists()


def test_missing_dataset_path_fails_before_training(tmp_path):
    result = run_bin(
        "train",
        "--config=configs/cub_resnet50.py:root=/nonexistent/CUB_200_2011",
        f"--workdir={tmp_path / 'wd'}",
    )
    assert result.returncode == 2
    assert "data.root" in result.stderr and "/nonexistent/CUB_200_2011" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "wd" / "checkpoints" / "latest.keras")


def test_bad_override_is_reported_by_name(tmp_path):
    result = run_bin("train", "--config=configs/tiny.py", "--config.rcm.k=9", f"--workdir={tmp_path}")
    assert result.returncode == 2 and "rcm.k" in result.stderr and "Traceback" not in result.stderr


def test_bin_train_writes_everything_and_resumes(tiny_config, tmp_path):
    workdir = tmp_path / "run"
    validation = ["--config.data.val_fraction=0.25", "--config.train.validation_freq=1"]
    first = run_bin("train", "--config=configs/tiny.py", f"--workdir={workdir}", *validation, *_overrides(tiny_config))
    assert first.returncode == 0, first.stderr[-3000:]
    for name in (
        "config.json",
        "metrics.csv",
        "model.keras",
        "evaluation.json",
        "confusion_matrix.png",
        "export/1/saved_model.pb",
    ):
        assert (workdir / name).exists(), name
    assert os.listdir(workdir / "tensorboard")
    assert "test top-1:" in first.stdout
    assert json.loads((workdir / "config.json").read_text())["rcm"]["n"] == 4
    report = json.loads((workdir / "evaluation.json").read_text())
    assert report["num_examples"] == 12
    assert report["top1"] == pytest.approx(np.trace(report["confusion_matrix"]) / 12)
    assert report["split"] == "test" and "[test]" in report["split_name"]
    with open(workdir / "metrics.csv") as f:
        assert "val_loss" in next(csv.DictReader(f))  # Monitored on the carved-out validation split.
    on_val = run_bin("evaluate", f"--workdir={workdir}", "--split=val", f"--out_dir={workdir / 'val'}")
    assert on_val.returncode == 0, on_val.stderr[-3000:]
    val_report = json.loads((workdir / "val" / "evaluation.json").read_text())
    assert val_report["split"] == "val" and val_report["num_examples"] == 6  # A quarter of the 24.
    on_train = run_bin("evaluate", f"--workdir={workdir}", "--split=train")
    assert on_train.returncode == 0, on_train.stderr[-3000:]
    train_report = json.loads((workdir / "evaluation_train" / "evaluation.json").read_text())
    assert train_report["split"] == "train" and train_report["num_examples"] == 18  # The 24 less the validation 6.

    evaluated = run_bin("evaluate", f"--workdir={workdir}", f"--out_dir={workdir / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "top-1:" in evaluated.stdout and "top4:" in evaluated.stdout
    again = json.loads((workdir / "eval" / "evaluation.json").read_text())
    assert again["top1"] == report["top1"] and set(again["per_class_accuracy"]) == set(again["class_names"])
    assert len(again["confusion_matrix"]) == 4 and sum(map(sum, again["confusion_matrix"])) == 12
    assert (workdir / "eval" / "confusion_matrix.png").stat().st_size > 1000

    second = run_bin(
        "train",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        "--config.train.epochs=3",
        "--config.export.enabled=False",
        *validation,
        *_overrides(tiny_config),
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert (
        "Resuming" in second.stderr and "at step 8." in second.stderr
    )  # 16 training examples (4 carved out), batch 4.
    with open(workdir / "metrics.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2]


@pytest.mark.parametrize("arm", ["dcl", "baseline"])
def test_training_learns_a_learnable_toy_set(tiny_config, tmp_path, arm):
    """Loss falls and test top-1 ends far above chance: a broken model, loss or pipeline fails this.

    The plain baseline arm must learn too: a broken baseline would make DCL look good.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    for split, count in (("train", 12), ("test", 6)):
        for c, colour in enumerate(colours):
            os.makedirs(tmp_path / "data" / split / f"class_{c}")
            for i in range(count):
                image = np.clip(np.array(colour) + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(tmp_path / "data" / split / f"class_{c}" / f"{i}.png")
    config = tiny_config.copy_and_resolve_references()
    config.data.source, config.data.root = "image_folder", str(tmp_path / "data")
    config.input.batch_size = 6
    config.train.epochs = 4
    config.train.learning_rate = 0.05
    config.export.enabled = False
    if arm == "baseline":
        from dcl_keras import experiments, sweep

        config = sweep.apply_overrides(config, experiments.arm_overrides(config, "baseline"))
    result = training.train_and_evaluate(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "metrics.csv") as f:
        # A single-output model logs its loss as "loss".
        losses = [float(row.get("classifier_loss", row["loss"])) for row in csv.DictReader(f)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["evaluation"]["top1"] >= 0.9  # Chance is 1/3.


def test_metrics_log_each_epochs_learning_rate(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.train.epochs = 3
    config.train.decay_epochs = 2
    config.eval.enabled = config.export.enabled = False
    training.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "metrics.csv") as f:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    lr = config.train.learning_rate
    np.testing.assert_allclose(rates, [lr, lr, lr * config.train.decay_factor], rtol=1e-5)


def test_resuming_gives_the_same_weights_as_an_uninterrupted_run(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.eval.enabled = False
    config.export.enabled = False
    config.train.warmup_epochs = 0.5  # The checkpoint's optimizer holds a LinearWarmup, which must load.
    config.train.epochs = 2
    training.train_and_evaluate(config, str(tmp_path / "straight"))
    config.train.epochs = 1
    training.train_and_evaluate(config, str(tmp_path / "split"))
    config.train.epochs = 2
    training.train_and_evaluate(config, str(tmp_path / "split"))
    a = load_model(str(tmp_path / "straight" / "model.keras"))
    b = load_model(str(tmp_path / "split" / "model.keras"))
    for va, vb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(va), keras.ops.convert_to_numpy(vb), atol=1e-5, err_msg=va.path
        )
    assert int(a.optimizer.iterations) == int(b.optimizer.iterations) == 12


def test_a_run_resumed_mid_warm_up_continues_the_ramp(tiny_config, tmp_path):
    from helpers import tiny_dcl_model

    config = tiny_config.copy_and_resolve_references()
    config.train.warmup_epochs = 1.0  # A 5-step ramp at 5 steps an epoch.
    model = tiny_dcl_model(image_size=32, n=4, classes=4)
    training.compile_model(model, config, steps=5)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    targets = {
        "classifier": np.array([0, 1]),
        "destruction_discriminator": np.array([0, 1]),
        "region_alignment": np.full((2, 4, 4, 2), 0.5, "float32"),
    }
    for _ in range(2):
        model.train_on_batch(images, targets)
    model.save(str(tmp_path / "model.keras"))
    resumed = training._resume(str(tmp_path / "model.keras"), config, 5, split=None)
    assert int(resumed.optimizer.iterations) == 2
    assert float(resumed.optimizer.learning_rate) == pytest.approx(0.01 * 3 / 5)  # Step 2 of 5, base rate 0.01.


@pytest.mark.parametrize("backend,jit", [pytest.param("tensorflow", "true", marks=pytest.mark.slow), ("jax", "auto")])
def test_device_rcm_trains_resumes_and_exports(tiny_config, tmp_path, backend, jit):
    workdir = tmp_path / "device"
    args = ["--config=configs/tiny.py", f"--workdir={workdir}", "--config.rcm.placement=device"]
    args += [f"--config.train.jit_compile={jit}", *_overrides(tiny_config)]
    first = run_bin("train", f"--backend={backend}", *args, "--config.train.epochs=1", "--config.export.enabled=False")
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"backend: {backend}" in first.stdout
    second = run_bin("train", f"--backend={backend}", *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stderr and "at step 6." in second.stderr
    with open(workdir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    # The device RCM gives the heads something to learn: both losses fall from epoch 1 to epoch 2.
    assert float(rows[-1]["region_alignment_loss"]) < 0.9 * float(rows[0]["region_alignment_loss"])
    assert float(rows[-1]["destruction_discriminator_loss"]) < float(rows[0]["destruction_discriminator_loss"])
    assert (workdir / "export" / "1" / "saved_model.pb").exists()
    # The checkpoint holds the trainer (optimizer state and step); model.keras the DCL model alone.
    assert isinstance(load_model(str(workdir / "checkpoints" / "latest.keras")), dcl.DeviceRCMTrainer)
    assert type(load_model(str(workdir / "model.keras"))) is dcl.DCLModel


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


def test_training_on_files_that_vanished_names_them(tiny_config, tmp_path, monkeypatch):
    config = tiny_config.copy_and_resolve_references()
    config.eval.enabled = config.export.enabled = False
    config.data.check_files = False
    real_load = training.datasets.load_splits

    def vanishing(data):
        splits = real_load(data)
        copies = [str(tmp_path / f"{i}.png") for i in range(len(splits.train.paths))]
        train = readers.FileSplit(copies, splits.train.labels, splits.train.class_names, name="vanished")
        return splits._replace(train=train)

    monkeypatch.setattr(training.datasets, "load_splits", vanishing)
    with pytest.raises(readers.DatasetError, match=r"(?s)no example of an epoch.*0\.png: cannot be read"):
        training.train_and_evaluate(config, str(tmp_path / "run"))


def test_resuming_with_another_data_stream_is_refused(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.eval.enabled = config.export.enabled = False
    config.train.epochs = 1
    training.train_and_evaluate(config, str(tmp_path))
    config.train.epochs = 2
    config.input.batch_size = 3
    with pytest.raises(ConfigError, match=r"input.batch_size 4 -> 3"):
        training.train_and_evaluate(config, str(tmp_path))
