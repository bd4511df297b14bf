"""The bin/ tools under the JAX backend; the export of a JAX-trained model serves in TensorFlow."""

import os

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras.data import readers

from helpers import run_bin

JAX = {"KERAS_BACKEND": "jax"}


@pytest.mark.slow
def test_train_evaluate_export_predict_under_jax(tiny_config, demo_root, tmp_path):
    workdir = tmp_path / "jax_run"
    overrides = [
        f"--config.data.demo.cache_dir={tiny_config.data.demo.cache_dir}",
        f"--config.data.demo.train_per_class={tiny_config.data.demo.train_per_class}",
        f"--config.data.demo.test_per_class={tiny_config.data.demo.test_per_class}",
        "--config.train.epochs=1",
    ]
    trained = run_bin("train", "--backend=jax", "--config=configs/tiny.py", f"--workdir={workdir}", *overrides)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "backend: jax" in trained.stdout
    evaluated = run_bin("evaluate", f"--workdir={workdir}", env=JAX)
    assert evaluated.returncode == 0 and "top-1:" in evaluated.stdout, evaluated.stderr[-3000:]
    exported = run_bin("export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'export'}", env=JAX)
    assert exported.returncode == 0, exported.stderr[-3000:]
    path = exported.stdout.strip().split("export: ")[-1]
    assert os.path.basename(path) == "1"

    # The export is a plain TF graph (no jax2tf XlaCallModule) and gives the JAX model's logits.
    graph = tf.saved_model.load(path).signatures["serving_default"].graph.as_graph_def()
    ops = {node.op for node in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "XlaCallModule" not in ops
    test_paths = readers.image_folder(demo_root, "test").paths[:3]
    served = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.constant([open(p, "rb").read() for p in test_paths])
    )
    predicted = run_bin("predict", f"--model={workdir / 'model.keras'}", "--top_k=1", *test_paths, env=JAX)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    jax_top1 = [line.split()[-1] for line in predicted.stdout.splitlines() if line.startswith("  ")]
    assert jax_top1 == [n.decode() for n in served["top_k_names"].numpy()[:, 0]]
    jax_probs = [float(line.split()[0]) for line in predicted.stdout.splitlines() if line.startswith("  ")]
    np.testing.assert_allclose(jax_probs, served["top_k_scores"].numpy()[:, 0], atol=1e-4)
