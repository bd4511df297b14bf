"""Mixed precision in the model recipe (dcl_keras/models/recipe.py): a few bf16 (and fp16) steps on CPU, float32
outputs and export interface."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dcl_keras import export, training

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_steps_are_finite_and_outputs_float32(tiny_config, policy, tmp_path):
    config = tiny_config.copy_and_resolve_references()
    config.train.mixed_precision = policy
    model = training.build_model(config, 4, ["a", "b", "c", "d"], steps=10)
    assert keras.config.dtype_policy().name == "float32"  # Restored after building.
    assert model.backbone.get_layer("conv1").dtype_policy.name == policy
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = {
        "classifier": np.array([0, 0, 3, 3]),
        "destruction_discriminator": np.array([0, 1, 0, 1]),
        "region_alignment": rng.uniform(0, 1, (4, 4, 4, 2)).astype("float32"),
    }
    for _ in range(3):
        logs = model.train_on_batch(x, y, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values()), logs
    outputs = model(x)
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in outputs.values())
    if keras.backend.backend() == "tensorflow":
        path = export.export_classifier(model, str(tmp_path / "export"))
        serve = tf.saved_model.load(path).signatures["serve_pixels"]
        assert serve.structured_input_signature[1]["pixels"].dtype == tf.float32
        assert serve(pixels=tf.constant(x))["logits"].dtype == tf.float32
