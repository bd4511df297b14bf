"""TensorFlow and JAX give the same outputs, losses and train step from the same weights."""

import os
import subprocess
import sys

import numpy as np
import pytest

from dcl_keras.config import base_config
from dcl_keras.training import build_model

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend_parity_worker.py")


def _run(backend, model_path, batch_path, out_path):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, WORKER, model_path, batch_path, out_path], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = np.load(out_path)
    assert str(result["backend"]) == backend
    return result


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parity")
    c = base_config()
    c.model.backbone, c.model.weights, c.model.width = "tiny", "none", 8
    c.input.image_size, c.rcm.n, c.train.epochs, c.train.learning_rate = 32, 4, 2, 0.01
    c.train.jit_compile = "false"
    model = build_model(c, 3, ["a", "b", "c"], steps=10)
    model_path = str(folder / "model.keras")
    model.save(model_path)
    rng = np.random.default_rng(0)
    batch_path = str(folder / "batch.npz")
    np.savez(
        batch_path,
        images=rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32"),
        classifier=np.array([0, 0, 2, 2], "int32"),
        destruction_discriminator=np.array([0, 1, 0, 1], "int32"),
        region_alignment=rng.uniform(0, 1, (4, 4, 4, 2)).astype("float32"),
    )
    return (
        _run("tensorflow", model_path, batch_path, str(folder / "tf.npz")),
        _run("jax", model_path, batch_path, str(folder / "jax.npz")),
    )


def test_same_outputs_under_tf_and_jax(parity):
    tf_result, jax_result = parity
    for name in ("out_classifier", "out_destruction_discriminator", "out_region_alignment"):
        np.testing.assert_allclose(jax_result[name], tf_result[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_same_losses_under_tf_and_jax(parity):
    tf_result, jax_result = parity
    names = [k for k in tf_result.files if k.startswith("loss_")]
    assert "loss_loss" in names and "loss_region_alignment_loss" in names
    for name in names:
        np.testing.assert_allclose(jax_result[name], tf_result[name], rtol=1e-4, err_msg=name)


def test_one_train_step_gives_the_same_weights(parity):
    """Same state, same batch, one SGD step: the updated weights agree.

    Tolerance: 1e-4 absolute on weights of order 0.1-1 updated with steps of
    order 1e-2; the backends differ only in float32 summation order (conv and
    batch-norm reductions), whose error is far below that.
    """
    tf_result, jax_result = parity
    names = [k for k in tf_result.files if k.startswith("w_")]
    assert len(names) > 10
    for name in names:
        np.testing.assert_allclose(jax_result[name], tf_result[name], atol=1e-4, err_msg=name)
