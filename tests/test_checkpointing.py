"""Checkpoints a long run can trust (dcl_keras/checkpointing.py): a diverged model is never saved, one live run per
workdir, unwritable or full folders are refused before training (kill/resume of bin/train:
tests/test_fault_tolerance.py)."""

import os

import numpy as np
import pytest

from dcl_keras import checkpointing, training
from dcl_keras.saving import load_model


def test_a_diverging_run_stops_naming_step_and_term_and_resumes_with_a_lower_rate(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.eval.enabled = config.export.enabled = False
    config.train.epochs = 1
    training.train_and_evaluate(config, str(tmp_path))
    good = load_model(str(tmp_path / checkpointing.CHECKPOINT))
    config.train.epochs = 3
    config.train.learning_rate = 1e12
    with pytest.raises(checkpointing.TrainingDivergedError, match=r"diverged at step \d+.*classifier_loss"):
        training.train_and_evaluate(config, str(tmp_path))
    kept = load_model(str(tmp_path / checkpointing.CHECKPOINT))
    assert checkpointing.completed_steps(kept) == 6  # Still the last good checkpoint, epoch 1.
    for a, b in zip(good.weights, kept.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    config.train.learning_rate = 0.01  # The same command with a lower rate resumes from it.
    result = training.train_and_evaluate(config, str(tmp_path))
    final = load_model(result["model"])
    assert all(np.all(np.isfinite(np.asarray(w))) for w in final.weights)
    assert checkpointing.completed_steps(load_model(str(tmp_path / checkpointing.CHECKPOINT))) == 18


def test_a_second_run_on_a_held_workdir_is_refused(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    os.makedirs(tmp_path / "checkpoints")
    with checkpointing.WorkdirLock(str(tmp_path)):
        with pytest.raises(checkpointing.WorkdirError, match=rf"in use by a live run \(pid {os.getpid()} on"):
            training.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "config.json").exists()


def test_unwritable_or_full_workdir_and_export_folder_are_reported_before_training(tiny_config, tmp_path, monkeypatch):
    config = tiny_config.copy_and_resolve_references()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(checkpointing.WorkdirError, match="The workdir is not writable"):
        training.train_and_evaluate(config, str(blocker / "run"))
    config.export.dir = str(blocker / "export")
    with pytest.raises(checkpointing.WorkdirError, match=r"export folder \(export.dir\) is not writable"):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    config.export.dir = ""

    class Full:
        free = 1 << 20

    monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda path: Full)
    with pytest.raises(checkpointing.WorkdirError, match="1 MiB free"):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / checkpointing.CHECKPOINT).exists()
