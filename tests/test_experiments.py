"""The paper's experiments: clean ablation arms and named grids (the sweep runner: tests/test_sweep.py)."""

import csv
import os

import numpy as np
import pytest

from dcl_keras import experiments, sweep, training
from dcl_keras.config import ConfigError, load_config_file, validate_config
from dcl_keras.data import datasets
from dcl_keras.errors import UserError

from helpers import ROOT


def _arm(config, arm):
    return sweep.apply_overrides(config, experiments.arm_overrides(config, arm))


def test_every_arm_builds_the_heads_its_losses_need(tiny_config):
    heads = {}
    for arm in experiments.ARMS:
        config = _arm(tiny_config, arm)
        validate_config(config)
        heads[arm] = training.build_model(config, 4, compile=False).heads
    assert heads["baseline"] == heads["baseline_equal_compute"] == heads["destruction"] == ("classifier",)
    assert heads["destruction_discriminator"] == ("classifier", "destruction_discriminator")
    assert heads["destruction_construction"] == ("classifier", "region_alignment")
    assert heads["dcl"] == ("classifier", "destruction_discriminator", "region_alignment")


def test_the_equal_compute_baseline_sees_dcls_images_per_step_for_dcls_steps(tiny_config):
    split = datasets.load_splits(tiny_config.data).train
    dcl_config, baseline, equal = (_arm(tiny_config, a) for a in ("dcl", "baseline", "baseline_equal_compute"))

    def images_per_step(config):
        images, _ = next(iter(training.train_batches(config, split)))
        return int(images.shape[0])

    assert images_per_step(equal) == images_per_step(dcl_config) == 2 * images_per_step(baseline)
    assert training.steps_per_epoch(equal, split) == training.steps_per_epoch(dcl_config, split)
    assert equal.input.batch_size == 2 * dcl_config.input.batch_size


@pytest.mark.parametrize("arm", ["baseline", "destruction", "dcl_2c"])
def test_arms_train_and_their_logs_hold_only_their_losses(tiny_config, tmp_path, arm):
    config = tiny_config.copy_and_resolve_references()
    config.train.epochs = 1
    config.export.enabled = False
    if arm == "dcl_2c":
        config.model.discriminator = "2c"
    else:
        config = _arm(config, arm)
    result = training.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "metrics.csv") as f:
        columns = set(next(csv.reader(f)))
    assert ("destruction_discriminator_loss" in columns) == (arm == "dcl_2c")
    assert ("region_alignment_loss" in columns) == (arm == "dcl_2c")
    assert 0.0 <= result["evaluation"]["top1"] <= 1.0


def test_n_grid_keeps_sizes_divisible_and_k_below_n_and_n1_is_the_baseline(tiny_config):
    points = dict((name, overrides) for name, _, overrides in experiments.grid_points("n", tiny_config))
    assert list(points) == [f"n={n}" for n in experiments.N_VALUES]
    assert points["n=1"] == experiments.arm_overrides(tiny_config, "baseline")
    for n in experiments.N_VALUES[1:]:
        config = sweep.apply_overrides(tiny_config, points[f"n={n}"])
        validate_config(config)
        assert config.rcm.n == n and config.input.image_size % n == 0 and config.rcm.k < n


def test_ratio_and_k_grids(tiny_config):
    ratios = {name: o for name, _, o in experiments.grid_points("ratio", tiny_config)}
    assert ratios["ratio=1:0"]["loss.beta"] == 0.0 and ratios["ratio=0:1"] == {
        "rcm.originals": 0,
        "rcm.destructed": 1,
        "loss.beta": 0.0,
    }
    with pytest.raises(UserError, match="rcm.n > 3"):  # k = 3 needs N > 3.
        experiments.grid_points("k", sweep.apply_overrides(tiny_config, {"rcm.n": 2, "rcm.k": 1}))
    config = sweep.apply_overrides(tiny_config, {"rcm.n": 7, "input.image_size": 35})
    assert [o["rcm.k"] for _, _, o in experiments.grid_points("k", config)] == [1, 2, 3]


def test_noise_and_long_tail_grids_plan_valid_runs(tiny_config, tmp_path, tiny_config_file):
    noise = dict((name, o) for name, _, o in experiments.grid_points("noise", tiny_config))
    assert noise["noise=0.4/gce"] == {"data.label_noise": 0.4, "loss.classification": "gce", "loss.gce_q": 0.7}
    assert noise["noise=0.2/cross_entropy"] == {"data.label_noise": 0.2}
    assert len(noise) == 6 and not any("," in name for name in noise)  # --points takes a comma-separated list.
    tail = [o for _, _, o in experiments.grid_points("long_tail", tiny_config)]
    assert [o["loss.class_balance_beta"] for o in tail] == [0.0, 0.99, 0.999]
    for grid in ("noise", "long_tail"):  # Every point passes config validation when planned.
        runs = sweep.plan(tiny_config_file, grid, [0], str(tmp_path / grid))
        assert len(runs) == {"noise": 6, "long_tail": 3}[grid]
    chosen = sweep.plan(
        tiny_config_file, "noise", [0], str(tmp_path / "two"), points=["noise=0.4/gce", "noise=0.4/cross_entropy"]
    )
    assert sorted(r["point"] for r in chosen) == ["noise=0.4/cross_entropy", "noise=0.4/gce"]


def test_table1_needs_every_dataset_folder_and_builds_the_paper_configs(tiny_config):
    with pytest.raises(UserError, match="aircraft"):
        experiments.grid_points("table1", tiny_config, data_roots={"cub": "/c", "cars": "/t"})
    points = experiments.grid_points("table1", tiny_config, data_roots={"cub": "/c", "cars": "/t", "aircraft": "/a"})
    specs = {name: spec for name, spec, _ in points}
    assert len(points) == 6
    assert specs["cars/vgg16"].endswith("configs/cars_resnet50.py:data_dir=/t,backbone=vgg16")
    config = load_config_file(os.path.join(ROOT, specs["aircraft/resnet50"]))
    assert config.rcm.n == 2 and config.loss.gamma == 0.01 and config.data.root == "/a"


def test_pretrain_on_the_coarse_set_then_fine_tune_from_the_weights_file(tiny_config, tmp_path):
    import keras

    config = tiny_config.copy_and_resolve_references()
    config.data.demo.kind = "coarse"
    config.data.demo.num_classes = 6
    config.data.demo.cache_dir = str(tmp_path / "cache")
    config.train.epochs = 1
    config.export.enabled = False
    config.eval.enabled = False
    config.export.backbone_weights = True
    config = _arm(config, "baseline")
    result = training.train_and_evaluate(config, str(tmp_path / "pretrain"))
    split = datasets.load_splits(config.data).train
    assert split.num_classes == 6 and split.class_names[0] == "ellipse-plain-cool"
    assert split.boxes is not None and np.isfinite(split.boxes).all()
    fine = tiny_config.copy_and_resolve_references()
    fine.model.weights = result["backbone_weights"]
    model = training.build_model(fine, 4, compile=False)
    from dcl_keras.saving import load_model

    pretrained = load_model(result["model"]).backbone
    for a, b in zip(model.backbone.weights, pretrained.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    bad = tiny_config.copy_and_resolve_references()
    bad.data.demo.kind = "dogs"
    with pytest.raises(ConfigError, match="data.demo.kind"):
        validate_config(bad)
