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
import time
import zipfile

import keras
import numpy as np
import pytest

from dcl_keras import checkpointing, cli, export, preemption, training
from dcl_keras import workdir as run_folder
from dcl_keras.config import ConfigError, validate_config
from dcl_keras.saving import load_model

BATCH, STEPS, EPOCHS = 5, 4, 3  # 24 examples: 4 steps an epoch.
# The random signal steps: a new seed each session unless DCL_TEST_SEED sets one; a failure prints it.
SEED = int(os.environ.get("DCL_TEST_SEED", time.time_ns() % 10**6))


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
    os.remove(os.path.join(target, run_folder.FINAL_MODEL))
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
    rng = random.Random(f"{SEED}-{placement}")
    step = rng.choice([s for s in range(STEPS + 1, EPOCHS * STEPS) if s % STEPS])  # Inside epoch 2 or 3.
    print(f"DCL_TEST_SEED={SEED}: the signal comes at step {step}")
    config, workdir = _config(tiny_config, placement), tmp_path / "run"
    _signal_at(monkeypatch, step, signum)
    before = signal.getsignal(signum)
    caplog.set_level(logging.INFO)
    with pytest.raises(preemption.Preempted) as stopped:
        training.train_and_evaluate(config, str(workdir))
    message = str(stopped.value)
    assert f"Received {signal.Signals(signum).name}: the run saves and stops" in caplog.text
    assert f"Stopped by {signal.Signals(signum).name} at step {step}: the checkpoint " in message, (step, message)
    assert str(workdir / checkpointing.CHECKPOINT) in message and "Rerun the same command" in message
    assert signal.getsignal(signum) is before  # The handler is the run's only.
    assert checkpointing.completed_steps(load_model(str(workdir / checkpointing.CHECKPOINT))) == step
    assert checkpointing.saved_state(str(workdir))["step"] == step
    kept_epoch = step // STEPS * STEPS  # The last epoch checkpoint before the signal, kept as the one before.
    assert _files(workdir) == ["latest.keras", "state.json", f"step_{kept_epoch}.keras"]
    assert not (workdir / run_folder.FINAL_MODEL).exists()

    monkeypatch.undo()
    training.train_and_evaluate(config, str(workdir))  # The same command.
    assert f"at step {step}." in caplog.text and f"Finishing epoch {step // STEPS + 1} from its step" in caplog.text
    worst = _worst_difference(straight(placement) / "model.keras", workdir / "model.keras")
    assert worst <= 1e-5, (SEED, step, worst)


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
        with pytest.raises(preemption.Preempted, match="after the final model: training is finished and saved"):
            training.train_and_evaluate(config, str(workdir))
    assert (workdir / "model.keras").exists() and not os.listdir(workdir / "export")
    result = training.train_and_evaluate(config, str(workdir))
    assert os.path.isdir(result["export"])


def test_a_signal_during_the_export_lets_the_export_finish_so_no_rerun_exports_twice(
    tiny_config, straight, tmp_path, monkeypatch
):
    workdir = _copy_run(straight("pipeline"), tmp_path / "run")
    config = _config(tiny_config)
    config.export.enabled = True
    real = export.export_model_file

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "export_model_file", signalled)
    result = training.train_and_evaluate(config, str(workdir))  # Not Preempted: only the evaluation was left.
    assert result["export"] == str(workdir / "export" / "1") and os.listdir(workdir / "export") == ["1"]


def test_a_second_stop_signal_goes_to_the_previous_handler(caplog):
    caught, term = [], signal.getsignal(signal.SIGTERM)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: caught.append(signum))
    try:
        with preemption.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.received == signal.SIGUSR1 and caught == []
            assert caplog.text.count("Received SIGUSR1:") == 1
            os.kill(os.getpid(), signal.SIGUSR1)  # Without a handler of its own, the process would end now.
            assert caught == [signal.SIGUSR1] and caplog.text.count("Received SIGUSR1:") == 1
            assert signal.getsignal(signal.SIGTERM) is term  # Every stop signal is as it was.
    finally:
        signal.signal(signal.SIGUSR1, previous)


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


def test_a_full_disk_while_exporting_stubbed_leaves_no_part_and_names_what_is_intact(
    tiny_config, straight, tmp_path, monkeypatch
):
    workdir = _copy_run(straight("pipeline"), tmp_path / "run")
    config = _config(tiny_config)
    config.export.enabled = True

    def fills_up(self, folder, **kwargs):
        open(os.path.join(folder, "saved_model.pb"), "wb").write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", fills_up)
    with pytest.raises(checkpointing.StorageError) as failed:
        training.train_and_evaluate(config, str(workdir))
    assert os.listdir(workdir / "export") == []  # No .tmp-1-* folder left.
    message, target = str(failed.value), workdir / "export" / "1"
    assert f"Could not write the export {target}: No space left on device" in message
    assert (
        f"Training is finished: {workdir / 'model.keras'} and the checkpoint {workdir / checkpointing.CHECKPOINT}"
        in (message)
    )
    assert "rerunning the same command exports without training" in message and message.count("Received:") == 1


FULL_DISK = """
import errno, os
_replace = os.replace


def _full(src, dst, *args, **kwargs):
    if os.path.basename(str(src)).startswith(".tmp-"):  # The export's temporary version folder.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
    return _replace(src, dst, *args, **kwargs)


os.replace = _full
"""


@pytest.mark.backend_agnostic
def test_a_full_disk_in_the_tensorflow_export_process_is_a_storage_error(straight, tmp_path, monkeypatch):
    """Under JAX the export runs in a TensorFlow child process: its full disk comes back as one StorageError line."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(FULL_DISK)  # Loaded by the child at start-up.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(stub), os.environ.get("PYTHONPATH")])))
    monkeypatch.setattr(export.keras.backend, "backend", lambda: "jax")  # The child process, under either backend.
    export_dir = tmp_path / "export"
    with pytest.raises(checkpointing.StorageError) as failed:
        export.export_model_file(str(straight("pipeline") / "model.keras"), str(export_dir))
    message = str(failed.value)
    assert message.startswith(f"Could not write the export {export_dir / '1'}: No space left on device. ")
    assert message.endswith("Received: OSError ENOSPC") and os.listdir(export_dir) == []


def test_a_failed_read_while_exporting_is_not_called_a_write_error(tmp_path, monkeypatch):
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))

    def not_found(self, folder, **kwargs):
        raise export.tf.errors.NotFoundError(None, None, "variables/variables.index: not found")

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", not_found)
    with pytest.raises(export.tf.errors.NotFoundError):
        export.export_classifier(model, str(tmp_path / "export"))
    assert os.listdir(tmp_path / "export") == []


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
    assert f"moved aside to {latest}{preemption.UNREADABLE}-" in caplog.text
    assert checkpointing.saved_state(str(workdir))["completed_epochs"] == EPOCHS  # Rewritten, then saved again.
    assert f"Resuming from {older} at step {(EPOCHS - 1) * STEPS}." in caplog.text
    aside = glob.glob(f"{latest}{preemption.UNREADABLE}-*")
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
    with pytest.raises(preemption.CheckpointError) as failed:
        training.train_and_evaluate(_config(tiny_config), str(workdir))
    message = str(failed.value)
    assert all(f"{path} (not a complete .keras zip file: truncated or damaged)" in message for path in files), message
    assert "Restore them (from a copy or a backup), or start a new --workdir" in message
    assert checkpointing.checkpoint_files(str(workdir)) == files  # Nothing moved: restoring them resumes.


def _fake_checkpoints(workdir, steps=(8, 4)):
    """checkpoints/latest.keras (step steps[0]) and step_<s>.keras: complete zips, each holding its step."""
    folder = workdir / checkpointing.CHECKPOINTS
    folder.mkdir(parents=True)
    names = ["latest.keras"] + [f"step_{step}.keras" for step in steps[1:]]
    for name, step in zip(names, steps, strict=True):
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr("config.json", str(step))
    return [str(folder / name) for name in names]


def _read_step(path):
    with zipfile.ZipFile(path) as archive:
        return int(archive.read("config.json"))


@pytest.mark.parametrize(
    "where,error",
    [
        ("load", OSError(errno.EIO, os.strerror(errno.EIO))),
        ("open", PermissionError(errno.EACCES, "Permission denied")),
    ],
)
def test_a_checkpoint_that_cannot_be_read_stops_the_run_with_nothing_moved(tmp_path, monkeypatch, where, error):
    files = _fake_checkpoints(tmp_path)
    real_open = open

    def load(path):
        if where == "load" and path == files[0]:
            raise error  # An I/O error while Keras reads the file: nothing says its content is bad.
        return _read_step(path)

    def fails_to_open(path, *args, **kwargs):
        if where == "open" and str(path) == files[0]:
            raise error
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fails_to_open)
    with pytest.raises(preemption.CheckpointError) as failed:
        preemption.load_newest(str(tmp_path), load)
    message = str(failed.value)
    assert message.startswith(f"Could not read the checkpoint {files[0]}: {error.strerror}. Nothing was moved")
    assert message.endswith(f"Received: {type(error).__name__} {errno.errorcode[error.errno]}")
    assert checkpointing.checkpoint_files(str(tmp_path)) == files


def test_running_out_of_memory_while_loading_moves_nothing(tmp_path):
    files = _fake_checkpoints(tmp_path)

    def load(path):
        raise MemoryError()

    with pytest.raises(MemoryError):
        preemption.load_newest(str(tmp_path), load)
    assert checkpointing.checkpoint_files(str(tmp_path)) == files


def test_the_fallback_warning_says_what_happened_to_the_damaged_checkpoint(tmp_path, monkeypatch, caplog):
    files = _fake_checkpoints(tmp_path)
    _truncate(files[0])
    caplog.set_level(logging.WARNING)
    assert preemption.load_newest(str(tmp_path), _read_step, move_aside=False) == (4, files[1])  # Not the chief.
    assert "the chief process moves it aside" in caplog.text and "moved aside to" not in caplog.text
    assert checkpointing.checkpoint_files(str(tmp_path)) == files
    real_replace = os.replace

    def refused(src, dst):
        if preemption.UNREADABLE in dst:
            raise PermissionError(errno.EACCES, "Permission denied", src)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(preemption.CheckpointError) as failed:  # Left in place, the next save would keep it.
        preemption.load_newest(str(tmp_path), _read_step)
    message = str(failed.value)
    assert f"Checkpoint {files[0]} cannot be read (not a complete .keras zip file" in message
    assert "moving it aside failed: Permission denied" in message and f"The one before, {files[1]}, reads" in message
    assert checkpointing.checkpoint_files(str(tmp_path)) == files


def _tiny_saver(workdir, keep=2):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    saver = checkpointing.Checkpointer(str(workdir), keep=keep)
    saver.set_model(model)
    os.makedirs(workdir / checkpointing.CHECKPOINTS, exist_ok=True)
    return saver


@pytest.mark.backend_agnostic
def test_a_kill_between_keeping_the_newest_and_replacing_it_leaves_latest_keras(tmp_path, monkeypatch):
    saver = _tiny_saver(tmp_path)
    saver.step = 4
    saver.save()
    latest = tmp_path / checkpointing.CHECKPOINT
    saved = latest.read_bytes()
    real_replace = os.replace

    def killed(src, dst):
        if str(src).endswith(".tmp.keras") and str(dst) == str(latest):
            raise KeyboardInterrupt("killed between the two steps")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    monkeypatch.setattr(run_folder, "_remove", lambda path: None)  # A kill cleans nothing up.
    saver.step = 8
    with pytest.raises(KeyboardInterrupt):
        saver.save()
    monkeypatch.undo()
    assert _files(tmp_path) == ["latest.keras", "latest.tmp.keras", "state.json", "step_4.keras"]
    assert latest.read_bytes() == saved  # Still the newest saved checkpoint, step 4.
    preemption.remove_partial_files(str(tmp_path))
    assert preemption.load_newest(str(tmp_path), load_model)[1] == str(latest)

    def no_hard_links(source, target):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    saver.step = 12  # On a file system without hard links, step_4.keras is a copy.
    saver.save()
    assert _files(tmp_path) == ["latest.keras", "state.json", "step_4.keras"]
    assert (tmp_path / "checkpoints" / "step_4.keras").read_bytes() == saved
    assert checkpointing.saved_state(str(tmp_path))["step"] == saver.latest_step == 12


def test_state_json_describes_the_checkpoint_resumed_from(tiny_config, straight, tmp_path):
    workdir = _copy_run(straight("pipeline"), tmp_path / "run")
    state = checkpointing.saved_state(str(workdir))
    stale = dict(state, step=(EPOCHS - 1) * STEPS, completed_epochs=EPOCHS - 1)  # A kill before state.json's write.
    run_folder.write_json(str(workdir / checkpointing.STATE), stale)
    training.train_and_evaluate(_config(tiny_config), str(workdir))  # Resumes from latest.keras: finished.
    assert checkpointing.saved_state(str(workdir)) == state


def test_a_full_disk_before_the_first_checkpoint_says_a_rerun_starts_over(tmp_path, monkeypatch):
    saver = _tiny_saver(tmp_path)

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(keras.Model, "save", full)
    saver.step = 4
    with pytest.raises(checkpointing.StorageError) as failed:
        saver.save()
    message = str(failed.value)
    assert "Nothing partial was left; no checkpoint was saved yet. Free space" in message, message
    assert "then rerun the same command: it starts over. Received: OSError ENOSPC" in message
    assert "resume" not in message and _files(tmp_path) == []


def test_the_space_needed_before_training_counts_every_kept_checkpoint(tmp_path):
    model = _tiny_saver(tmp_path).model
    one = 3 * 4 * sum(int(np.prod(v.shape)) for v in model.weights)
    margin = 16 << 20
    assert checkpointing.checkpoint_bytes(model, keep=2, folder=str(tmp_path)) == 3 * one + margin
    assert checkpointing.checkpoint_bytes(model, keep=5) == 6 * one + margin
    _fake_checkpoints(tmp_path / "resumed")  # Two written: a save needs room for one more.
    assert checkpointing.checkpoint_bytes(model, keep=2, folder=str(tmp_path / "resumed")) == one + margin


def test_a_file_system_that_cannot_fsync_still_saves_and_a_failed_flush_is_an_error(tmp_path, monkeypatch):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write("saved")

    def fsync(error):
        def fails(fd):
            raise OSError(error, os.strerror(error))

        return fails

    for unsupported in (errno.EINVAL, errno.ENOTSUP):
        monkeypatch.setattr(os, "fsync", fsync(unsupported))
        run_folder.write_file(str(tmp_path / "a.txt"), write)
        run_folder.write_json(str(tmp_path / "state.json"), {"step": 4})
        assert (tmp_path / "a.txt").read_text() == "saved"
    monkeypatch.setattr(os, "fsync", fsync(errno.EIO))
    with pytest.raises(OSError, match="Input/output error"):
        run_folder.write_file(str(tmp_path / "b.txt"), write)
    with pytest.raises(OSError, match="Input/output error"):  # state.json is flushed before its rename.
        run_folder.write_json(str(tmp_path / "state.json"), {"step": 8})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "state.json"] and "4" in (tmp_path / "state.json").read_text()


def test_what_a_killed_save_left_is_removed_and_no_checkpoint(tmp_path):
    files = _fake_checkpoints(tmp_path)
    folder = tmp_path / checkpointing.CHECKPOINTS
    partial = ["latest.tmp.keras", "state.json.tmp", "tmpab_9x2kq", "step_4.tmp.keras"]
    for name in partial:
        (folder / name).write_bytes(b"part")
    (folder / "tmpq1w2e3r4").mkdir()  # A temporary folder.
    (folder / "notes.txt").write_text("the user's")
    preemption.remove_partial_files(str(tmp_path))
    assert checkpointing.checkpoint_files(str(tmp_path)) == files
    assert sorted(os.listdir(folder)) == ["latest.keras", "notes.txt", "step_4.keras"]


@pytest.mark.backend_agnostic
def test_keep_checkpoints_is_checked(tiny_config):
    config = _config(tiny_config)
    for bad in (0, -1):
        config.train.keep_checkpoints = bad
        with pytest.raises(ConfigError, match=rf"`train.keep_checkpoints`: expected an integer >= 1.*={bad}"):
            validate_config(config)
