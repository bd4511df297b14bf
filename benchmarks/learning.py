"""Accuracy benchmark: does this commit learn as well as the ones before it?

    make bench-learning                                  # all testbeds, both arms, seeds 0-2
    python benchmarks/learning.py --record               # ... and append the figures to the history
    python benchmarks/learning.py --testbeds=typefaces --arms=dcl --seeds=0   # a quick look: compared, not recorded

Trains DCL and the equal-compute plain classifier (the same images a step and
the same steps, `experiments.arm_overrides`) on each generated testbed over
the seeds, through bin/sweep's machinery (one bin/train per run, resumable),
and compares each arm's mean test top-1 with the last row of
benchmarks/learning_history.csv for the same testbed, recipe (config file
and generated dataset: a new demo generator starts a new history) and arm. It
exits with status 1 when a mean falls by more than max(2 x the recorded std,
0.02), naming the arm and the figures; --record appends this run's rows
(commit, date, machine, per-seed figures, mean, std).

Run it after any change to data, augmentation, model, losses or optimizer,
and record the figures of the commit that makes the change. About 2 hours
on 2 CPU cores (x86, AVX2 or better) with the defaults; the runs resume
when it is started again with the same --work_dir.

Testbeds:
  demo       configs/demo_study.py: the demo's birds, the short study recipe.
  typefaces  configs/typefaces.py: 16 typefaces in 224-px JPEGs, shrunk to
             144 and cropped to 128 (thin, high-contrast detail).
  typefaces_pretrained, demo_pretrained
             configs/typefaces_pretrained.py, configs/demo_pretrained.py: the
             same data fine-tuned for 10 epochs from the backbone that
             bin/pretrain trains on the generated corpus (configs/pretrain.py;
             run first when its weights are missing, about 20 minutes, then
             cached). A new pretraining recipe or corpus starts a new history.
"""

import argparse
import csv
import datetime
import os
import subprocess
import sys

from dcl_keras import pretraining, sweep
from dcl_keras.config import load_config_file
from dcl_keras.data import demo

from common import ROOT, machine

TESTBEDS = {
    "demo": "configs/demo_study.py",
    "typefaces": "configs/typefaces.py",
    "typefaces_pretrained": "configs/typefaces_pretrained.py",
    "demo_pretrained": "configs/demo_pretrained.py",
}
PRETRAIN = "configs/pretrain.py"  # What the *_pretrained testbeds' model.weights comes from.
ARMS = ("dcl", "baseline_equal_compute")
HISTORY = os.path.join(ROOT, "benchmarks", "learning_history.csv")
COLUMNS = ("commit", "date", "machine", "testbed", "recipe", "arm", "seeds", "per_seed", "mean", "std")
MIN_DROP = 0.02


def commit():
    """The checked-out commit, with "-dirty" when tracked files differ from it."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def read_history(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows, 2):
        missing = [c for c in COLUMNS if not row.get(c)]
        if missing and set(missing) != {"std"}:
            sys.exit(f"{path}, line {i}: expected the columns {list(COLUMNS)}; {missing} empty. Received: {row}")
    return rows


def append_history(path, rows):
    new = not os.path.isfile(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def verdict(current, recorded):
    """(ok, message): `current` and `recorded` are history rows of the same testbed, recipe and arm."""
    mean, ref = float(current["mean"]), float(recorded["mean"])
    ref_std = float(recorded["std"]) if recorded["std"] else 0.0
    allowed = max(2 * ref_std, MIN_DROP)
    text = (
        f"{current['testbed']} / {current['arm']}: {mean:.4f} +- {float(current['std'] or 0):.4f} "
        f"(seeds {current['seeds']}) against {ref:.4f} +- {ref_std:.4f} at {recorded['commit']} "
        f"({recorded['date']}); allowed drop {allowed:.4f}"
    )
    if mean < ref - allowed:
        return False, f"REGRESSION {text}: fell by {ref - mean:.4f}"
    return True, f"ok {text}"


def last_recorded(history, row):
    same = [h for h in history if (h["testbed"], h["recipe"], h["arm"]) == (row["testbed"], row["recipe"], row["arm"])]
    return same[-1] if same else None


def recipe(spec):
    """The config file, the generated dataset it reads and its pretraining run: rows compare only when all agree."""
    config = load_config_file(os.path.join(ROOT, spec))
    name = f"{spec}@{os.path.basename(demo.dataset_root(config.data.demo))}"
    weights = str(config.model.weights)
    if os.path.basename(weights) == pretraining.WEIGHTS_FILE:
        name += f"+{os.path.basename(os.path.dirname(weights))}"  # pretrain-<digest of its recipe and corpus>
    return name


def ensure_pretrained(spec, log):
    """Runs bin/pretrain when the testbed `spec` starts from its backbone and the weights are missing."""
    weights = str(load_config_file(os.path.join(ROOT, spec)).model.weights)
    if os.path.basename(weights) != pretraining.WEIGHTS_FILE or os.path.isfile(weights):
        return
    log(f"{spec} fine-tunes {weights}, not there yet: bin/pretrain --config={PRETRAIN} (about 20 minutes)")
    command = [sys.executable, os.path.join(ROOT, "bin", "pretrain"), f"--config={os.path.join(ROOT, PRETRAIN)}"]
    if subprocess.run(command, cwd=ROOT).returncode or not os.path.isfile(weights):
        sys.exit(f"bin/pretrain --config={PRETRAIN} did not write {weights}")


def run_testbed(testbed, arms, seeds, work_dir, log):
    """History rows (without commit/date/machine) of one testbed's arms over the seeds."""
    spec = TESTBEDS[testbed]
    ensure_pretrained(spec, log)
    runs = sweep.plan(
        os.path.join(ROOT, spec),
        "ablation",
        seeds,
        os.path.join(work_dir, testbed),
        points=[f"arm={arm}" for arm in arms],
    )
    sweep.save_plan(runs, os.path.join(work_dir, testbed), " ".join(sys.argv))
    failed = sweep.run_all(runs, log=log)
    if failed:
        sys.exit(f"{len(failed)} run(s) failed: see {failed[0]['workdir']}/train.log")
    rows, _ = sweep.collect(os.path.join(work_dir, testbed))
    out = []
    for arm in arms:
        values = [r["top1"] for r in rows if r["point"] == f"arm={arm}" and r["status"] == "finished"]
        mean, std = sweep.mean_std(values)
        out.append(
            {
                "testbed": testbed,
                "recipe": recipe(spec),
                "arm": arm,
                "seeds": " ".join(str(s) for s in seeds),
                "per_seed": " ".join(f"{v:.4f}" for v in values),
                "mean": f"{mean:.4f}",
                "std": f"{std:.4f}" if std is not None else "",
            }
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbeds", default=",".join(TESTBEDS), help=f"Comma-separated, of {list(TESTBEDS)}.")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"Comma-separated, of {list(ARMS)}.")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated integer seeds.")
    parser.add_argument("--work_dir", default="", help="Where the runs go (default workdirs/bench_learning/<commit>).")
    parser.add_argument("--history", default=HISTORY, help="The recorded history (CSV).")
    parser.add_argument("--record", action="store_true", help="Append this run's figures to the history.")
    parser.add_argument("--label", default="", help="The commit name to record (default: git's, +-dirty).")
    args = parser.parse_args(argv)

    def choices(flag, value, allowed):
        items = [v for v in value.split(",") if v]
        unknown = [v for v in items if v not in allowed]
        if unknown or not items:
            parser.error(f"--{flag}: expected a comma-separated subset of {list(allowed)}. Received: {value!r}")
        return items

    testbeds = choices("testbeds", args.testbeds, TESTBEDS)
    arms = choices("arms", args.arms, ARMS)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers. Received: {args.seeds!r}")
    history = read_history(args.history)
    here = args.label or commit()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%S")
    work_dir = args.work_dir or os.path.join(
        ROOT, "workdirs", "bench_learning", here if not here.endswith("-dirty") else f"{here}-{stamp}"
    )
    cpu = machine()
    print(f"machine: {cpu}\ncommit: {here}\nruns: {work_dir}", flush=True)

    rows = []
    for testbed in testbeds:
        for row in run_testbed(testbed, arms, seeds, work_dir, log=lambda m: print(m, flush=True)):
            rows.append({"commit": here, "date": stamp[:10], "machine": cpu, **row})

    failures = 0
    print(f"\nTest top-1, mean +- sample std over seeds {args.seeds} (machine: {cpu}):")
    for row in rows:
        recorded = last_recorded(history, row)
        if recorded is None:
            earlier = [h for h in history if (h["testbed"], h["arm"]) == (row["testbed"], row["arm"])]
            why = (
                f"its recipe changed, a new history starts (recorded so far: {earlier[-1]['recipe']} at "
                f"{earlier[-1]['commit']}; now {row['recipe']})"
                if earlier
                else "nothing recorded to compare with"
            )
            print(
                f"new {row['testbed']} / {row['arm']}: {row['mean']} +- {row['std'] or '-'} ({row['per_seed']}); {why}"
            )
            continue
        ok, message = verdict(row, recorded)
        failures += not ok
        print(message)
    if args.record:
        append_history(args.history, rows)
        print(f"recorded {len(rows)} row(s) in {args.history}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
