"""Runs that survive faults: exact resume after SIGKILL or a stop signal, mid-epoch checkpoints, a full disk, clean
stops with the cause (in-process preemption and storage tests: tests/test_preemption.py; checkpointing's divergence
stop, workdir lock and writable checks: tests/test_checkpointing.py)."""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras import checkpointing, errors, training
from dcl_keras.config import ConfigError
from dcl_keras.data import pipeline, readers, specs, train_stream
from dcl_keras.saving import load_model

from distribution_config import overrides
from helpers import ROOT

BATCH = 5  # 24 demo examples: 4 batches an epoch and 4 examples left over, as CUB at batch 16.


def _stream(split, count, start_step=0, **fields):
    spec = specs.TrainSpec(
        **{**dict(seed=3, batch_size=BATCH, image_size=32, resize_size=40, rotation=10.0, n=4, k=2), **fields}
    )
    return list(train_stream.train_batches(split, spec, start_step=start_step).take(count).as_numpy_iterator())


@pytest.fixture(scope="module")
def split(demo_root):
    return readers.image_folder(demo_root, "train")


@pytest.mark.parametrize("in_pipeline,ratio", [(True, (1, 1)), (False, (1, 1)), (True, (1, 2))])
def test_the_stream_resumed_at_any_step_is_the_uninterrupted_stream(split, in_pipeline, ratio):
    assert split.num_examples % BATCH and train_stream.steps_per_epoch(split, BATCH) == 4
    kwargs = dict(rcm_in_pipeline=in_pipeline, originals=ratio[0], destructed=ratio[1])
    full = _stream(split, 11, **kwargs)
    for start in (1, 4, 6):
        resumed = _stream(split, 11 - start, start_step=start, **kwargs)
        for a, b in zip(full[start:], resumed, strict=True):
            tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    # One epoch of the stream is one Keras epoch: every example at most once, 4 left out.
    views = sum(ratio)
    labels = np.concatenate([b[1]["classifier"][::views] if in_pipeline else b[1] for b in full[:4]])
    assert len(labels) == 20 and np.all(np.bincount(labels, minlength=4) <= 6)


def test_device_keys_are_the_pipeline_keys_so_both_placements_destroy_alike(split):
    from dcl_keras.models.region_confusion import RegionConfusion

    host = _stream(split, 1)[0]
    device_inputs, labels = _stream(split, 1, rcm_in_pipeline=False)[0]
    views, targets = RegionConfusion(4, 2)(device_inputs["images"], labels, keys=device_inputs["rcm_keys"])
    np.testing.assert_allclose(np.asarray(views), host[0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(targets["region_alignment"]), host[1]["region_alignment"])


def test_a_bad_file_never_shifts_the_keys_of_later_examples(split, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(os.urandom(500))
    with_bad = readers.FileSplit([str(bad), *split.paths], [0, *split.labels], split.class_names)
    keys = {}
    for name, source in (("clean", split), ("with_bad", with_bad)):
        ds = pipeline.positioned_examples(source).ignore_errors()
        keys[name] = {int(pos): label for pos, _, label in ds.as_numpy_iterator()}
    # The positions (hence keys) of the good files are their listing positions, whatever failed before them.
    assert set(keys["with_bad"]) == set(range(1, len(split.paths) + 1))
    assert [keys["with_bad"][i + 1] for i in range(len(split.paths))] == [keys["clean"][i] for i in keys["clean"]]


def test_epochs_keep_their_length_when_more_files_fail_than_the_remainder(split, tmp_path):
    broken = []
    for i in range(6):  # 6 unreadable files, more than the 4 examples an epoch leaves out.
        broken.append(str(tmp_path / f"broken_{i}.jpg"))
        open(broken[-1], "wb").write(os.urandom(300))
    noisy = readers.FileSplit(split.paths + broken, split.labels + [0] * 6, split.class_names, name="noisy")
    assert train_stream.steps_per_epoch(noisy, BATCH) == 6  # 30 listed, 24 decodable: 4.8 batches' worth.
    full = _stream(noisy, 14)
    assert len(full) == 14  # Epochs are filled from a second pass over their order, never short.
    resumed = _stream(noisy, 2, start_step=12)  # From the third epoch on.
    for a, b in zip(full[12:], resumed, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def test_an_epoch_with_no_readable_file_stops_the_stream_instead_of_hanging(split, tmp_path):
    files = []
    for i, path in enumerate(split.paths[:6]):
        files.append(str(tmp_path / f"{i}.png"))
        shutil.copy(path, files[-1])
    gone = readers.FileSplit(files, split.labels[:6], split.class_names, name="vanishing")
    spec = specs.TrainSpec(seed=0, batch_size=2, image_size=32, resize_size=40, n=4, k=2)
    stream = iter(train_stream.train_batches(gone, spec))
    next(stream)
    for path in files:
        os.remove(path)  # Deleted after the start, as by a lost mount.
    outcome = []

    def drain():
        try:
            for _ in range(10):
                next(stream)
        except tf.errors.InvalidArgumentError as e:
            outcome.append(str(e))

    worker = threading.Thread(target=drain, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the stream hangs on an epoch without a readable file"
    assert outcome and train_stream.EMPTY_EPOCH_MESSAGE in outcome[0]


def test_training_on_files_that_vanished_names_them(tiny_config, tmp_path, monkeypatch):
    config = tiny_config.copy_and_resolve_references()
    config.eval.enabled = config.export.enabled = False
    config.data.check_files = False
    real_load = training.datasets.load_splits

    def vanishing(data):
        splits = real_load(data)
        copies = [str(tmp_path / f"{i}.png") for i in range(len(splits.train.paths))]
        train = readers.FileSplit(copies, splits.train.labels, splits.train.class_names, name="vanished")
        return splits._replace(train=train)

    monkeypatch.setattr(training.datasets, "load_splits", vanishing)
    with pytest.raises(readers.DatasetError, match=r"(?s)no example of an epoch.*0\.png: cannot be read"):
        training.train_and_evaluate(config, str(tmp_path / "run"))


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
    a = load_model(str(tmp_path / "straight" / "model.keras"))
    b = load_model(str(tmp_path / "killed" / "model.keras"))
    worst = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a.weights, b.weights, strict=True))
    assert worst <= 1e-5


def _worst_difference(a, b):
    a, b = load_model(str(a)), load_model(str(b))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a.weights, b.weights, strict=True))


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


def test_resuming_with_another_data_stream_is_refused(tiny_config, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.eval.enabled = config.export.enabled = False
    config.train.epochs = 1
    training.train_and_evaluate(config, str(tmp_path))
    config.train.epochs = 2
    config.input.batch_size = 3
    with pytest.raises(ConfigError, match=r"input.batch_size 4 -> 3"):
        training.train_and_evaluate(config, str(tmp_path))
