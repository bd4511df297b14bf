"""Multi-device and multi-host training on CPU: same loss and weights as one device.

Every distributed run is compared with a single-device run on the same global
batches. The tiny backbone uses group normalisation (per-sample), so the only
difference is the order of floating-point sums in the gradient all-reduce:
float32 rounding of about 1e-7 relative per step. Tolerances of 1e-4 (loss,
relative) and 1e-5 (weights, absolute, after 3 steps of about 1e-2) leave two
orders of magnitude of margin and still catch any sharding or scaling error
(a wrong global batch changes the loss in the second decimal).
"""

import csv
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from dcl_keras.config import ConfigError
from dcl_keras.distribute import Cluster, setup
from dcl_keras.saving import load_model

from distribution_config import overrides
from helpers import ROOT

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribution_worker.py")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _worker(mode, workdir, cache, backend, **env):
    done = subprocess.run(
        [sys.executable, WORKER, mode, str(workdir), cache],
        capture_output=True,
        text=True,
        env=_env(KERAS_BACKEND=backend, **env),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def _loss(workdir):
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return float(list(csv.DictReader(f))[-1]["loss"])


def _weights(path):
    return [keras.ops.convert_to_numpy(w) for w in load_model(str(path)).weights]


def _compare(a, b):
    assert _loss(a) == pytest.approx(_loss(b), rel=1e-4)
    for wa, wb in zip(_weights(a / "model.keras"), _weights(b / "model.keras"), strict=True):
        np.testing.assert_allclose(wa, wb, atol=1e-5)


@pytest.fixture(scope="module")
def cache(tiny_config):
    return tiny_config.data.demo.cache_dir


@pytest.fixture(scope="module")
def single_tf(cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("single_tf")
    _worker("single", workdir, cache, "tensorflow")
    return workdir


@pytest.fixture(scope="module")
def single_jax(cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("single_jax")
    _worker("single", workdir, cache, "jax")
    return workdir


def test_mirrored_strategy_on_two_logical_cpus(cache, single_tf, tmp_path):
    _worker("mirrored", tmp_path, cache, "tensorflow")
    _compare(tmp_path, single_tf)


@pytest.mark.slow
def test_jax_data_parallel_on_two_host_devices(cache, single_jax, tmp_path):
    _worker("data_parallel", tmp_path, cache, "jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    _compare(tmp_path, single_jax)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_jax_processes_through_bin_train(cache, single_jax, tmp_path):
    """Two processes on loopback, the same bin/train command; if one dies the other is killed."""
    address = f"127.0.0.1:{_free_port()}"
    args = [sys.executable, os.path.join(ROOT, "bin", "train"), f"--workdir={tmp_path}", *overrides(cache)]
    args += ["--backend=jax", "--config.train.distribution=data_parallel", f"--coordinator_address={address}"]
    logs = [open(tmp_path / f"process_{i}.log", "w") for i in range(2)]
    procs = [
        subprocess.Popen(
            args + ["--num_processes=2", f"--process_id={i}"],
            cwd=ROOT,
            env=_env(),
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 480
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    assert codes == [0, 0], [(tmp_path / f"process_{i}.log").read_text()[-3000:] for i in range(2)]
    for i in range(2):  # Each process decodes only its half of every global batch; Keras does not shard again.
        log = (tmp_path / f"process_{i}.log").read_text()
        assert f"Process {i} of 2 builds 2 of the 4 examples of every global batch (its slice" in log
    chief, other = _weights(tmp_path / "model.keras"), _weights(tmp_path / "process_1" / "model.keras")
    for a, b in zip(chief, other, strict=True):
        np.testing.assert_array_equal(a, b)  # Every process ends with the same weights.
    _compare(tmp_path, single_jax)


def test_multi_worker_mirrored_points_to_jax():
    with pytest.raises(ConfigError, match="keras-team/keras#20585.*data_parallel"):
        setup("multi_worker_mirrored")


def test_cluster_flags_are_checked(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert Cluster.from_env() == Cluster(0, 1, None)
    with pytest.raises(ConfigError, match="process_id=2"):
        Cluster.from_env("127.0.0.1:1234", 2, 2)
    with pytest.raises(ConfigError, match="coordinator_address=None"):
        Cluster.from_env(None, 2, 0)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:99")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert Cluster.from_env() == Cluster(3, 4, "10.0.0.1:99")
