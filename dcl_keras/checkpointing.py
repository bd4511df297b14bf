"""Checkpoints a long run can trust: atomic, exact to the step, never of a diverged model.

The position of a run is the optimizer's step counter (`optimizer.iterations`),
saved in the same `.keras` file as the weights and the optimizer state, so one
atomic file replacement records both: a crash between two writes can no
longer pair new weights with an old epoch count. The data stream is rebuilt
from that step (`train_stream.train_batches(start_step=...)`), and so are the RCM
keys of `rcm.placement=device`, which come with the stream.

This module keeps `<workdir>/checkpoints/` (named in dcl_keras.workdir): the newest checkpoint is
`latest.keras`, the `train.keep_checkpoints - 1` before it are
`step_<step>.keras`, and `state.json` describes the newest. Resuming takes the
newest one that loads (`dcl_keras.preemption`, with the stop signals that
make the Checkpointer save and stop).

Also here: storage errors told in one line, the workdir lock (one live run
per workdir), the checks that the workdir and export folder are writable
before training, and the guard that stops at the first non-finite loss.
"""

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
import socket
import time

import keras
import numpy as np

from dcl_keras.errors import UserError
from dcl_keras.workdir import CHECKPOINT, CHECKPOINTS, LOCK, STATE, atomic_path, write_file, write_json

OLDER = re.compile(r"step_(\d+)\.keras")  # checkpoints/step_<step>.keras: the kept checkpoints before latest.keras.
NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK)


class WorkdirError(UserError):
    """The workdir or export folder cannot be used: locked by a live run, not writable, or full."""


class TrainingDivergedError(UserError):
    """A non-finite loss or weights: training stopped, the last good checkpoint kept."""


class StorageError(UserError):
    """A file could not be written (no space, read-only, a lost mount); nothing partial was left behind."""


def os_reason(error):
    """The OS's words for a write error ("No space left on device"): an OSError's, or TensorFlow's first line."""
    reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    return reason.strip().splitlines()[0] if reason.strip() else type(error).__name__


def storage_error(what, error, intact, then):
    """The one-line StorageError for `error` (an OSError) while writing `what`.

    Args:
        what: str, what was being written and where ("the checkpoint at step 8 (runs/x/checkpoints/latest.keras)").
        error: the OSError.
        intact: str, what is still good ("the last good checkpoint runs/x/checkpoints/latest.keras (step 4)"),
            or None: no checkpoint was saved yet.
        then: str, how to go on ("free space or fix the mount, then rerun the same command to resume from it").
    """
    code = errno.errorcode.get(getattr(error, "errno", None) or 0)
    received = f"{type(error).__name__} {code}" if code else type(error).__name__
    kept = f"{intact} is intact" if intact else "no checkpoint was saved yet"
    return StorageError(
        f"Could not write {what}: {os_reason(error)}. Nothing partial was left; {kept}. "
        f"{then[0].upper()}{then[1:]}. Received: {received}"
    )


def with_context(error, context):
    """The StorageError `error` with `context` (sentences) before its closing "Received: ..."."""
    head, sep, received = str(error).rpartition(" Received: ")
    return StorageError(f"{head} {context} Received: {received}" if sep else f"{error} {context}")


def completed_steps(model):
    """Optimizer steps a (loaded) model has taken: the position of its run."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _non_finite_weights(model):
    return [v.path for v in model.trainable_variables if not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))]


class _StepCallback(keras.callbacks.Callback):
    """Counts the run's optimizer steps from the model's own counter, without reading it every step."""

    def __init__(self, workdir):
        super().__init__()
        self.workdir = workdir
        self.step = 0

    def on_train_begin(self, logs=None):
        self.step = completed_steps(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


def checkpoint_files(folder):
    """The checkpoints in `<folder>/checkpoints/`, newest first: latest.keras, then step_<step>.keras by step."""
    directory = os.path.join(folder, CHECKPOINTS)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    older = sorted(((int(m.group(1)), name) for name in names if (m := OLDER.fullmatch(name))), reverse=True)
    latest = [CHECKPOINT] if os.path.basename(CHECKPOINT) in names else []
    return [os.path.join(folder, path) for path in latest] + [os.path.join(directory, name) for _, name in older]


def checkpoint_step(path, workdir):
    """The step of a checkpoint file, from its name (step_<step>.keras) or state.json (latest.keras); else None."""
    match = OLDER.fullmatch(os.path.basename(path))
    if match:
        return int(match.group(1))
    return saved_state(workdir).get("step")


def describe(path, step):
    return f"{path} (step {step})" if step is not None else path


class Checkpointer(_StepCallback):
    """Saves model and optimizer state atomically after every epoch and every `every_steps` steps.

    Keeps the newest `keep` checkpoints (latest.keras and step_<step>.keras).
    A model whose weights are no longer finite is never saved over the last
    good checkpoint: training stops with TrainingDivergedError instead. When
    `stop` (a preemption.StopSignals) has caught a signal in any process,
    every process saves at the end of the same step and raises
    preemption.Preempted.

    Args:
        workdir: str, the folder whose `checkpoints/` this writes.
        every_steps: int, also save every this many steps (0: epochs only).
        stream: dict, the stream fingerprint recorded in state.json.
        keep: int, checkpoints kept (train.keep_checkpoints).
        steps_per_epoch: int or None, to record completed epochs at epoch boundaries.
        stop: preemption.StopSignals or None.
        num_processes: int, processes that must agree on the step to stop at.
    """

    def __init__(self, workdir, every_steps=0, stream=None, keep=2, steps_per_epoch=None, stop=None, num_processes=1):
        super().__init__(workdir)
        self.every_steps = int(every_steps)
        self.stream = stream
        self.keep = int(keep)
        self.steps_per_epoch = steps_per_epoch
        self.stop = stop
        self.num_processes = num_processes
        self.latest_step = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # latest.keras, if there, is what this run resumed from (an unreadable one was moved aside).
        self.latest_step = self.step if os.path.isfile(os.path.join(self.workdir, CHECKPOINT)) else None

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        signum = self.stop.agreed(self.num_processes) if self.stop else 0
        if signum or (self.every_steps and self.step % self.every_steps == 0):
            self.save()
        if signum:
            raise self.stop.stopped(signum, self.step, os.path.join(self.workdir, CHECKPOINT))

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def save(self):
        if self.latest_step == self.step:  # An every_steps save that fell on the epoch's end.
            return
        path = os.path.join(self.workdir, CHECKPOINT)
        bad = _non_finite_weights(self.model)
        if bad:
            raise TrainingDivergedError(
                f"Training diverged by step {self.step}: non-finite weights in {bad[:3]}. Nothing was saved over "
                f"the last good checkpoint {path}; rerun the same command with a lower "
                "--config.train.learning_rate to resume from it."
            )
        written = False
        try:
            with atomic_path(path) as tmp:
                self.model.save(tmp)
                self._rotate(path)
            written = True
            self.latest_step = self.step
            self._prune()
            state = {"step": self.step, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "stream": self.stream}
            if self.steps_per_epoch and self.step % self.steps_per_epoch == 0:
                state["completed_epochs"] = self.step // self.steps_per_epoch
            write_json(os.path.join(self.workdir, STATE), state)
        except OSError as e:
            raise self._storage_error(e, written) from None

    def _rotate(self, path):
        """Keeps the current latest.keras also as step_<its step>.keras when more than one checkpoint is kept.

        A hard link (a copy where the file system has none), not a rename: a
        kill before the new latest.keras replaces it never leaves the run
        without one.
        """
        if self.keep > 1 and self.latest_step is not None and os.path.isfile(path):
            older = os.path.join(self.workdir, CHECKPOINTS, f"step_{self.latest_step}.keras")
            with contextlib.suppress(OSError):  # A link a kill left, or a run that resumed from this step before.
                os.remove(older)
            try:
                os.link(path, older)
            except OSError as e:
                if e.errno not in NO_HARD_LINKS:
                    raise
                write_file(older, lambda tmp: shutil.copyfile(path, tmp))

    def _prune(self):
        for old in checkpoint_files(self.workdir)[self.keep :]:
            os.remove(old)

    def _storage_error(self, error, written):
        files = checkpoint_files(self.workdir)
        intact, then = None, "free space (or fix the mount or permissions), then rerun the same command"
        if written:
            intact = f"the checkpoint {describe(files[0], self.step)}"
        elif files:
            newest = files[0]
            step = self.latest_step if newest.endswith(CHECKPOINT) else checkpoint_step(newest, self.workdir)
            intact = f"the last good checkpoint {describe(newest, step)}"
        path = os.path.join(self.workdir, CHECKPOINT)
        return storage_error(
            f"the checkpoint at step {self.step} ({path})",
            error,
            intact,
            f"{then} to resume from it" if intact else f"{then}: it starts over",
        )


def intact_checkpoint(workdir):
    """The newest checkpoint of a workdir with its step, for messages ("none" when there is none)."""
    files = checkpoint_files(workdir)
    return describe(files[0], checkpoint_step(files[0], workdir)) if files else "none"


def write_after_training(what, path, write, workdir):
    """Writes `path` atomically with `write(tmp)`; a storage error is one line naming the intact checkpoint."""
    try:
        write_file(path, write)
    except OSError as e:
        raise storage_error(
            f"{what} ({path})",
            e,
            f"the checkpoint of the finished training, {intact_checkpoint(workdir)},",
            "free space (or fix the mount or permissions), then rerun the same command: it writes the file again "
            "without training",
        ) from None


class DivergenceGuard(_StepCallback):
    """Stops at the first step whose loss is NaN or infinite, naming the step and the bad loss terms.

    Keras logs running means over the epoch, so one non-finite step makes
    them non-finite at once. Raising here ends `fit` before any checkpoint of
    that step is written (this callback runs before the Checkpointer).
    """

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        terms = sorted(k for k, v in logs.items() if k.endswith("_loss") and not math.isfinite(float(v)))
        path = os.path.join(self.workdir, CHECKPOINT)
        saved = saved_state(self.workdir).get("step")
        last = f"{path} (step {saved})" if saved is not None else "none yet (the run will start over)"
        raise TrainingDivergedError(
            f"Training diverged at step {self.step}: the loss is {float(loss)} "
            f"(non-finite terms: {', '.join(terms) or 'the total'}). Training stopped; the last good checkpoint "
            f"is {last}. Rerun the same command with a lower --config.train.learning_rate to resume from it."
        )


def saved_state(workdir):
    """The state.json of the workdir's checkpoint ({} when there is none): step, epochs, stream."""
    try:
        with open(os.path.join(workdir, STATE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class WorkdirLock:
    """An exclusive lock on a workdir for the life of a run (`with WorkdirLock(workdir):`).

    `fcntl.flock` on `<workdir>/lock`: the kernel releases it when the process
    dies, even by SIGKILL, so a stale lock never blocks a rerun; the file holds
    the holder's host and process id for the message.
    """

    def __init__(self, workdir):
        self.path = os.path.join(workdir, LOCK)
        self.file = None

    def __enter__(self):
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirError(
                f"The workdir {os.path.dirname(self.path)} is in use by a live run ({holder}); two runs would "
                f"write one checkpoint. Wait for it, stop it, or use another --workdir. Received: lock {self.path}"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def check_writable(folder, what, need_bytes=0):
    """Raises WorkdirError unless `folder` can be created, written and holds `need_bytes` more."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(f"{what} is not writable: {e.strerror or e}. Received: {folder}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise WorkdirError(
            f"{what} has {free / 2**20:.0f} MiB free, and this run needs about {need_bytes / 2**20:.0f} MiB more "
            f"there. Received: {folder}"
        )


def checkpoint_bytes(model, keep=2, folder=None):
    """A generous estimate of the disk the checkpoints of `model` still need, at their peak.

    One checkpoint: float32 weights and optimizer slots. A save holds `keep`
    (train.keep_checkpoints) of them and the temporary file of the next; those
    already in `<folder>/checkpoints/` count as written.
    """
    one = 3 * 4 * sum(int(np.prod(v.shape)) for v in model.weights)
    written = min(len(checkpoint_files(folder)), keep) if folder else 0
    return (keep + 1 - written) * one + (16 << 20)


def export_bytes(model):
    """A generous estimate of one export on disk: float32 weights and the graph."""
    return 4 * sum(int(np.prod(v.shape)) for v in model.weights) + (16 << 20)


def adopt_optimizer_state(model, old_optimizer):
    """Copies the step counter and slots of `old_optimizer` into the model's newly compiled optimizer.

    So a resumed run takes the learning rate, schedule and multipliers of the
    command that resumes it (a lower learning rate after a divergence) while
    keeping the exact optimizer state of the checkpoint.
    """
    new = model.optimizer
    new.build(model.trainable_variables)
    keep = [v for v in old_optimizer.variables if "learning_rate" not in v.path]
    into = [v for v in new.variables if "learning_rate" not in v.path]
    if [tuple(v.shape) for v in keep] != [tuple(v.shape) for v in into]:
        raise UserError(
            "The checkpoint's optimizer state does not fit the optimizer of this config (was train.momentum or "
            "the model changed?). Resume with the run's original config, or start a new --workdir. Received: "
            f"{len(keep)} checkpoint variables vs {len(into)}"
        )
    for target, value in zip(into, keep, strict=True):
        target.assign(value)
    logging.info("Optimizer state restored at step %d.", completed_steps(model))
