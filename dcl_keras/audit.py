"""A label audit: plan its runs through the sweep machinery, then rank the training images by how suspect they are.

    bin/audit --config=configs/demo.py --audit_dir=audits/demo                  # 5 folds, here, one after another
    bin/audit --config=... --audit_dir=... --mode=slurm --sbatch=--gres=gpu:1   # the folds as a SLURM array
    bin/audit --audit_dir=audits/demo --mode=collect                            # rank once they have finished
    bin/audit --config=... --audit_dir=... --method=aum                         # one run, its margins

The audit folder is a sweep folder (sweep.json, commands.txt, one workdir per
run), so its runs resume, and run wherever bin/sweep's run. Collecting it
writes:

    suspects.csv   every training image, most suspect first: key, given label, suggested label, score, flagged
    exclude.txt    the flagged keys, one per line: train again with --set=data.exclude=<this file>
    relabel.csv    the flagged keys with the suggested label: --set=data.relabel=<this file>
    audit.json     the method, counts and the commands
    audit.html     the top suspects as thumbnails, with their given and suggested labels

Which signal to use is in dcl_keras/label_audit.py and docs/noisy-catalogue.md.
"""

import copy
import csv
import importlib.util
import io
import os

import numpy as np

from dcl_keras import config as config_lib
from dcl_keras import label_audit, sweep
from dcl_keras import workdir as run_folder
from dcl_keras.data import curation, datasets, pipeline, specs
from dcl_keras.errors import UserError

METHODS = ("kfold", "aum")
SUSPECTS = "suspects.csv"
EXCLUDE = "exclude.txt"
RELABEL = "relabel.csv"
SUMMARY = "audit.json"
PAGE = "audit.html"
AUDIT_FIELDS = ("data.audit_folds", "data.audit_fold", "train.record_margins")


def plan(config_spec, audit_dir, *, method="kfold", folds=5, seed=0, overrides=None):
    """The audit's runs (bin/sweep's run dicts): K fold runs, or one run recording margins.

    Export is off unless `overrides` turn it on: the audit needs predictions, not a SavedModel.
    """
    if method not in METHODS:
        raise UserError(f"--method: expected one of {list(METHODS)}. Received: {method!r}")
    overrides = dict(overrides or {})
    taken = sorted(set(overrides) & set(AUDIT_FIELDS))
    if taken:
        raise UserError(f"--set: {taken} are set by the audit itself (--method, --folds). Received: {taken}")
    overrides.setdefault("export.enabled", "False")
    if importlib.util.find_spec("cleanlab") is None and method == "kfold":
        raise UserError(
            "bin/audit --method=kfold ranks with cleanlab, which is not installed: pip install cleanlab (or "
            "'dcl-keras[audit]'), or use --method=aum. Received: --method=kfold"
        )
    if method == "aum":
        runs = sweep.plan(
            config_spec, "single", [seed], audit_dir, overrides={**overrides, "train.record_margins": "True"}
        )
        check_one_audit(runs, audit_dir)
        return runs
    if folds < 2:
        raise UserError(f"--folds: expected at least 2 folds. Received: --folds={folds}")
    runs = sweep.plan(
        config_spec,
        "single",
        [seed],
        audit_dir,
        vary={"data.audit_fold": [str(k) for k in range(folds)]},
        overrides={**overrides, "data.audit_folds": str(folds)},
    )
    config = sweep.apply_overrides(config_lib.load_config_file(runs[0]["config"]), runs[0]["overrides"])
    pool = training_split(config, check_files=False)
    curation.audit_folds(pool, folds, config.data.split_seed)  # A class under K fails here, not in K runs.
    check_one_audit(runs, audit_dir)
    return runs


def check_one_audit(runs, audit_dir):
    """Refuses to plan `runs` into a folder that holds another audit's runs (another method, K or seed)."""
    if not os.path.isfile(os.path.join(audit_dir, sweep.PLAN)):
        return
    planned = {run["workdir"] for run in sweep.load_plan(audit_dir)["runs"]}
    if planned != {run["workdir"] for run in runs}:
        raise UserError(
            f"{audit_dir} holds another audit's runs ({len(planned)} planned with other flags): one audit per "
            "folder, or its ranking would mix them. Use a new --audit_dir, or the flags it was planned with "
            f"({os.path.join(audit_dir, sweep.PLAN)})."
        )


def _finished_runs(audit_dir):
    if not os.path.isfile(os.path.join(audit_dir, sweep.PLAN)):
        raise UserError(f"{audit_dir}: no audit here (no {sweep.PLAN}). Plan it with bin/audit --config=... first.")
    runs = sweep.load_plan(audit_dir)["runs"]
    marks = [set(run["overrides"]) & {"data.audit_folds", "train.record_margins"} for run in runs]
    if not runs or not all(marks):
        raise UserError(
            f"{audit_dir} is not a bin/audit folder: its runs set neither data.audit_folds nor "
            "train.record_margins (a bin/sweep folder?). Received: --audit_dir=" + audit_dir
        )
    waiting = [run for run in runs if not sweep.finished(run)]
    if waiting:
        raise UserError(
            f"{audit_dir}: {len(waiting)} of {len(runs)} audit run(s) have not finished (first: "
            f"{waiting[0]['workdir']}). Run bin/audit again with the same flags (the runs resume), or run "
            f"{os.path.join(audit_dir, sweep.COMMANDS)}, then --mode=collect."
        )
    return runs


def training_split(config, check_files=None):
    """The training split the audit describes: the config's, with every audit field at its default."""
    data = copy.deepcopy(config.data)
    with data.unlocked():
        data.audit_folds, data.audit_fold = 0, 0
        if check_files is not None:
            data.check_files = check_files
    return datasets.load_splits(data).train


def collect(audit_dir):
    """(rows, flagged count, summary, the config, the audited training split) of a finished audit."""
    runs = _finished_runs(audit_dir)
    config = run_folder.load_config(runs[0]["workdir"])
    split = training_split(config)
    names = split.class_names
    if config.data.audit_folds:
        keys, labels, probabilities = _out_of_fold(runs, split)
        rows, flagged = label_audit.rank_out_of_fold(keys, labels, probabilities, names)
        method = f"kfold ({len(runs)} folds, cleanlab find_label_issues, ranked by self-confidence)"
    else:
        recorded = label_audit.load_margins(os.path.join(runs[0]["workdir"], run_folder.MARGINS))
        _check_same_images(recorded["keys"], split, runs[0]["workdir"])
        rows, flagged = label_audit.rank_margins(
            recorded["keys"], recorded["labels"], recorded["margins"], recorded["suggested"], names
        )
        method = f"aum (mean margin over {len(recorded['epochs'])} epoch ends, split by a 2-component mixture)"
    summary = {
        "method": method,
        "training_images": len(rows),
        "flagged": flagged,
        "runs": [run["workdir"] for run in runs],
        "invocations": sweep.load_plan(audit_dir).get("invocations", []),
    }
    return rows, flagged, summary, config, split


def _out_of_fold(runs, split):
    """(keys, labels, probabilities) over every fold run, in the training split's order."""
    parts = []
    for run in runs:
        path = os.path.join(run["workdir"], run_folder.FOLD_PREDICTIONS)
        if not os.path.isfile(path):
            raise run_folder.MissingFile(f"{path}: missing. Is {run['workdir']} a fold run of this audit?")
        with np.load(path) as data:
            if int(data["folds"]) != len(runs):
                raise UserError(f"{path}: a fold of {int(data['folds'])}, in an audit of {len(runs)} runs.")
            parts.append({name: data[name] for name in ("keys", "labels", "probabilities")})
    positions = {}  # key -> its positions in the split (a list file may name one image twice).
    for i, key in enumerate(split.keys()):
        positions.setdefault(key, []).append(i)
    keys = np.concatenate([p["keys"] for p in parts]).tolist()
    placed = [positions[key].pop(0) if positions.get(key) else -1 for key in keys]
    if -1 in placed or len(placed) != split.num_examples:
        missing = [key for key, left in positions.items() if left][:3]
        raise UserError(
            f"The fold runs predict {len(keys)} images for a training split of {split.num_examples} (never held "
            f"out, e.g. {missing}): the folds do not cover the split. Plan the audit again in a new folder."
        )
    order = np.argsort(placed, kind="stable")
    labels = np.concatenate([p["labels"] for p in parts])[order]
    return np.asarray(keys)[order], labels, np.concatenate([p["probabilities"] for p in parts])[order]


def _check_same_images(keys, split, folder):
    if list(np.asarray(keys).tolist()) != list(split.keys()):
        raise UserError(f"{folder}: its margins describe other training images than the config's. Rerun the audit.")


def write(audit_dir, rows, summary):
    """Writes suspects.csv, exclude.txt, relabel.csv and audit.json; returns their paths."""
    flagged = [row for row in rows if row["flagged"]]
    paths = {name: os.path.join(audit_dir, name) for name in (SUSPECTS, EXCLUDE, RELABEL, SUMMARY)}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["rank", "key", "label", "suggested", "score", "flagged"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "score": f"{row['score']:.6g}"} for row in rows)
    run_folder.write_text(paths[SUSPECTS], buffer.getvalue())
    header = f"# {len(flagged)} training image(s) flagged by bin/audit: {summary['method']}\n"
    run_folder.write_text(paths[EXCLUDE], header + "".join(f"{row['key']}\n" for row in flagged))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([row["key"], row["suggested"]] for row in flagged)
    run_folder.write_text(paths[RELABEL], buffer.getvalue())
    run_folder.write_json(paths[SUMMARY], {**summary, "files": paths})
    return paths


def thumbnails(config, split, rows, count):
    """[(row, uint8 crop [S, S, 3])] of the `count` most suspect images, in rank order (evaluation preprocessing).

    An image that no longer decodes is left out.
    """
    position = {key: i for i, key in enumerate(split.keys())}
    spec = specs.EvalSpec.from_config(config)
    shown = []
    for row in rows[:count]:
        for images, _ in pipeline.eval_batches(split.subset([position[row["key"]]]), spec, batch_size=1):
            shown.append((row, np.clip(images.numpy()[0], 0, 255).astype(np.uint8)))
    return shown
