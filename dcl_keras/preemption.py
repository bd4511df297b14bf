"""Runs that are stopped or cut short resume: stop signals, and the checkpoints a kill or a bad disk leaves.

A stop signal (SIGTERM; SIGUSR1 for SLURM's `--signal=B:USR1@<seconds>`)
ends training after the current step with a checkpoint of that step (the
`checkpointing.Checkpointer` acts on `StopSignals`), and bin/train exits with
errors.PREEMPTED_EXIT_STATUS, on which a scheduler requeues. A second signal
ends the process at once, as it would without the handler.

Resuming takes the newest checkpoint in `<workdir>/checkpoints/` that reads
(`load_newest`). Only a file proven damaged (not a complete zip, a failed
checksum, content Keras cannot load) is moved aside for the one before; a
file that cannot be read at all (permissions, an I/O error, a lost mount)
stops the run with nothing moved. `remove_partial_files` clears what a killed
save left.
"""

import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import threading
import time
import zipfile
import zlib

import numpy as np

from dcl_keras import checkpointing
from dcl_keras.errors import PREEMPTED_EXIT_STATUS, UserError
from dcl_keras.workdir import CHECKPOINTS, STATE, write_json

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
UNREADABLE = ".unreadable"  # A checkpoint that failed to load is renamed <name>.unreadable-<time>.
# What a killed save leaves in checkpoints/: our temporary files (workdir.temporary_path's names, and
# <name>.json.tmp of earlier versions), and the temporary file Keras writes a large model's weights to beside
# the .keras file (tempfile's names: "tmp" and 8 characters).
PARTIAL = re.compile(r".*\.tmp\.(keras|json)|.*\.json\.tmp|tmp[a-z0-9_]{8}")


class Preempted(Exception):
    """Training stopped on a stop signal after saving; the same command resumes (errors.PREEMPTED_EXIT_STATUS)."""


class CheckpointError(UserError):
    """A checkpoint of the workdir cannot be read, or none can be loaded."""


class StopSignals:
    """Catches SIGTERM and SIGUSR1 (`with StopSignals() as stop:`) so training can stop after a step, saved.

    Schedulers send one of them some time before they kill a job (SLURM:
    `--signal=B:USR1@<seconds>`; preemption and scancel: SIGTERM). The first
    signal is logged and recorded; the Checkpointer acts on it at the end of
    the current step, and after training the run stops before the export
    (`after_training`). A second signal restores the previous handlers and is
    sent again, so it ends the process as it would have without this. Outside
    the main thread (a notebook's worker thread) no handler can be installed,
    and signals keep their previous effect.
    """

    def __init__(self):
        self.received = 0
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc):
        self._restore()

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: not set from Python.
        self._previous = {}

    def _record(self, signum, frame):
        if self.received:
            self._restore()
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        logging.warning(
            "Received %s: the run saves and stops at the end of this training step (after training: before the "
            "export); a second signal ends it at once.",
            self.name(),
        )

    def agreed(self, num_processes=1):
        """The signal that any process caught (0: none). With several processes, a collective every process calls."""
        if num_processes == 1:
            return self.received
        from jax.experimental import multihost_utils

        return int(np.max(multihost_utils.process_allgather(np.int32(self.received))))

    def name(self):
        return signal.Signals(self.received).name

    def stopped(self, signum, step, path):
        """The Preempted of a stop by `signum` after training step `step`, saved in `path`."""
        return Preempted(
            f"Stopped by {signal.Signals(signum).name} at step {step}: the checkpoint {path} holds it. "
            f"Rerun the same command to resume from step {step}. Exit status {PREEMPTED_EXIT_STATUS}."
        )

    def after_training(self, final):
        """Raises Preempted when a signal came after training, once the final model `final` is written.

        Called before the export only: once the export has started, it and
        the evaluation finish, so a rerun never exports a second version.
        """
        if self.received:
            raise Preempted(
                f"Stopped by {self.name()} after the final model: training is finished and saved in {final}. Rerun "
                f"the same command to finish the export and evaluation. Exit status {PREEMPTED_EXIT_STATUS}."
            )


class _Damaged(Exception):
    """A checkpoint that reads through but is not a complete, loadable .keras file; the message says why."""


def _load_checked(path, load):
    """`load(path)` once the whole file has been read and its checksums checked.

    Raises _Damaged when the file is proven damaged, and the OSError when it
    cannot be read (nothing says its content is bad).
    """
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, zlib.error):
        raise _Damaged("not a complete .keras zip file: truncated or damaged") from None
    if bad is not None:
        raise _Damaged(f"{bad} in it fails its checksum: damaged")
    try:
        return load(path)
    except OSError as e:
        if e.errno is not None:
            raise
        raise _Damaged(_first_line(e)) from None  # h5py's: the weights inside are not a valid HDF5 file.
    except (ValueError, KeyError) as e:
        raise _Damaged(_first_line(e)) from None


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def load_newest(workdir, load, move_aside=True, steps=None):
    """(model, path) of the newest checkpoint of `workdir` that `load(path)` reads; (None, None) when there is none.

    A newer checkpoint proven damaged (truncated, a failed checksum) is named
    in a warning and, with `move_aside` (the chief), renamed
    `<name>.unreadable-<time>`, so that the next save does not rotate it in;
    with `steps` (per epoch) too, state.json then describes the checkpoint
    loaded (`sync_state`). A file that cannot be read at all raises
    CheckpointError with nothing moved, and so does a failed move aside; when
    none loads, CheckpointError names each file and why.
    """
    damaged = []
    for path in checkpointing.checkpoint_files(workdir):
        try:
            model = _load_checked(path, load)
        except _Damaged as e:
            damaged.append((path, str(e)))
            continue
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not move_aside:  # The chief, resuming beside this, moved it.
                continue
            raise _unreadable(path, e) from None
        for bad, why in damaged:
            _set_aside(bad, why, path, move_aside)
        if move_aside and steps:
            sync_state(workdir, checkpointing.completed_steps(model), steps)
        return model, path
    if damaged:
        raise CheckpointError(
            f"No checkpoint in {os.path.join(workdir, CHECKPOINTS)} can be read: "
            + "; ".join(f"{path} ({why})" for path, why in damaged)
            + ". Restore them (from a copy or a backup), or start a new --workdir. Received: --workdir="
            + workdir
        )
    return None, None


def _unreadable(path, error):
    """The CheckpointError of a checkpoint that cannot be read: nothing was moved, nothing is known of its content."""
    code = errno.errorcode.get(error.errno or 0)
    return CheckpointError(
        f"Could not read the checkpoint {path}: {checkpointing.os_reason(error)}. Nothing was moved; the file may "
        "well be intact. Fix the permissions, the disk or the mount, then rerun the same command. Received: "
        f"{type(error).__name__}{' ' + code if code else ''}"
    )


def _set_aside(bad, why, resumed, move_aside):
    """Renames the damaged checkpoint `bad` aside (the chief) and says so; a failed rename stops the run."""
    if not move_aside:
        logging.warning(
            "Checkpoint %s cannot be read (%s); the chief process moves it aside. Resuming from the one before, %s.",
            bad,
            why,
            resumed,
        )
        return
    aside = f"{bad}{UNREADABLE}-{time.strftime('%Y%m%dT%H%M%S')}"
    try:
        os.replace(bad, aside)
    except OSError as e:  # Left in place, it would be rotated in as the one before at the next save.
        raise CheckpointError(
            f"Checkpoint {bad} cannot be read ({why}), and moving it aside failed: {checkpointing.os_reason(e)}. "
            f"The one before, {resumed}, reads: move {bad} away (or fix the permissions), then rerun the same "
            f"command. Received: {aside}"
        ) from None
    logging.warning(
        "Checkpoint %s cannot be read (%s); moved aside to %s. Resuming from the one before, %s.",
        bad,
        why,
        aside,
        resumed,
    )


def sync_state(workdir, step, steps_per_epoch):
    """Makes state.json describe the checkpoint just resumed from, at `step`.

    It can describe another: the one moved aside, or an older one when a kill
    came between writing latest.keras and its state.json.
    """
    state = checkpointing.saved_state(workdir)
    if state.get("step") == step:
        return
    state = {key: value for key, value in state.items() if key != "completed_epochs"}
    state["step"] = step
    if step % steps_per_epoch == 0:
        state["completed_epochs"] = step // steps_per_epoch
    write_json(os.path.join(workdir, STATE), state)


def remove_partial_files(folder):
    """Removes the temporary files a killed save left in `<folder>/checkpoints/` (never a whole checkpoint)."""
    directory = os.path.join(folder, CHECKPOINTS)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if PARTIAL.fullmatch(name):
            path = os.path.join(directory, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
