"""Preemption and storage faults: a stop signal saves its step, a full disk loses nothing, a bad checkpoint falls back.

Every training test here runs in this process: 24 demo examples at batch 5, 4
steps an epoch, 3 epochs. Each interrupted run is compared with one
uninterrupted run of the same config (weights within 1e-5). The tests marked
backend_agnostic run again under KERAS_BACKEND=jax (where every model build
or load compiles for several seconds, so the others run under TensorFlow only).
"""

import contextlib
import errno
import glob
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from dcl_keras import checkpointing, cli, sweep, training
from dcl_keras.config import ConfigError, validate_config
from dcl_keras.saving import load_model

BATCH, STEPS, EPOCHS = 5, 4, 3  # 24 examples: 4 steps an epoch.


def _config(tiny_config, placement="pipeline"):
    config = tiny_config.copy_and_resolve_references()
    config.eval.enabled = config.export.enabled = False
    config.input.batch_size = BATCH
    config.train.epochs = EPOCHS
    config.rcm.placement = placement
    return config


def _weights(path):
    return [keras.ops.convert_to_numpy(w) for w in load_model(str(path)).weights]


def _worst_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(_weights(a), _weights(b), strict=True))


@pytest.fixture(scope="module")
def straight(tiny_config, tmp_path_factory):
    """The uninterrupted run of each placement: {placement: workdir}, trained on first use."""
    runs = {}

    def run(placement):
        if placement not in runs:
            workdir = tmp_path_factory.mktemp(f"straight_{placement}")
            training.train_and_evaluate(_config(tiny_config, placement), str(workdir))
            runs[placement] = workdir
        return runs[placement]

    return run


def _copy_run(source, target):
    shutil.copytree(source, target)
    os.remove(os.path.join(target, training.FINAL_MODEL))
    return target


def _files(workdir):
    return sorted(os.listdir(os.path.join(workdir, checkpointing.CHECKPOINTS)))


def _signal_at(monkeypatch, step, signum):
    """Sends this process `signum` in the middle of training step `step` (from a callback, as a scheduler would)."""
    real = checkpointing.DivergenceGuard.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        real(self, batch, logs)
        if self.step == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(checkpointing.DivergenceGuard, "on_train_batch_end", on_train_batch_end)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "placement,signum",
    [
        ("pipeline", signal.SIGTERM),
        pytest.param("device", signal.SIGUSR1, marks=pytest.mark.slow),  # Opt-in, as the device kill -9 test.
    ],
)
def test_a_stop_signal_saves_its_step_and_the_rerun_ends_as_an_uninterrupted_run(
    tiny_config, straight, tmp_path, monkeypatch, caplog, placement, signum
):
    step = random.choice([s for s in range(STEPS + 1, EPOCHS * STEPS) if s % STEPS])  # Inside epoch 2 or 3.
    config, workdir = _config(tiny_config, placement), tmp_path / "run"
    _signal_at(monkeypatch, step, signum)
    before = signal.getsignal(signum)
    with pytest.raises(checkpointing.Preempted) as stopped:
        training.train_and_evaluate(config, str(workdir))
    message = str(stopped.value)
    assert f"Stopped by {signal.Signals(signum).name} at step {step}: the checkpoint " in message, (step, message)
    assert str(workdir / checkpointing.CHECKPOINT) in message and "Rerun the same command" in message
    assert signal.getsignal(signum) is before  # The handler is the run's only.
    assert checkpointing.completed_steps(load_model(str(workdir / checkpointing.CHECKPOINT))) == step
    assert checkpointing.saved_state(str(workdir))["step"] == step
    kept_epoch = step // STEPS * STEPS  # The last epoch checkpoint before the signal, kept as the one before.
    assert _files(workdir) == ["latest.keras", "state.json", f"step_{kept_epoch}.keras"]
    assert not (workdir / training.FINAL_MODEL).exists()

    monkeypatch.undo()
    caplog.set_level(logging.INFO)
    training.train_and_evaluate(config, str(workdir))  # The same command.
    assert f"at step {step}." in caplog.text and f"Finishing epoch {step // STEPS + 1} from its step" in caplog.text
    worst = _worst_difference(straight(placement) / "model.keras", workdir / "model.keras")
    assert worst <= 1e-5, (step, worst)


def test_a_signal_after_training_keeps_the_model_and_the_rerun_finishes(tiny_config, straight, tmp_path):
    workdir = _copy_run(straight("pipeline"), tmp_path / "run")
    config = _config(tiny_config)
    config.export.enabled = True
    real = training._train_stages

    def signalled(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # Training is finished: the signal comes before the final stages.
        return real(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "_train_stages", signalled)
        with pytest.raises(checkpointing.Preempted, match="after the final model: training is finished and saved"):
            training.train_and_evaluate(config, str(workdir))
    assert (workdir / "model.keras").exists() and not os.listdir(workdir / "export")
    result = training.train_and_evaluate(config, str(workdir))
    assert os.path.isdir(result["export"])


@pytest.mark.backend_agnostic
def test_a_full_disk_while_checkpointing_names_the_intact_checkpoint_and_the_rerun_resumes(
    tiny_config, straight, tmp_path, monkeypatch, capsys
):
    config, workdir = _config(tiny_config), tmp_path / "run"
    real_save = keras.Model.save
    saves = []

    def fills_up(self, path, *args, **kwargs):
        if path.endswith("latest.tmp.keras"):
            saves.append(path)
            if len(saves) == 2:  # The epoch-2 checkpoint: half written, then the disk is full.
                with open(path, "wb") as f:
                    f.write(b"PK\x03\x04" + b"\0" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", fills_up)
    with pytest.raises(SystemExit) as stop:
        cli.run_main(lambda argv: training.train_and_evaluate(config, str(workdir)), [])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    latest = workdir / checkpointing.CHECKPOINT
    assert f"Could not write the checkpoint at step {2 * STEPS} ({latest}): No space left on device" in err
    assert f"the last good checkpoint {latest} (step {STEPS}) is intact" in err
    assert "rerun the same command to resume from it" in err and err.endswith("Received: OSError ENOSPC")
    assert _files(workdir) == ["latest.keras", "state.json"]  # No partial latest.tmp.keras.
    assert checkpointing.completed_steps(load_model(str(latest))) == STEPS

    monkeypatch.undo()  # Space was freed.
    training.train_and_evaluate(config, str(workdir))
    assert _worst_difference(straight("pipeline") / "model.keras", workdir / "model.keras") <= 1e-5


def test_a_full_disk_while_writing_the_final_model_leaves_no_part_and_the_rerun_writes_it(
    tiny_config, straight, tmp_path, monkeypatch
):
    workdir = _copy_run(straight("pipeline"), tmp_path / "run")
    real_save = keras.Model.save

    def read_only(self, path, *args, **kwargs):
        if path.endswith("model.tmp.keras"):
            open(path, "wb").close()
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", read_only)
    with pytest.raises(checkpointing.StorageError) as failed:
        training.train_and_evaluate(_config(tiny_config), str(workdir))
    message = str(failed.value)
    assert f"Could not write the final model ({workdir / 'model.keras'}): Read-only file system" in message
    assert f"{workdir / checkpointing.CHECKPOINT} (step {EPOCHS * STEPS})" in message and "without training" in message
    assert not glob.glob(str(workdir / "*.tmp*")) and not (workdir / "model.keras").exists()
    monkeypatch.undo()
    training.train_and_evaluate(_config(tiny_config), str(workdir))
    assert _worst_difference(straight("pipeline") / "model.keras", workdir / "model.keras") == 0.0


@contextlib.contextmanager
def _tmpfs(folder, size):
    """A tmpfs of `size` bytes mounted on `folder` (root only; the test is skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    os.makedirs(folder, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_while_exporting_leaves_no_part_and_names_what_is_intact(tiny_config, straight, tmp_path):
    workdir = _copy_run(straight("pipeline"), tmp_path / "run")
    config = _config(tiny_config)
    config.export.enabled = True
    with _tmpfs(tmp_path / "export", 64 << 10) as export_dir:  # Room for the probe, not for a SavedModel.
        config.export.dir = str(export_dir)
        with pytest.raises(checkpointing.StorageError) as failed:
            training.train_and_evaluate(config, str(workdir))
        assert os.listdir(export_dir) == []  # No .tmp-1-* folder left.
    message = str(failed.value)
    assert f"Could not write the export {export_dir / '1'}: " in message and "No space left on device" in message
    assert f"Training is finished: {workdir / 'model.keras'} and the checkpoint " in message
    assert "rerunning the same command exports without training" in message and message.count("Received:") == 1


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.backend_agnostic
def test_a_truncated_newest_checkpoint_is_moved_aside_and_the_one_before_resumes(
    tiny_config, straight, tmp_path, caplog
):
    workdir = _copy_run(straight("pipeline"), tmp_path / "run")
    latest = workdir / checkpointing.CHECKPOINT
    size = os.path.getsize(latest)
    _truncate(latest)  # A copy cut short.
    caplog.set_level(logging.INFO)
    training.train_and_evaluate(_config(tiny_config), str(workdir))
    older = workdir / "checkpoints" / f"step_{(EPOCHS - 1) * STEPS}.keras"
    assert f"Checkpoint {latest} cannot be read (not a complete .keras zip file" in caplog.text
    assert "moved aside to" in caplog.text
    assert checkpointing.saved_state(str(workdir))["completed_epochs"] == EPOCHS  # Rewritten, then saved again.
    assert f"Resuming from {older} at step {(EPOCHS - 1) * STEPS}." in caplog.text
    aside = glob.glob(f"{latest}{checkpointing.UNREADABLE}-*")
    assert len(aside) == 1 and os.path.getsize(aside[0]) == size // 2, aside
    assert _worst_difference(straight("pipeline") / "model.keras", workdir / "model.keras") <= 1e-5
    assert checkpointing.completed_steps(load_model(str(latest))) == EPOCHS * STEPS  # The epoch again, saved.


@pytest.mark.backend_agnostic
def test_when_no_checkpoint_can_be_read_the_error_names_them_and_what_to_do(tiny_config, straight, tmp_path):
    workdir = _copy_run(straight("pipeline"), tmp_path / "run")
    files = checkpointing.checkpoint_files(str(workdir))
    assert len(files) == 2
    for path in files:
        _truncate(path)
    with pytest.raises(checkpointing.CheckpointError) as failed:
        training.train_and_evaluate(_config(tiny_config), str(workdir))
    message = str(failed.value)
    assert all(f"{path} (not a complete .keras zip file: truncated or damaged)" in message for path in files), message
    assert "Restore them (from a copy or a backup), or start a new --workdir" in message
    assert checkpointing.checkpoint_files(str(workdir)) == files  # Nothing moved: restoring them resumes.


@pytest.mark.backend_agnostic
def test_keep_checkpoints_is_checked(tiny_config):
    config = _config(tiny_config)
    for bad in (0, -1):
        config.train.keep_checkpoints = bad
        with pytest.raises(ConfigError, match=rf"`train.keep_checkpoints`: expected an integer >= 1.*={bad}"):
            validate_config(config)


def _slurm_run(tmp_path, body):
    """A sweep run whose command is a small Python program (in place of bin/train)."""
    program = tmp_path / "program.py"
    program.write_text(body)
    return {"point": "p", "seed": 0, "workdir": str(tmp_path / "run"), "command": [sys.executable, str(program)]}


STOPS_ON_SIGNAL = f"""
import os, signal, sys, time
signal.signal(signal.SIGUSR1, lambda s, f: sys.exit({checkpointing.PREEMPTED_EXIT_STATUS}))
signal.signal(signal.SIGTERM, lambda s, f: sys.exit({checkpointing.PREEMPTED_EXIT_STATUS}))
open(os.path.join(os.path.dirname(__file__), "started"), "w").close()
time.sleep(60)
"""


@pytest.mark.backend_agnostic
def test_the_slurm_script_asks_for_the_signal_and_requeues(tmp_path):
    run = _slurm_run(tmp_path, "")
    script = open(sweep.write_slurm([run], str(tmp_path / "sweep"))).read()
    assert f"#SBATCH --signal=B:USR1@{sweep.SLURM_SIGNAL_SECONDS}\n" in script and "#SBATCH --requeue\n" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert sweep.PREEMPTED_EXIT_STATUS == checkpointing.PREEMPTED_EXIT_STATUS
    own = open(sweep.write_slurm([run], str(tmp_path / "own"), ["--signal=B:USR1@600"])).read()
    assert own.count("--signal") == 1 and "#SBATCH --signal=B:USR1@600" in own


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("signum,requeued", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_the_slurm_script_passes_the_signal_on_and_requeues_after_usr1(tmp_path, signum, requeued):
    run = _slurm_run(tmp_path, STOPS_ON_SIGNAL)
    script = sweep.write_slurm([run], str(tmp_path / "sweep"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", SLURM_JOB_ID="4242", PATH=f"{bin_dir}:{os.environ['PATH']}")
    batch = subprocess.Popen(["bash", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    batch.send_signal(signum)  # B: SLURM signals the batch shell only.
    output, _ = batch.communicate(timeout=30)
    assert batch.returncode == checkpointing.PREEMPTED_EXIT_STATUS, output
    log = tmp_path / "scontrol.log"
    assert (log.read_text() if log.exists() else "") == ("requeue 4242\n" if requeued else ""), output
