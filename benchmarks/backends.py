"""Train-step throughput: TensorFlow vs JAX, and XLA on vs off, measured in one run.

    python benchmarks/backends.py [--backbone resnet50] [--image_size 128] [--pairs 8] [--steps 4]

Each variant runs in its own process (the backend is fixed per process), on the
same synthetic paired batch, one after the other; the script prints images/s
and the ratios against TensorFlow with XLA.
"""

import argparse
import os
import subprocess
import sys

from common import repeated, timed_rounds


def worker(args):
    """Prints the images/s of one backend and XLA setting (KERAS_BACKEND is set by the parent)."""
    import keras
    import numpy as np

    from dcl_keras import losses, optim
    from dcl_keras.models import backbones, dcl
    from dcl_keras.models.region_confusion import RegionConfusion

    s, pairs = args.image_size, args.pairs
    rng = np.random.default_rng(0)
    originals = rng.uniform(0, 255, (pairs, s, s, 3)).astype("float32")
    views, targets = RegionConfusion(args.n, 2, seed=0)(originals, np.arange(pairs, dtype="int32"))
    views = keras.ops.convert_to_numpy(views)
    targets = {k: keras.ops.convert_to_numpy(v) for k, v in targets.items()}
    model = dcl.DCLModel(backbones.build_backbone(args.backbone, s, "none"), 200, args.n)
    model.compile(
        optimizer=optim.make_optimizer(0.0008, 100),
        loss=losses.dcl_losses(),
        loss_weights=losses.loss_weights(),
        weighted_metrics=losses.dcl_metrics(200),
        jit_compile=args.worker == "jit",
    )
    model.train_on_batch(views, targets)
    model.train_on_batch(views, targets)
    step = repeated(lambda: model.train_on_batch(views, targets), args.steps)
    times = [r.wall / args.steps for r in timed_rounds({"step": step}, 3)["step"]]
    print(2 * pairs / float(np.median(times)))


def run(backend, jit, args):
    flags = [f"--{name}={getattr(args, name)}" for name in ("backbone", "image_size", "pairs", "steps", "n")]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, __file__, *flags, "--worker", "jit" if jit else "no_jit"]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return float(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--worker", choices=("jit", "no_jit"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"{args.backbone} at {args.image_size} px, {2 * args.pairs} images per DCL train step, {os.cpu_count()} CPUs")
    results = {}
    for backend, jit in (("tensorflow", True), ("tensorflow", False), ("jax", True)):
        results[backend, jit] = run(backend, jit, args)
        print(f"{backend:10s} jit_compile={str(jit):5s}: {results[backend, jit]:7.2f} images/s", flush=True)
    base = results["tensorflow", True]
    print(f"ratio TF XLA off / on  = {results['tensorflow', False] / base:.3f}")
    print(f"ratio JAX / TF (XLA)   = {results['jax', True] / base:.3f}")


if __name__ == "__main__":
    main()
