"""The resumable sweep runner (dcl_keras/sweep.py): plans, commands and SLURM files (a preempted task requeued),
running, collecting, bin/sweep."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dcl_keras import errors, experiments, sweep
from dcl_keras import workdir as run_folder
from dcl_keras.config import load_config_file
from dcl_keras.errors import UserError

from helpers import run_bin


def _plan(tiny_config, tmp_path, config_file, grid="ablation", **kwargs):
    return sweep.plan(config_file, grid, [0, 1], str(tmp_path / "sweep"), **kwargs)


def test_plan_spells_out_every_value_and_refuses_a_bad_point_before_any_run(tiny_config, tmp_path, tiny_config_file):
    runs = _plan(tiny_config, tmp_path, tiny_config_file, vary={"train.learning_rate": ["0.01", "0.1"]})
    assert len(runs) == len(experiments.ARMS) * 2 * 2
    run = next(r for r in runs if r["point"] == "arm=baseline_equal_compute,learning_rate=0.1" and r["seed"] == 1)
    assert "--config.input.batch_size=8" in run["command"] and "--config.train.learning_rate=0.1" in run["command"]
    assert "--config.seed=1" in run["command"] and run["workdir"].endswith("seed_1")
    assert len({r["workdir"] for r in runs}) == len(runs)
    with pytest.raises(UserError, match="Grid point 'ratio=1:0'.*input.image_size"):
        sweep.plan(tiny_config_file, "ratio", [0], str(tmp_path / "s"), overrides={"input.image_size": "30"})
    with pytest.raises(UserError, match="Unknown config field `train.epoch`"):
        sweep.plan(tiny_config_file, "single", [0], str(tmp_path / "s"), overrides={"train.epoch": "3"})
    with pytest.raises(UserError, match="--points"):
        sweep.plan(tiny_config_file, "ablation", [0], str(tmp_path / "s"), points=["arm=nope"])


def test_commands_and_slurm_files_skip_finished_runs(tiny_config, tmp_path, tiny_config_file):
    runs = _plan(tiny_config, tmp_path, tiny_config_file, points=["arm=dcl"])
    sweep_dir = str(tmp_path / "sweep")
    commands = sweep.write_commands(runs, sweep_dir)
    script = open(sweep.write_slurm(runs, sweep_dir, ["--gres=gpu:1"])).read()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --gres=gpu:1" in script and commands in script
    lines = open(commands).read().splitlines()
    assert len(lines) == 2
    # A finished run's line does nothing: its command is never executed.
    os.makedirs(runs[0]["workdir"])
    open(os.path.join(runs[0]["workdir"], run_folder.EVALUATION), "w").write("{}")
    line = lines[0].replace(sys.executable, "false")
    assert subprocess.run(["bash", "-c", line]).returncode == 0
    assert subprocess.run(["bash", "-c", lines[1].replace(sys.executable, "false")]).returncode != 0


def _fake_run(tmp_path, name, seed, top1, script):
    workdir = str(tmp_path / "sweep" / name / f"seed_{seed}")
    report = {"top1": top1, "top5": 1.0, "per_class_accuracy": {"a": top1, "b": top1}}
    code = f"import json, os, sys; {script}; json.dump({report!r}, open(os.path.join({workdir!r}, 'evaluation.json'), 'w'))"
    return {
        "point": name,
        "seed": seed,
        "workdir": workdir,
        "config": "x",
        "overrides": {},
        "command": [sys.executable, "-c", code],
    }


def test_run_all_skips_finished_runs_reports_failures_and_collect_tables_mean_and_std(tmp_path):
    sweep_dir = str(tmp_path / "sweep")
    runs = [
        _fake_run(tmp_path, "a", 0, 0.4, "pass"),
        _fake_run(tmp_path, "a", 1, 0.6, "pass"),
        _fake_run(tmp_path, "b", 0, 0.5, "sys.exit(3)"),  # Fails before writing a result.
    ]
    sweep.save_plan(runs, sweep_dir, "bin/sweep --test")
    failed = sweep.run_all(runs, log=lambda line: None)
    assert [(r["point"], r["seed"]) for r in failed] == [("b", 0)]
    # Finished runs are not run again: a second pass with commands that would fail skips them.
    for run in runs[:2]:
        run["command"] = [sys.executable, "-c", "import sys; sys.exit(1)"]
    assert [(r["point"], r["seed"]) for r in sweep.run_all(runs, log=lambda line: None)] == [("b", 0)]
    with open(os.path.join(runs[0]["workdir"], run_folder.POINTING), "w") as f:
        json.dump({"hit_rate": 0.9, "centre_hit_rate": 0.95, "part_hit_rate": 0.8}, f)
    rows, summary = sweep.collect(sweep_dir)
    assert [row["status"] for row in rows] == ["finished", "finished", "missing"]
    assert rows[0]["part_hit_rate"] == 0.8 and summary["a"]["stats"]["part_hit_rate"][0] == 0.8
    mean, std, worst = summary["a"]["stats"]["top1"]
    assert mean == pytest.approx(0.5) and std == pytest.approx(np.std([0.4, 0.6], ddof=1)) and worst == 0.4
    table = open(os.path.join(sweep_dir, sweep.RESULTS_MD)).read()
    assert "| a | 2/2 | 0.5000 +- 0.1414 | 0.4000 |" in table and "| b | 0/1 |" in table
    assert "bin/sweep --test" in table
    with open(os.path.join(sweep_dir, sweep.RESULTS_CSV)) as f:
        assert [r["mean_class_accuracy"] for r in csv.DictReader(f)][:2] == ["0.4", "0.6"]


@pytest.mark.slow
def test_bin_sweep_runs_two_arms_then_skips_them_when_rerun(tiny_config_file, tmp_path):
    """Also: a relative path in --set is made absolute, and a rerun's plan matches what bin/train recorded."""
    os.makedirs(tmp_path / "cache")
    args = [
        f"--config={tiny_config_file}",
        "--grid=ablation",
        "--points=arm=baseline,arm=destruction_discriminator",
        "--seeds=0",
        "--set=data.demo.cache_dir=cache",
        f"--sweep_dir={tmp_path / 'sweep'}",
    ]
    done = run_bin("sweep", *args, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| arm=baseline | 1/1 |" in done.stdout and "| arm=destruction_discriminator | 1/1 |" in done.stdout
    with open(tmp_path / "sweep" / "arm-baseline" / "seed_0" / "config.json") as f:
        saved = json.load(f)
    assert saved["rcm"]["destructed"] == 0 and saved["loss"]["beta"] == 0.0
    assert saved["data"]["demo"]["cache_dir"] == str(tmp_path / "cache")
    again = run_bin("sweep", *args, cwd=str(tmp_path))
    assert again.returncode == 0 and again.stdout.count("finished, skipped") == 2
    bad = run_bin(
        "sweep",
        f"--config={tiny_config_file}",
        "--grid=k",
        "--set=rcm.n=2",
        "--set=rcm.k=1",
        f"--sweep_dir={tmp_path}/k",
    )
    assert bad.returncode == 2 and "rcm.n > 3" in bad.stderr and "Traceback" not in bad.stderr


def test_override_values_are_typed_as_bin_train_parses_them(tiny_config):
    assert sweep.apply_overrides(tiny_config, {"data.label_base": "1"}).data.label_base == 1
    assert sweep.apply_overrides(tiny_config, {"eval.flip": "false"}).eval.flip is False
    assert sweep.apply_overrides(tiny_config, {"loss.beta": "0"}).loss.beta == 0.0
    for field, value, why in (
        ("eval.flip", "yes", "expected a bool"),  # absl's boolean flags refuse "yes".
        ("train.epochs", "1.5", "expected a int"),
        ("data.label_base", "None", "None cannot be passed"),  # config_flags refuses None.
        ("rcm", "3", "is a section"),
        ("input.image_size.x", "3", "Unknown config field"),
    ):
        with pytest.raises(UserError, match=f"`{field}`.*{why}|{why}.*`{field}`"):
            sweep.apply_overrides(tiny_config, {field: value})


def test_commands_carry_the_backend_and_absolute_paths(tiny_config, tmp_path, tiny_config_file, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.weights.h5").write_bytes(b"")
    runs = sweep.plan(tiny_config_file, "single", [0], "sw", overrides={"model.weights": "w.weights.h5"})
    assert "--backend=jax" in runs[0]["command"]
    assert f"--config.model.weights={tmp_path / 'w.weights.h5'}" in runs[0]["command"]
    assert runs[0]["workdir"] == str(tmp_path / "sw" / "base" / "seed_0")
    with pytest.raises(UserError, match="--seeds"):
        sweep.plan(tiny_config_file, "single", [], "sw")


def test_a_sweep_dir_with_runs_of_other_settings_is_refused_and_plans_merge(tiny_config, tmp_path, tiny_config_file):
    sweep_dir = str(tmp_path / "sweep")
    runs = sweep.plan(tiny_config_file, "ablation", [0], sweep_dir, points=["arm=dcl"])
    # bin/train writes the resolved config into the workdir; here: the same run with 1 epoch.
    config = load_config_file(tiny_config_file)
    os.makedirs(runs[0]["workdir"])
    with open(os.path.join(runs[0]["workdir"], "config.json"), "w") as f:
        json.dump(config.to_dict(), f)
    assert sweep.plan(tiny_config_file, "ablation", [0], sweep_dir, points=["arm=dcl"])  # Same settings: fine.
    with pytest.raises(UserError, match=r"arm=dcl.*train.epochs: 1 -> 3"):
        sweep.plan(tiny_config_file, "ablation", [0], sweep_dir, points=["arm=dcl"], overrides={"train.epochs": "3"})
    # Plans made in chunks (--points) add up in sweep.json.
    sweep.save_plan(runs, sweep_dir, "bin/sweep --points=arm=dcl")
    more = sweep.plan(tiny_config_file, "ablation", [0], sweep_dir, points=["arm=baseline"])
    sweep.save_plan(more, sweep_dir, "bin/sweep --points=arm=baseline")
    saved = sweep.load_plan(sweep_dir)
    assert [r["point"] for r in saved["runs"]] == ["arm=dcl", "arm=baseline"] and len(saved["invocations"]) == 2


def test_the_slurm_script_runs_the_line_of_its_array_task(tmp_path):
    runs = [_fake_run(tmp_path, "a", seed, 0.5, "pass") for seed in (0, 1)]
    sweep_dir = str(tmp_path / "sweep")
    script = sweep.write_slurm(runs, sweep_dir)
    for run in runs:
        os.makedirs(run["workdir"])
    done = subprocess.run(["bash", script], env=dict(os.environ, SLURM_ARRAY_TASK_ID="1"), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert [sweep.finished(run) for run in runs] == [False, True]


def _slurm_run(tmp_path, body):
    """A sweep run whose command is a small Python program (in place of bin/train)."""
    program = tmp_path / "program.py"
    program.write_text(body)
    return {"point": "p", "seed": 0, "workdir": str(tmp_path / "run"), "command": [sys.executable, str(program)]}


STOPS_ON_SIGNAL = f"""
import os, signal, sys, time
signal.signal(signal.SIGUSR1, lambda s, f: sys.exit({errors.PREEMPTED_EXIT_STATUS}))
signal.signal(signal.SIGTERM, lambda s, f: sys.exit({errors.PREEMPTED_EXIT_STATUS}))
open(os.path.join(os.path.dirname(__file__), "started"), "w").close()
time.sleep(60)
"""


@pytest.mark.backend_agnostic
def test_the_slurm_script_asks_for_the_signal_and_requeues(tmp_path):
    run = _slurm_run(tmp_path, "")
    script = open(sweep.write_slurm([run], str(tmp_path / "sweep"))).read()
    assert f"#SBATCH --signal=B:USR1@{sweep.SLURM_SIGNAL_SECONDS}\n" in script and "#SBATCH --requeue\n" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert sweep.PREEMPTED_EXIT_STATUS == errors.PREEMPTED_EXIT_STATUS == 75
    own = open(sweep.write_slurm([run], str(tmp_path / "own"), ["--signal=B:USR1@600"])).read()
    assert own.count("--signal") == 1 and "#SBATCH --signal=B:USR1@600" in own


@pytest.mark.backend_agnostic
def test_a_signal_option_that_turns_the_requeue_off_is_warned_about():
    for kept in ([], ["--gres=gpu:1"], ["--signal=B:USR1@600"], ["--signal=B:SIGUSR1@60"], ["--signal=B:10@60"]):
        assert sweep.slurm_signal_warning(kept) is None, kept
    for off in (["--signal=USR1@600"], ["--signal=B:TERM@60"], ["--signal=R:USR1@60"]):
        warning = sweep.slurm_signal_warning(off)
        assert warning.startswith(f"warning: {off[0]} replaces --signal=B:USR1@180") and "not requeued" in warning


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "signum,requeued,scontrol,slow_trap",
    [
        (signal.SIGUSR1, True, 0, False),
        (signal.SIGTERM, False, 0, False),
        (signal.SIGUSR1, True, 1, False),  # scontrol fails.
        # The run ends while the trap still runs: the script's status is the run's 75, not the interrupted wait's 138.
        (signal.SIGUSR1, True, 0, True),
    ],
)
def test_the_slurm_script_passes_the_signal_on_and_requeues_after_usr1(tmp_path, signum, requeued, scontrol, slow_trap):
    run = _slurm_run(tmp_path, STOPS_ON_SIGNAL)
    script = sweep.write_slurm([run], str(tmp_path / "sweep"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\nexit {scontrol}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", SLURM_JOB_ID="4242", PATH=f"{bin_dir}:{os.environ['PATH']}")
    if slow_trap:  # bash sources BASH_ENV first: the trap's `kill -USR1` returns a second after the run got it.
        (tmp_path / "slow_kill.sh").write_text(
            'kill() { builtin kill "$@"; local s=$?; [ "$1" != -USR1 ] || sleep 1; return $s; }\n'
        )
        env["BASH_ENV"] = str(tmp_path / "slow_kill.sh")
    batch = subprocess.Popen(["bash", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120  # A loaded machine (CI beside training runs) starts the run slowly.
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (tmp_path / "started").exists(), "the run did not start within 120 s"  # Else the trap may not be set.
    time.sleep(0.2)  # The shell reaches its `wait` (a signal before it is also handled, but not the point here).
    batch.send_signal(signum)  # B: SLURM signals the batch shell only.
    output, _ = batch.communicate(timeout=30)
    assert batch.returncode == errors.PREEMPTED_EXIT_STATUS, output
    log = tmp_path / "scontrol.log"
    assert (log.read_text() if log.exists() else "") == ("requeue 4242\n" if requeued else ""), output
    assert ("scontrol requeue failed" in output) == bool(scontrol), output
