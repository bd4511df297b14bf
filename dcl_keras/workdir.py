"""The run folder (a bin/train workdir): its file names, how to read it, and the one way to write a file.

    <workdir>/
      config.json          the resolved config, written when training starts
      lock                 held by the live run (checkpointing.WorkdirLock)
      checkpoints/         latest.keras, step_<step>.keras, state.json (dcl_keras.checkpointing)
      metrics.csv          one row per epoch (Keras's CSVLogger)
      tensorboard/         TensorBoard's logs
      model.keras          the final model
      backbone.weights.h5  with export.backbone_weights (what model.weights=<path> loads)
      export/<version>/    the SavedModel versions, unless export.dir is set
      fold_predictions.npz with data.audit_folds: the held-out fold's probabilities (dcl_keras.label_audit)
      margins.npz          with train.record_margins: each training image's margin per epoch
      evaluation.json      written last: the run is finished (`is_finished`)
      confusion_matrix.png, confused_pairs.png   drawn with evaluation.json
      pointing.json        `bin/analyze pointing`
      report.html          bin/report (dcl_keras.report)
      process_<id>/        another process's checkpoints and final model

Every file here (and the checkpoints, exports, records and sweep plans) is
written through `atomic_path`: a temporary sibling, flushed, then renamed over
the file, so a reader sees the old content or the new, never a part.

    from dcl_keras import workdir
    config = workdir.load_config("workdirs/demo")
    workdir.write_json("out/summary.json", {"top1": 0.9})
"""

import contextlib
import csv
import errno
import json
import math
import os
import shutil

import numpy as np

from dcl_keras.errors import UserError

CONFIG = "config.json"
LOCK = "lock"
CHECKPOINTS = "checkpoints"
CHECKPOINT = os.path.join(CHECKPOINTS, "latest.keras")
STATE = os.path.join(CHECKPOINTS, "state.json")
METRICS = "metrics.csv"  # Keras's CSVLogger in training.train: one row per epoch.
TENSORBOARD = "tensorboard"
FINAL_MODEL = "model.keras"
BACKBONE_WEIGHTS = "backbone.weights.h5"
EXPORT = "export"
EVALUATION = "evaluation.json"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
CONFUSED_PAIRS_PNG = "confused_pairs.png"
POINTING = "pointing.json"
REPORT = "report.html"
FOLD_PREDICTIONS = "fold_predictions.npz"  # With data.audit_folds: the held-out fold's probabilities.
MARGINS = "margins.npz"  # With train.record_margins: every training image's margin, per epoch.
TRAIN_LOG = "train.log"  # bin/sweep's log of a run it starts.
# What fsync raises where a file system cannot flush (FUSE, some network file systems): nothing to wait for.
FSYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP)
CONFIG_FIX = "bin/train writes it when it starts: is this a bin/train workdir?"


class MissingFile(UserError, FileNotFoundError):
    """A file of a run (or a sweep) is absent or unreadable; the message names it and how to write it again."""


def export_dir(folder, configured=None):
    """Where a run's export versions go: `configured` (export.dir, --export_dir) if set, else `<workdir>/export`."""
    return configured or os.path.join(folder, EXPORT)


def process_dir(folder, process_id):
    """Where process `process_id` (not the chief) of a multi-process run keeps its checkpoints and model."""
    return os.path.join(folder, f"process_{process_id}")


def is_finished(folder):
    """Whether bin/train finished the run: evaluation.json, its last file, is there."""
    return os.path.isfile(os.path.join(folder, EVALUATION))


# Writing.


def temporary_path(target):
    """The temporary sibling `atomic_path` writes: `<stem>.tmp.<suffixes>`, keeping the suffixes Keras checks."""
    folder, name = os.path.split(target)
    stem, dot, suffixes = name.partition(".")
    return os.path.join(folder, f"{stem}.tmp{dot}{suffixes}")


@contextlib.contextmanager
def atomic_path(target, tmp=None):
    """Yields a temporary path to write instead of `target`; on success it is flushed and renamed over `target`.

    On any error (or interrupt) the temporary file or folder is removed and the
    error raised: `target` holds its old content or its new one, never a part.

    Args:
        target: str, the file (or folder) to write.
        tmp: str, the temporary path, when not `temporary_path(target)` (a folder made by tempfile.mkdtemp).

    Example:

        with workdir.atomic_path("runs/x/model.keras") as tmp:
            model.save(tmp)
    """
    tmp = tmp or temporary_path(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    with contextlib.suppress(OSError):
        _fsync(os.path.dirname(target) or ".")


def write_file(target, write):
    """`write(tmp)` through `atomic_path`; returns `target`."""
    with atomic_path(target) as tmp:
        write(tmp)
    return target


def write_text(target, text):
    """Writes `text` (UTF-8) to `target` atomically; returns `target`."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write_file(target, write)


def write_json(target, payload, indent=2, sort_keys=True):
    """Writes `payload` as JSON to `target` atomically; returns `target`."""
    return write_text(target, json.dumps(payload, indent=indent, sort_keys=sort_keys))


def _remove(target):
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        os.remove(target)


def _fsync(target):
    """Flushes a file (or a folder's entries) to the disk: a full or lost disk reports here, not after a rename."""
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in FSYNC_UNSUPPORTED and (e.errno != errno.EBADF or not os.path.isdir(target)):
            raise  # A flush that failed (EIO, ENOSPC) is an error; one the file system does not offer is not.
    finally:
        os.close(fd)


# Reading.


def read_json(file, fix):
    """The JSON of `file`; MissingFile (naming the file and how to write it again, `fix`) when absent or unreadable."""
    if not os.path.isfile(file):
        raise MissingFile(f"No {os.path.basename(file)} in {os.path.dirname(file)}. {fix}")
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise MissingFile(f"{file} cannot be read ({e.strerror or e}). {fix}") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MissingFile(
            f"{file} cannot be read as JSON ({e}). {fix} Received: {len(raw)} bytes, {raw[:40]!r}"
        ) from None


def read_config(folder):
    """The config.json of a run, as saved (a dict)."""
    return read_json(os.path.join(folder, CONFIG), CONFIG_FIX)


def load_config(folder):
    """The resolved config that bin/train wrote into a run folder, over today's defaults (a ConfigDict).

    Fields added since the run was started take their default values.
    """
    from dcl_keras.config import base_config

    saved = read_config(folder)
    config = base_config()
    with config.unlocked():
        config.update(saved)
    return config


def flatten(tree, prefix=""):
    """A nested dict (a saved config) as {"section.field": value}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_evaluation(folder, fix):
    """The evaluation.json of a run; MissingFile, with how to write it (`fix`), when absent or unreadable."""
    return read_json(os.path.join(folder, EVALUATION), fix)


def read_metrics(folder):
    """The curves of a run's metrics.csv (see `read_metrics_file`); MissingFile before the first epoch ends."""
    file = os.path.join(folder, METRICS)
    if not os.path.isfile(file):
        raise MissingFile(
            f"No {METRICS} in {folder}: no epoch has finished yet (training writes a row at the end of each epoch)."
        )
    return read_metrics_file(file)


def read_metrics_file(file):
    """The curves of a CSVLogger file: ({column: float array over epochs}, rows skipped as incomplete).

    Epochs count from 1. 'NA' (an epoch without validation) and values that do
    not parse are NaN; a row with the wrong number of fields (the last line of
    a run killed while writing it) is skipped; an epoch logged twice (a
    resumed run) keeps its last row.
    """
    with open(file, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or "epoch" not in lines[0]:
        raise MissingFile(
            f"{file}: expected a CSV header with an `epoch` column (Keras's CSVLogger). "
            f"Received: {','.join(lines[0])[:80] if lines else 'an empty file'}"
        )
    header, by_epoch, skipped = lines[0], {}, 0
    for row in lines[1:]:
        values = [_number(value) for value in row]
        if len(row) != len(header) or math.isnan(values[header.index("epoch")]):
            skipped += 1
            continue
        by_epoch[int(values[header.index("epoch")])] = values
    rows = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    columns = {name: np.array([row[i] for row in rows], np.float64) for i, name in enumerate(header)}
    columns["epoch"] = columns["epoch"] + 1
    return columns, skipped


def _number(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


def model_file(folder, model=None):
    """The .keras file to use: `model` (--model) if given, else `<workdir>/model.keras`; it must exist."""
    file = model or os.path.join(folder or "", FINAL_MODEL)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"Model file not found: expected a .keras file at {file!r} (set --model or --workdir)")
    return file


def load_trained_model(folder):
    """(DCLModel, its file name): model.keras, else the last checkpoint of an unfinished run; uncompiled."""
    from dcl_keras import saving
    from dcl_keras.models import dcl

    for name in (FINAL_MODEL, CHECKPOINT):
        file = os.path.join(folder, name)
        if os.path.isfile(file):
            loaded = saving.load_model(file, compile=False)
            loaded = getattr(loaded, "dcl_model", loaded)  # rcm.placement=device checkpoints wrap it.
            if not isinstance(loaded, dcl.DCLModel):
                raise MissingFile(f"{file}: expected a DCLModel. Received: {type(loaded).__name__}")
            return loaded, name
    raise MissingFile(f"No {FINAL_MODEL} nor {CHECKPOINT} in {folder}: nothing trained yet.")
