"""What bounds a demo training step: the input alone, the model alone, or neither (fit), in one run.

    python benchmarks/demo_bound.py [--config configs/demo.py] [--steps 150] [--rounds 3]

Input only: batches pulled from the training stream of the config. Model
only: `fit` on one batch held in memory. Fit: `fit` from the real stream.
The sides alternate over rounds and each side's median is used. The target:
fit at least 0.9x the slower of the two (the input is never the bound when
the model is tiny). Prints the CPU model and its vector extensions.
"""

import argparse
import os
import time

import numpy as np

from common import ROOT, machine


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.py"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import tensorflow as tf

    from dcl_keras import training
    from dcl_keras.config import load_config_file
    from dcl_keras.data import datasets

    config = load_config_file(args.config)
    train = datasets.load_splits(config.data).train
    model = training.build_model(config, train.num_classes, train.class_names, steps=10**6)
    stream = training.train_batches(config, train)
    iterator = iter(stream)
    batch = next(iterator)
    memory = tf.data.Dataset.from_tensors(batch).repeat()

    def input_only():
        for _ in range(args.steps):
            next(iterator)

    def fit(ds):
        model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)

    fit(memory)  # Compiles the train step.
    fit(stream)
    times = {"input": [], "model": [], "fit": []}
    for _ in range(args.rounds):
        for side, run in (("input", input_only), ("model", lambda: fit(memory)), ("fit", lambda: fit(stream))):
            start = time.perf_counter()
            run()
            times[side].append(time.perf_counter() - start)
    rate = {side: args.steps / np.median(t) for side, t in times.items()}
    bound = min(rate["input"], rate["model"])
    print(f"machine: {machine()}")
    print(
        f"{os.path.relpath(args.config, ROOT)} ({config.input.batch_size} examples, "
        f"{config.input.image_size} px, backbone {config.model.backbone}), steps/s: "
        f"input only {rate['input']:.1f}, model only {rate['model']:.1f}, fit {rate['fit']:.1f}"
    )
    print(
        f"fit / slower of input-only and model-only = {rate['fit'] / bound:.3f} (target >= 0.9); "
        f"bound by the {'input' if rate['input'] < rate['model'] else 'model'}"
    )


if __name__ == "__main__":
    main()
