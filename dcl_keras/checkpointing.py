"""Checkpoints a long run can trust: atomic, exact to the step, never of a diverged model.

The position of a run is the optimizer's step counter (`optimizer.iterations`),
saved in the same `.keras` file as the weights and the optimizer state, so one
atomic file replacement records both: a crash between two writes can no
longer pair new weights with an old epoch count. The data stream is rebuilt
from that step (`pipeline.train_batches(start_step=...)`), and so are the RCM
keys of `rcm.placement=device`, which come with the stream.

Also here: the workdir lock (one live run per workdir), the checks that the
workdir and export folder are writable before training, and the guard that
stops at the first non-finite loss.
"""

import errno
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import time

import keras
import numpy as np

from dcl_keras.errors import UserError

CHECKPOINT = os.path.join("checkpoints", "latest.keras")
STATE = os.path.join("checkpoints", "state.json")
LOCK = "lock"


class WorkdirError(UserError):
    """The workdir or export folder cannot be used: locked by a live run, not writable, or full."""


class TrainingDivergedError(UserError):
    """A non-finite loss or weights: training stopped, the last good checkpoint kept."""


def atomic_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


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


class Checkpointer(_StepCallback):
    """Saves model and optimizer state atomically after every epoch and every `every_steps` steps.

    A model whose weights are no longer finite is never saved over the last
    good checkpoint: training stops with TrainingDivergedError instead.
    """

    def __init__(self, workdir, every_steps=0, stream=None):
        super().__init__(workdir)
        self.every_steps = int(every_steps)
        self.stream = stream

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self.every_steps and self.step % self.every_steps == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def save(self, epochs=None):
        path = os.path.join(self.workdir, CHECKPOINT)
        bad = _non_finite_weights(self.model)
        if bad:
            raise TrainingDivergedError(
                f"Training diverged by step {self.step}: non-finite weights in {bad[:3]}. Nothing was saved over "
                f"the last good checkpoint {path}; rerun the same command with a lower "
                "--config.train.learning_rate to resume from it."
            )
        tmp = path.replace(".keras", ".tmp.keras")
        self.model.save(tmp)
        os.replace(tmp, path)
        state = {"step": self.step, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "stream": self.stream}
        if epochs is not None:
            state["completed_epochs"] = epochs
        atomic_json(os.path.join(self.workdir, STATE), state)


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
            f"{what} has {free / 2**20:.0f} MiB free, and a checkpoint of this model needs about "
            f"{need_bytes / 2**20:.0f} MiB. Received: {folder}"
        )


def checkpoint_bytes(model):
    """A generous estimate of one checkpoint on disk: weights and optimizer slots, twice (temporary copy)."""
    values = sum(int(np.prod(v.shape)) for v in model.weights)
    return 2 * 3 * 4 * values + (16 << 20)


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
