"""Checkpoints a long run can trust (dcl_keras/checkpointing.py): a diverged model is never saved, one live run per
workdir, unwritable or full folders are refused before training; bin/train killed (SIGKILL), stopped by a signal or
out of disk while checkpointing is rerun and ends with the weights of an uninterrupted run (the in-process preemption
and storage tests: tests/test_preemption.py)."""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from dcl_keras import checkpointing, errors, training
from dcl_keras.saving import load_model

from distribution_config import overrides
from helpers import ROOT

BATCH = 5  # 24 demo examples: 4 batches an epoch and 4 examples left over, as CUB at batch 16.


def test_a_diverging_run_stops_naming_step_and_term_and_resumes_with_a_lower_rate(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.eval.enabled = config.export.enabled = False
    config.train.epochs = 1
    training.train_and_evaluate(config, str(tmp_path))
    good = load_model(str(tmp_path / checkpointing.CHECKPOINT))
    config.train.epochs = 3
    config.train.learning_rate = 1e12
    with pytest.raises(checkpointing.TrainingDivergedError, match=r"diverged at step \d+.*classifier_loss"):
        training.train_and_evaluate(config, str(tmp_path))
    kept = load_model(str(tmp_path / checkpointing.CHECKPOINT))
    assert checkpointing.completed_steps(kept) == 6  # Still the last good checkpoint, epoch 1.
    for a, b in zip(good.weights, kept.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    config.train.learning_rate = 0.01  # The same command with a lower rate resumes from it.
    result = training.train_and_evaluate(config, str(tmp_path))
    final = load_model(result["model"])
    assert all(np.all(np.isfinite(np.asarray(w))) for w in final.weights)
    assert checkpointing.completed_steps(load_model(str(tmp_path / checkpointing.CHECKPOINT))) == 18


def test_a_second_run_on_a_held_workdir_is_refused(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    os.makedirs(tmp_path / "checkpoints")
    with checkpointing.WorkdirLock(str(tmp_path)):
        with pytest.raises(checkpointing.WorkdirError, match=rf"in use by a live run \(pid {os.getpid()} on"):
            training.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "config.json").exists()


def test_unwritable_or_full_workdir_and_export_folder_are_reported_before_training(tiny_config, tmp_path, monkeypatch):
    config = tiny_config.copy_and_resolve_references()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(checkpointing.WorkdirError, match="The workdir is not writable"):
        training.train_and_evaluate(config, str(blocker / "run"))
    config.export.dir = str(blocker / "export")
    with pytest.raises(checkpointing.WorkdirError, match=r"export folder \(export.dir\) is not writable"):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    config.export.dir = ""

    class Full:
        free = 1 << 20

    monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda path: Full)
    with pytest.raises(checkpointing.WorkdirError, match="1 MiB free"):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / checkpointing.CHECKPOINT).exists()


def _train_cmd(workdir, tiny_config, *extra):
    config = tiny_config
    return [
        sys.executable,
        os.path.join(ROOT, "bin", "train"),
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        f"--config.data.demo.cache_dir={config.data.demo.cache_dir}",
        f"--config.data.demo.train_per_class={config.data.demo.train_per_class}",
        f"--config.data.demo.test_per_class={config.data.demo.test_per_class}",
        f"--config.input.batch_size={BATCH}",
        "--config.train.epochs=5",
        "--config.eval.enabled=False",
        "--config.export.enabled=False",
        *extra,
    ]


def _run(cmd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def _kill_when(cmd, ready):
    """Starts bin/train, SIGKILLs it as soon as `ready(state)` holds for its checkpoints/state.json."""
    workdir = cmd[3].split("=", 1)[1]
    state_path = os.path.join(workdir, checkpointing.STATE)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with open(state_path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = None
        if state and ready(state):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    return process.returncode, state


def _worst_difference(a, b):
    a, b = load_model(str(a)), load_model(str(b))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a.weights, b.weights, strict=True))


@pytest.mark.parametrize(
    "placement,every,ready",
    [
        # Opt-in (make test-slow): killed at an epoch boundary, with RCM in the pipeline and on the device.
        pytest.param("pipeline", 0, lambda s: s.get("completed_epochs", 0) >= 2, marks=pytest.mark.slow),
        pytest.param("device", 0, lambda s: s.get("completed_epochs", 0) >= 2, marks=pytest.mark.slow),
        ("pipeline", 3, lambda s: s["step"] % 4 and s["step"] >= 5),  # The last checkpoint is mid-epoch.
    ],
)
def test_sigkill_and_rerun_ends_with_the_weights_of_an_uninterrupted_run(
    tiny_config, tmp_path, placement, every, ready
):
    extra = [f"--config.rcm.placement={placement}", f"--config.train.checkpoint_every_steps={every}"]
    straight = _run(_train_cmd(tmp_path / "straight", tiny_config, *extra))
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _train_cmd(tmp_path / "killed", tiny_config, *extra)
    code, state = _kill_when(killed, ready)
    assert code == -signal.SIGKILL and state is not None, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "model.keras").exists()
    again = _run(killed)  # The same command.
    assert again.returncode == 0, again.stderr[-3000:]
    resumed_at = int(re.search(r"Resuming from .* at step (\d+)\.", again.stderr).group(1))
    assert resumed_at > 0
    assert ("Finishing epoch" in again.stderr) == bool(resumed_at % 4)
    if every:
        assert resumed_at % 4, "killed right after an epoch checkpoint: the mid-epoch path was not exercised"
    assert _worst_difference(tmp_path / "straight" / "model.keras", tmp_path / "killed" / "model.keras") <= 1e-5


def _signal_when(cmd, ready, signum, delay):
    """Starts bin/train; sends `signum` `delay` seconds after `ready(state)` holds; returns (status, stderr)."""
    workdir = cmd[3].split("=", 1)[1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    stderr = []
    reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with open(os.path.join(workdir, checkpointing.STATE)) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = None
        if state and ready(state):
            time.sleep(delay)
            process.send_signal(signum)
            break
        time.sleep(0.02)
    process.wait()
    reader.join()
    return process.returncode, stderr[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "placement,signum,backend",
    [("pipeline", signal.SIGTERM, "tensorflow"), ("device", signal.SIGUSR1, "jax")],
)
def test_a_stop_signal_and_rerun_end_with_the_weights_of_an_uninterrupted_run(
    tiny_config, tmp_path, placement, signum, backend
):
    extra = [f"--config.rcm.placement={placement}", f"--backend={backend}"]
    straight = _run(_train_cmd(tmp_path / "straight", tiny_config, *extra))
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = _train_cmd(tmp_path / "stopped", tiny_config, *extra)
    seed = int(os.environ.get("DCL_TEST_SEED", time.time_ns() % 10**6))
    delay = random.Random(f"{seed}-{placement}").uniform(0, 0.15)  # A random step of epoch 2 or 3 (0.1-0.3 s each).
    print(f"DCL_TEST_SEED={seed}: the signal comes {delay:.3f} s after epoch 1's checkpoint")
    code, stderr = _signal_when(stopped, lambda s: s.get("completed_epochs", 0) >= 1, signum, delay)
    assert code == errors.PREEMPTED_EXIT_STATUS, (seed, delay, stderr[-3000:])
    line = stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    match = re.fullmatch(
        rf"train: Stopped by {name} at step (\d+): the checkpoint (\S+) holds it\. Rerun the same command to resume from step \1\. Exit status 75\.",
        line,
    )
    assert match, line
    step = int(match.group(1))
    assert match.group(2) == str(tmp_path / "stopped" / checkpointing.CHECKPOINT)
    assert checkpointing.saved_state(str(tmp_path / "stopped"))["step"] == step
    assert not (tmp_path / "stopped" / "model.keras").exists()
    again = _run(stopped)  # The same command.
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at step {step}." in again.stderr
    worst = _worst_difference(tmp_path / "straight" / "model.keras", tmp_path / "stopped" / "model.keras")
    assert worst <= 1e-5, (seed, step, worst)


def _two_processes(args, workdir):
    """Starts the same bin/train command as JAX processes 0 and 1 on loopback; returns them with their log paths."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    started = []
    for i in range(2):
        log = os.path.join(workdir, f"process_{i}.log")
        with open(log, "a") as out:
            command = [*args, f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"]
            started.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT), log))
    return started


def _wait_all(started, timeout=480):
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p, _ in started) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for p, _ in started:
            if p.poll() is None:
                p.kill()
            p.wait()
    return [p.returncode for p, _ in started]


@pytest.mark.slow
def test_two_jax_processes_stop_at_the_same_step_when_one_is_signalled(tiny_config, tmp_path):
    cache = tiny_config.data.demo.cache_dir
    settings = [*overrides(cache), "--config.train.epochs=4", "--backend=jax"]  # 3 steps an epoch, 12 steps.
    single = _run([sys.executable, os.path.join(ROOT, "bin", "train"), f"--workdir={tmp_path / 'single'}", *settings])
    assert single.returncode == 0, single.stderr[-3000:]
    workdir = tmp_path / "two"
    workdir.mkdir()
    args = [sys.executable, os.path.join(ROOT, "bin", "train"), f"--workdir={workdir}", *settings]
    args += ["--config.train.distribution=data_parallel"]
    started = _two_processes(args, workdir)
    deadline = time.monotonic() + 480
    while started[0][0].poll() is None and time.monotonic() < deadline:
        if checkpointing.saved_state(str(workdir)).get("completed_epochs", 0) >= 1:
            started[1][0].send_signal(signal.SIGUSR1)  # Only process 1 is told to stop.
            break
        time.sleep(0.05)
    codes = _wait_all(started)
    logs = [open(log).read() for _, log in started]
    assert codes == [errors.PREEMPTED_EXIT_STATUS] * 2, [log[-3000:] for log in logs]
    steps = [int(re.search(r"Stopped by SIGUSR1 at step (\d+):", log).group(1)) for log in logs]
    assert steps[0] == steps[1] and 3 < steps[0] < 12, steps  # Both at the same step.
    assert checkpointing.saved_state(str(workdir))["step"] == steps[0]
    assert checkpointing.saved_state(str(workdir / "process_1"))["step"] == steps[0]
    assert _wait_all(_two_processes(args, workdir)) == [0, 0]  # The same commands.
    assert f"at step {steps[0]}." in open(started[0][1]).read()
    assert _worst_difference(workdir / "model.keras", workdir / "process_1" / "model.keras") == 0.0
    assert _worst_difference(tmp_path / "single" / "model.keras", workdir / "model.keras") <= 1e-5


@pytest.mark.slow
def test_a_disk_that_fills_while_checkpointing_costs_nothing(tiny_config, tmp_path):
    """A real full disk: checkpoints/ on a tmpfs with room for two checkpoints and part of a third (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    straight = _run(_train_cmd(tmp_path / "straight", tiny_config))
    assert straight.returncode == 0, straight.stderr[-3000:]
    size = os.path.getsize(tmp_path / "straight" / checkpointing.CHECKPOINT)
    folder = tmp_path / "full" / checkpointing.CHECKPOINTS
    folder.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={(5 * size // 2) // 4096 * 4096}", "tmpfs", str(folder)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        cmd = _train_cmd(tmp_path / "full", tiny_config)
        full = _run(cmd)  # Epochs 1 and 2 fit (latest.keras, step_4.keras); the third write does not.
        assert full.returncode == 2, full.stderr[-3000:]
        line = full.stderr.strip().splitlines()[-1]
        latest = folder / "latest.keras"
        assert line.startswith(f"train: error: Could not write the checkpoint at step 12 ({latest}): ")
        assert "No space left on device" in line and f"the last good checkpoint {latest} (step 8) is intact" in line
        assert "rerun the same command to resume from it" in line
        assert sorted(os.listdir(folder)) == ["latest.keras", "state.json", "step_4.keras"]  # No partial file.
        subprocess.run(["mount", "-o", f"remount,size={8 * size}", str(folder)], check=True)  # Space freed.
        again = _run(cmd)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "at step 8." in again.stderr
        worst = _worst_difference(tmp_path / "straight" / "model.keras", tmp_path / "full" / "model.keras")
        assert worst <= 1e-5
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
