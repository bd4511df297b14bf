"""A short GPU check: DCL training steps of ResNet-50 at 448 px, printing images/s per variant.

    KERAS_BACKEND=jax python benchmarks/gpu_check.py            # on a GPU machine, a few minutes
    KERAS_BACKEND=jax python benchmarks/gpu_check.py --backbone tiny --image_size 64 --steps 2   # smoke test

Variants: RCM done on the host (pairs built before the step, as the tf.data
pipeline delivers them) or on the device (RegionConfusion inside the compiled
step); float32 or mixed_bfloat16; compiled (XLA) or not; then the classifier's
inference latency. It needs only Keras and a backend (no TensorFlow), so it also
runs where only JAX has a GPU build (install the package there first, e.g.
`pip install --no-deps --no-build-isolation -e .`).
"""

import argparse
import time

import keras
import numpy as np

from dcl_keras import contract, losses, optim
from dcl_keras.models import backbones, dcl
from dcl_keras.models.region_confusion import RegionConfusion


def build(args, policy, on_device, jit):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = dcl.DCLModel(backbones.build_backbone(args.backbone, args.image_size, "none"), args.classes, args.n)
    finally:
        keras.config.set_dtype_policy(previous)
    trainer = dcl.DeviceRCMTrainer(model, RegionConfusion(args.n, 2, seed=0)) if on_device else model
    trainer.compile(
        optimizer=optim.make_optimizer(0.0008, 100),
        loss=losses.dcl_losses(),
        loss_weights=losses.loss_weights(),
        weighted_metrics=losses.dcl_metrics(args.classes),
        jit_compile=jit,
    )
    return model, trainer


def timed(fn, steps):
    fn()
    fn()  # Compile and warm up.
    start = time.perf_counter()
    for _ in range(steps):
        result = fn()
    keras.ops.convert_to_numpy(result if not isinstance(result, dict) else next(iter(result.values())))
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=448)
    parser.add_argument("--pairs", type=int, default=16, help="examples per step (2 images each)")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--n", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    print(f"backend {keras.backend.backend()}, devices: {_devices()}", flush=True)
    print(f"{args.backbone} at {args.image_size} px, {args.pairs} pairs = {2 * args.pairs} images per step", flush=True)
    rng = np.random.default_rng(0)
    s, b = args.image_size, args.pairs
    originals = rng.uniform(0, 255, (b, s, s, 3)).astype("float32")
    labels = rng.integers(0, args.classes, b).astype("int32")
    # Host-paired batch: what the tf.data pipeline delivers (built here with the same RCM code).
    views, targets = RegionConfusion(args.n, 2, seed=0)(originals, np.arange(b, dtype="int32"))
    targets = {k: keras.ops.convert_to_numpy(v) for k, v in targets.items()}
    targets[contract.CLASSIFIER] = labels[targets[contract.CLASSIFIER]]
    views = keras.ops.convert_to_numpy(views)

    for policy in ("float32", "mixed_bfloat16"):
        for on_device in (False, True):
            for jit in (True, False) if policy == "float32" and on_device else (True,):
                model, trainer = build(args, policy, on_device, jit)
                if on_device:
                    seconds = timed(lambda t=trainer: t.train_on_batch(originals, labels), args.steps if jit else 2)
                else:
                    seconds = timed(lambda t=trainer: t.train_on_batch(views, targets), args.steps)
                where = "device RCM" if on_device else "host RCM  "
                print(
                    f"train  {where} {policy:15s} jit={str(jit):5s}: {2 * b / seconds:8.1f} images/s "
                    f"({seconds * 1000:.1f} ms/step)",
                    flush=True,
                )
        classifier = dcl.classifier_model(model)
        for batch in (1, 32):
            x = rng.uniform(0, 255, (batch, s, s, 3)).astype("float32")
            seconds = timed(lambda x=x, c=classifier: c.predict_on_batch(x), args.steps)
            print(
                f"infer  classifier {policy:15s} batch {batch:2d}: {seconds * 1000:7.2f} ms, {batch / seconds:8.1f} images/s",
                flush=True,
            )


def _devices():
    if keras.backend.backend() == "jax":
        import jax

        return [d.device_kind for d in jax.devices()]
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices()]


if __name__ == "__main__":
    main()
