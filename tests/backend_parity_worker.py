"""Run under one Keras backend: outputs, losses and one train step for a saved model and batch.

KERAS_BACKEND=jax python tests/backend_parity_worker.py MODEL.keras BATCH.npz OUT.npz
"""

import sys

import keras
import numpy as np

from dcl_keras.saving import load_model


def main(model_path, batch_path, out_path):
    model = load_model(model_path)
    batch = np.load(batch_path)
    x = batch["images"]
    y = {name: batch[name] for name in ("classifier", "destruction_discriminator", "region_alignment")}
    outputs = {f"out_{k}": keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    losses = model.evaluate(x, y, verbose=0, return_dict=True)
    model.train_on_batch(x, y)
    weights = {f"w_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.trainable_weights)}
    np.savez(
        out_path,
        backend=keras.backend.backend(),
        **outputs,
        **weights,
        **{f"loss_{k}": np.float64(v) for k, v in losses.items()},
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
