"""bin/pretrain: the pretraining run named by its recipe and corpus, run once, and loaded by fine-tuning."""

import os

import pytest

from dcl_keras import pretraining
from dcl_keras.data import demo

from helpers import ROOT, config_file, run_bin

PRETRAIN = os.path.join(ROOT, "configs", "pretrain.py")


def test_the_digest_follows_the_recipe_and_the_corpus_but_not_the_log_level(monkeypatch):
    base = pretraining.digest(config_file("pretrain"))
    same = config_file("pretrain")
    same.train.verbose = 0
    assert pretraining.digest(same) == base
    other = config_file("pretrain")
    other.train.epochs += 1
    assert pretraining.digest(other) != base
    monkeypatch.setitem(demo.GENERATOR_VERSIONS, "pretrain", demo.GENERATOR_VERSIONS["pretrain"] + 1)
    assert pretraining.digest(config_file("pretrain")) != base


def test_the_fine_tuning_configs_point_at_the_pretraining_runs_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("DCL_KERAS_CACHE", str(tmp_path))
    expected = os.path.join(pretraining.run_dir(config_file("pretrain")), "backbone.weights.h5")
    assert expected.startswith(str(tmp_path / "pretrained" / "pretrain-"))
    for name in ("typefaces_pretrained", "demo_pretrained"):
        c = config_file(name)
        assert c.model.weights == expected and c.train.head_multiplier == 10.0
        assert (c.model.backbone, c.model.width) == (config_file("pretrain").model.backbone, 32)


TINY = [
    "--config.data.demo.num_classes=3",
    "--config.data.demo.train_per_class=4",
    "--config.data.demo.test_per_class=1",
    "--config.data.demo.image_size=40",
    "--config.input.image_size=32",
    "--config.input.resize_size=36",
    "--config.input.batch_size=4",
    "--config.model.width=8",
    "--config.train.epochs=1",
    "--config.train.decay_epochs=1",
]


@pytest.mark.backend_agnostic
def test_bin_pretrain_trains_once_and_fine_tuning_loads_its_backbone(tmp_path):
    import keras
    import numpy as np

    from dcl_keras.models import backbones

    env = {"DCL_KERAS_CACHE": str(tmp_path / "cache")}
    backend = f"--backend={keras.backend.backend()}"
    args = [f"--config={PRETRAIN}", f"--cache_dir={tmp_path / 'runs'}", backend, *TINY]
    first = run_bin("pretrain", *args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    weights = first.stdout.strip().splitlines()[-1]
    assert weights.startswith(str(tmp_path / "runs" / "pretrain-")) and os.path.isfile(weights)
    stamp = os.stat(weights).st_mtime_ns
    again = run_bin("pretrain", *args, env=env)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == weights
    assert "Already pretrained" in again.stderr and os.stat(weights).st_mtime_ns == stamp
    assert not os.path.exists(os.path.join(os.path.dirname(weights), "model.keras.tmp"))

    # Fine-tuning loads it through model.weights=<path>, as ImageNet weights from a file.
    saved = backbones.build_backbone("tiny", 32, width=8)
    saved.load_weights(weights)
    loaded = backbones.build_backbone("tiny", 32, weights=weights, width=8)
    fresh = backbones.build_backbone("tiny", 32, width=8)
    for a, b in zip(saved.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert any(
        not np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(c))
        for a, c in zip(saved.weights, fresh.weights, strict=True)
    )


def test_bin_pretrain_refuses_a_config_that_writes_no_weights(tmp_path):
    result = run_bin(
        "pretrain", f"--config={PRETRAIN}", f"--cache_dir={tmp_path}", "--config.export.backbone_weights=False"
    )
    assert result.returncode == 2
    assert "expected export.backbone_weights=True" in result.stderr and "Traceback" not in result.stderr
