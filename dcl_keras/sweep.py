"""Sweeps: a base config x a grid of overrides x seeds, run here or handed to a scheduler.

Every run is one `bin/train` command with its own workdir,
`<sweep_dir>/<point>/seed_<seed>`. A run is finished when its workdir holds
`evaluation.json` (bin/train writes it last); an interrupted run resumes when
its command runs again (bin/train resumes), and a finished one is skipped. So
a sweep is resumable whichever way it runs:

* here, one run after another (`run`);
* as a plain commands file, one shell line per run, for `xargs -P` or GNU
  parallel (`commands`);
* as a SLURM array job over that file (`slurm`).

`collect` reads every finished run (through `dcl_keras.workdir`) into
`results.csv` (one row per run) and `results.md` (mean +- sample std over
seeds per grid point); bin/sweep and bin/report then draw its rows as the
sweep's `report.html` (`dcl_keras.report.write_sweep_report`).
"""

import copy
import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys

import ml_collections
from absl import flags

from dcl_keras import config as config_lib
from dcl_keras import experiments
from dcl_keras import workdir as run_folder
from dcl_keras.config import ConfigError, validate_config
from dcl_keras.errors import PREEMPTED_EXIT_STATUS, UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # A clone's root (configs/ in it).
TRAIN = ("-m", "dcl_keras.commands.train")  # bin/train, wherever the package is installed.
PLAN = "sweep.json"
COMMANDS = "commands.txt"
SLURM = "sweep.sbatch"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
SLURM_SIGNAL_SECONDS = 180  # USR1 this long before the time limit: a step and a checkpoint fit in it.
# An --sbatch=--signal=... that still asks for USR1 sent to the batch shell (the script's trap), as number or name.
REQUEUE_SIGNAL = re.compile(r"--signal[= ]B:(SIG)?(USR1|10)(@\d+)?")
METRICS = ("top1", "mean_class_accuracy", "pointing_hit_rate", "part_hit_rate")  # Markdown columns (those with values).
REWRITE = "Rerun that run (or delete the file)."


def absolute_spec(spec):
    """The config spec "path.py[:arg]" with an absolute path, so the commands run from any folder.

    A relative path is looked up in the current folder, then in the repository
    (as configs/... usually means).
    """
    path, arg = config_lib.split_spec(spec)
    if not os.path.isabs(path) and not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
        path = os.path.join(REPO_ROOT, path)
    if arg:  # Folders in the config argument (root=..., data_dir=...) too.
        items = [item.partition("=") for item in arg.split(",")]
        arg = ",".join(f"{k}{sep}{_absolute_if_path(v) if sep else ''}" for k, sep, v in items)
    return os.path.abspath(path) + (f":{arg}" if arg is not None else "")


def _typed(config, field, value):
    """`value` (a string from the command line, or a Python value) as the type of config field `field`.

    Strings parse as bin/train's flags would (absl's boolean parser), so a
    value the plan accepts is one every run accepts. None cannot be set from
    the command line (config_flags refuses it), so it is refused here too.
    """
    node = config
    for part in field.split(".")[:-1]:
        node = node[part] if isinstance(node, ml_collections.ConfigDict) and part in node else None
        if node is None:
            break
    name = field.split(".")[-1]
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        raise UserError(f"Unknown config field `{field}`. Received: {field}={value!r}")
    if isinstance(node[name], ml_collections.ConfigDict):
        raise UserError(f"Config field `{field}` is a section; set one of its fields. Received: {field}={value!r}")
    kind = node.get_type(name)
    if value is None or value == "None":
        raise UserError(
            f"Config field `{field}`: None cannot be passed on bin/train's command line; leave the field at its "
            f"default instead. Received: {field}={value!r}"
        )
    if not isinstance(value, str) or kind is str:
        return value
    try:
        if kind is bool:
            return flags.BooleanParser().parse(value)
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"Config field `{field}`: expected a {kind.__name__}. Received: {field}={value!r}") from None


def apply_overrides(config, overrides):
    """A copy of `config` with {"a.b": value} overrides set (values typed like the fields)."""
    config = copy.deepcopy(config)  # Keeps placeholder fields typed (copy_and_resolve_references does not).
    for field, value in overrides.items():
        value = _typed(config, field, value)
        *parents, name = field.split(".")
        node = config
        for part in parents:
            node = node[part]
        with node.unlocked():
            node[name] = value
    return config


def parse_assignments(items, flag):
    """["a.b=v", ...] -> {"a.b": "v"}; ["a.b=v1,v2"] -> {"a.b": ["v1", "v2"]} when `flag` is a list flag."""
    result = {}
    for item in items or []:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise UserError(f"{flag}: expected field=value (e.g. train.epochs=30). Received: {flag}={item}")
        result[field.removeprefix("config.")] = value
    return result


def slug(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("=", "-").replace(":", "-")).strip("_") or "base"


def _format(value):
    return repr(value) if isinstance(value, float) else str(value)


def plan(
    config_spec, grid, seeds, sweep_dir, *, vary=None, overrides=None, data_roots=None, points=None, train_args=()
):
    """The runs of a sweep: a list of dicts (point, seed, workdir, config, overrides, command).

    Args:
        config_spec: the base config, "path.py[:arg]".
        grid: a name of `experiments.GRIDS`.
        seeds: list of ints.
        sweep_dir: str, where the runs' workdirs go.
        vary: {field: [values]} crossed with the grid (e.g. a learning-rate grid).
        overrides: {field: value} for every run (e.g. train.epochs).
        data_roots: the table1 grid's dataset folders.
        points: optional names of the grid points to keep (before `vary`).
        train_args: extra bin/train flags for every run.

    Every point's config is built and validated here, so a bad grid fails
    before the first run, naming the point.
    """
    config_spec = absolute_spec(config_spec)
    base = apply_overrides(config_lib.load_config_file(config_spec), overrides or {})
    points = _points(grid, base, data_roots, points, vary)
    if not seeds:
        raise UserError("--seeds: expected at least one integer seed. Received: --seeds=")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    runs = []
    for name, spec, point in points:
        spec = absolute_spec(spec) if spec else config_spec
        point_base = (
            base if spec == config_spec else apply_overrides(config_lib.load_config_file(spec), overrides or {})
        )
        try:
            resolved = apply_overrides(point_base, point)
            validate_config(resolved)
        except (ConfigError, UserError) as e:
            raise UserError(f"Grid point {name!r}: {e}") from None
        fields = {field: _absolute_if_path(_get(resolved, field)) for field in {**(overrides or {}), **point}}
        if not resolved.eval.enabled:
            raise UserError(
                f"Grid point {name!r}: a sweep needs eval.enabled=True (a run is finished, and collected, when "
                "bin/train has written its evaluation.json). Received: eval.enabled=False"
            )
        for seed in seeds:
            workdir = os.path.abspath(os.path.join(sweep_dir, slug(name), f"seed_{seed}"))
            config = apply_overrides(resolved, {**fields, "seed": seed})  # What bin/train will record.
            _check_not_stale(workdir, config, name, seed)
            command = [
                sys.executable,
                *TRAIN,
                f"--config={spec}",
                f"--workdir={workdir}",
                f"--backend={backend}",
                f"--config.seed={seed}",
                *[f"--config.{field}={_format(value)}" for field, value in fields.items()],
                *train_args,
            ]
            runs.append(
                {
                    "point": name,
                    "seed": seed,
                    "workdir": workdir,
                    "config": spec,
                    "overrides": fields,
                    "command": command,
                }
            )
    workdirs = [run["workdir"] for run in runs]
    clash = sorted({w for w in workdirs if workdirs.count(w) > 1})
    if clash:
        raise UserError(f"Grid points share a workdir (their names differ only in punctuation): {clash[:3]}")
    return runs


def _points(grid, base, data_roots, names, vary):
    """The grid's (name, config spec, overrides), only those `names` if given, crossed with `vary`."""
    points = experiments.grid_points(grid, base, data_roots=data_roots)
    if names:
        unknown = sorted(set(names) - {name for name, _, _ in points})
        if unknown:
            raise UserError(f"--points: {unknown} not in grid {grid!r}: expected some of {[n for n, _, _ in points]}")
        points = [p for p in points if p[0] in names]
    for field, values in (vary or {}).items():
        points = [
            (f"{name},{field.split('.')[-1]}={value}", spec, {**point, field: value})
            for name, spec, point in points
            for value in values
        ]
    return points


def _get(config, field):
    for part in field.split("."):
        config = config[part]
    return config


def _absolute_if_path(value):
    """A string naming an existing relative path, made absolute (runs may start in another folder)."""
    if isinstance(value, str) and value and not os.path.isabs(value) and os.path.exists(value):
        return os.path.abspath(value)
    return value


def _check_not_stale(workdir, config, name, seed):
    """Refuses a workdir that bin/train started with other settings (its config.json differs)."""
    if not os.path.isfile(os.path.join(workdir, run_folder.CONFIG)):
        return
    saved = run_folder.flatten(run_folder.read_config(workdir))
    wanted = run_folder.flatten(json.loads(json.dumps(config.to_dict())))
    changed = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in wanted.items() if k in saved and saved[k] != v]
    if changed:
        raise UserError(
            f"Grid point {name!r} seed {seed}: {workdir} holds a run with other settings "
            f"({'; '.join(changed[:5])}). Use a new --sweep_dir, or the settings that run was started with."
        )


def finished(run):
    return run_folder.is_finished(run["workdir"])


def shell_line(run):
    """One shell line: skip when finished, else train (or resume).

    `exec` makes bin/train the shell's own process, so a signal sent to the
    line's process (the SLURM script forwards USR1 and TERM) reaches it.
    """
    finished_file = os.path.join(run["workdir"], run_folder.EVALUATION)
    return f"test -f {shlex.quote(finished_file)} || exec {shlex.join(run['command'])}"


def save_plan(runs, sweep_dir, invocation):
    """Writes sweep.json: the runs of earlier plans in this folder, updated by these (matched by workdir)."""
    os.makedirs(sweep_dir, exist_ok=True)
    path = os.path.join(sweep_dir, PLAN)
    merged, invocations = {}, []
    if os.path.isfile(path):
        saved = load_plan(sweep_dir)
        invocations = saved.get("invocations", [])
        merged = {run["workdir"]: run for run in saved["runs"]}
    merged.update({run["workdir"]: run for run in runs})
    if invocation not in invocations:
        invocations.append(invocation)
    run_folder.write_json(path, {"invocations": invocations, "runs": list(merged.values())}, sort_keys=False)


def load_plan(sweep_dir):
    path = os.path.join(sweep_dir, PLAN)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No sweep plan in {sweep_dir}: expected {path} (written by bin/sweep)")
    return run_folder.read_json(path, "Plan the sweep again with bin/sweep (its runs are kept).")


def write_commands(runs, sweep_dir):
    os.makedirs(sweep_dir, exist_ok=True)
    path = os.path.join(sweep_dir, COMMANDS)
    with open(path, "w") as f:
        f.writelines(shell_line(run) + "\n" for run in runs)
    return path


def write_slurm(runs, sweep_dir, sbatch_options=(), signal_seconds=SLURM_SIGNAL_SECONDS):
    """A SLURM array script over the commands file: task i runs line i + 1. Requeued tasks resume.

    SLURM sends the script USR1 `signal_seconds` before the time limit
    (`--signal=B:USR1@...`; an --sbatch=--signal=... option replaces it, and
    one that is not B:USR1 turns the requeue off: `slurm_signal_warning`). The
    script passes USR1 and TERM on to bin/train, which finishes its step,
    saves a checkpoint and exits with PREEMPTED_EXIT_STATUS; after USR1 the
    script then requeues its task, which resumes from that checkpoint (a
    failed `scontrol requeue` is reported, and the status stays 75). After
    TERM (preemption, scancel) it does not: SLURM's own --requeue brings a
    preempted job back, and a cancelled one stays cancelled.
    """
    commands = write_commands(runs, sweep_dir)
    own_signal = not any(option.startswith("--signal") for option in sbatch_options)
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=dcl-sweep",
        f"#SBATCH --array=0-{len(runs) - 1}",
        f"#SBATCH --output={os.path.abspath(sweep_dir)}/slurm-%A_%a.out",
        "#SBATCH --requeue",
        *([f"#SBATCH --signal=B:USR1@{int(signal_seconds)}"] if own_signal else []),
        *[f"#SBATCH {option}" for option in sbatch_options],
        "set -euo pipefail",
        f'line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(os.path.abspath(commands))})',
        "# bin/train saves at the end of its step on USR1 or TERM; the trap passes them on.",
        'requeue=0 child=""',
        "trap 'requeue=1; kill -USR1 \"$child\" 2>/dev/null || true' USR1",
        "trap 'kill -TERM \"$child\" 2>/dev/null || true' TERM",
        'bash -c "$line" &',
        "child=$!",
        "# wait also returns when a trap ran (status 128 + the signal), and the run may go on, or have ended",
        "# just after: wait again until it has ended, then read its own status, which bash keeps.",
        'while kill -0 "$child" 2>/dev/null; do wait "$child" || true; done',
        'status=0; wait "$child" || status=$?',
        f'if [ "$status" -eq {PREEMPTED_EXIT_STATUS} ] && [ "$requeue" -eq 1 ]; then',
        '    echo "dcl-sweep: the run saved a checkpoint before the time limit; requeueing task $SLURM_JOB_ID"',
        '    scontrol requeue "$SLURM_JOB_ID" || echo "dcl-sweep: scontrol requeue failed; resubmit to resume" >&2',
        "fi",
        'exit "$status"',
    ]
    path = os.path.join(sweep_dir, SLURM)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def slurm_signal_warning(sbatch_options):
    """What an --sbatch=--signal=... option that is not B:USR1 costs (the task is not requeued), or None."""
    signals = [option for option in sbatch_options if option.startswith("--signal")]
    if not signals or any(REQUEUE_SIGNAL.fullmatch(option) for option in signals):
        return None
    return (
        f"warning: {signals[-1]} replaces --signal=B:USR1@{SLURM_SIGNAL_SECONDS}: the script requeues a task only "
        "after USR1 sent to its batch shell (B:USR1@<seconds>), so these tasks are not requeued at the time limit"
    )


def run_all(runs, log=print):
    """Runs the unfinished runs one after another (each logs to <workdir>/train.log); returns the failed ones."""
    failed = []
    for i, run in enumerate(runs, 1):
        label = f"[{i}/{len(runs)}] {run['point']} seed {run['seed']}"
        if finished(run):
            log(f"{label}: finished, skipped")
            continue
        os.makedirs(run["workdir"], exist_ok=True)
        log(f"{label}: training in {run['workdir']}")
        with open(os.path.join(run["workdir"], run_folder.TRAIN_LOG), "a") as out:
            code = subprocess.call(run["command"], stdout=out, stderr=subprocess.STDOUT)
        if code == PREEMPTED_EXIT_STATUS:
            log(f"{label}: stopped by a signal after saving its checkpoint; running the sweep again resumes it")
            failed.append(run)
        elif code:
            log(f"{label}: failed with exit code {code}; see {run['workdir']}/train.log")
            failed.append(run)
    return failed


def _metrics(report):
    values = {key: value for key, value in report.items() if isinstance(value, float)}
    if "mean_class_accuracy" not in values and report.get("per_class_accuracy"):
        per_class = [v for v in report["per_class_accuracy"].values() if v is not None]
        values["mean_class_accuracy"] = sum(per_class) / len(per_class)
    return values


def mean_std(values):
    """(mean, sample std or None for one value) of a list of floats."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def collect(sweep_dir):
    """Writes results.csv and results.md from the finished runs; returns (rows, summary).

    The rows and summary are what `dcl_keras.report.write_sweep_report` draws.
    """
    saved = load_plan(sweep_dir)
    rows = []
    for run in saved["runs"]:
        row = {"point": run["point"], "seed": run["seed"], "status": "missing", "workdir": run["workdir"]}
        if finished(run):
            row.update(status="finished", **_metrics(run_folder.read_evaluation(run["workdir"], REWRITE)))
            pointing = os.path.join(run["workdir"], run_folder.POINTING)
            if os.path.isfile(pointing):
                report = run_folder.read_json(pointing, REWRITE)
                for key, column in (
                    ("hit_rate", "pointing_hit_rate"),
                    ("centre_hit_rate", "pointing_centre_hit_rate"),
                    ("part_hit_rate", "part_hit_rate"),
                ):
                    if isinstance(report.get(key), float):
                        row[column] = report[key]
        row["overrides"] = json.dumps(run["overrides"], sort_keys=True)
        rows.append(row)
    columns = ["point", "seed", "status"]
    columns += sorted({key for row in rows for key in row} - set(columns) - {"workdir", "overrides"})
    columns += ["workdir", "overrides"]
    with open(os.path.join(sweep_dir, RESULTS_CSV), "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    with open(os.path.join(sweep_dir, RESULTS_MD), "w") as f:
        f.write(markdown_table(summary, saved["invocations"]))
    return rows, summary


def summarize(rows):
    """Per grid point, in plan order: seeds finished and planned, and mean/std/min of each metric."""
    summary = {}
    for row in rows:
        entry = summary.setdefault(row["point"], {"finished": 0, "planned": 0, "values": {}})
        entry["planned"] += 1
        if row["status"] != "finished":
            continue
        entry["finished"] += 1
        for metric in METRICS:
            if metric in row:
                entry["values"].setdefault(metric, []).append(row[metric])
    for entry in summary.values():
        entry["stats"] = {m: (*mean_std(v), min(v)) for m, v in entry["values"].items()}
    return summary


def markdown_table(summary, invocations):
    metrics = [m for m in METRICS if any(m in entry["stats"] for entry in summary.values())]
    lines = [
        "Produced by:",
        "",
        *[f"    {invocation}" for invocation in invocations],
        "",
        "Mean +- sample std over seeds; min is the worst seed.",
        "",
        "| point | seeds | " + " | ".join(f"{m} mean +- std | {m} min" for m in metrics) + " |",
        "|---|---|" + "---|---|" * len(metrics),
    ]
    for point, entry in summary.items():
        cells = [point, f"{entry['finished']}/{entry['planned']}"]
        for metric in metrics:
            if metric not in entry["stats"]:
                cells += ["", ""]
                continue
            mean, std, worst = entry["stats"][metric]
            cells += [f"{mean:.4f} +- {std:.4f}" if std is not None else f"{mean:.4f}", f"{worst:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
