"""What bounds a demo training step: the input alone, the model alone, or neither (fit), in one run.

    python benchmarks/demo_bound.py [--config configs/demo.py] [--steps 120] [--rounds 9] [--max_isa AVX2]

Input only: batches pulled from the training stream of the config. Model
only: `fit` on one batch held in memory. Fit: `fit` from the real stream.
Each round times the three sides back to back (the order rotates) and gives
one ratio, fit / the slower of the other two; the median ratio over rounds is
the figure, printed with each side's steps/s and the cores the process used.
Rounds are short because on a shared machine the cores a process gets change
from one few seconds to the next: short rounds compare the sides under the
same load. The CPU time each side spends per step is printed too; it does not
change with the cores the machine gives, and model / fit of it is what fit
can reach of model-only when every core is busy. The target: fit at least
0.9x the slower of the two (the input is never the bound when the model is
tiny). `--cache_mb 0` measures the stream that reads its files every epoch
(`input.cache_mb`). `--max_isa AVX2` caps what XLA and oneDNN use, as in
input_pipeline.py. Prints the CPU model and its vector extensions.
"""

import argparse
import os

import numpy as np

from common import ISA_CHOICES, ROOT, cap_isa, machine, timed_rounds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.py"))
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cache_mb", type=int, default=None, help="input.cache_mb (default: the config's)")
    parser.add_argument("--max_isa", default="", choices=ISA_CHOICES, help="AVX2: what a CPU without AVX-512 gets")
    args = parser.parse_args()
    capped = cap_isa(args.max_isa)
    import tensorflow as tf

    from dcl_keras import training
    from dcl_keras.config import load_config_file
    from dcl_keras.data import datasets

    config = load_config_file(args.config)
    if args.cache_mb is not None:
        config.input.cache_mb = args.cache_mb
    train = datasets.load_splits(config.data).train
    model = training.build_model(config, train.num_classes, train.class_names, steps=10**6)
    stream = training.train_batches(config, train)
    batch = next(iter(stream))
    memory = tf.data.Dataset.from_tensors(batch).repeat()

    def input_only():  # A fresh iterator each time, as `fit` makes one: no batches prefetched in between.
        iterator = iter(stream)
        for _ in range(args.steps):
            next(iterator)

    def fit(ds):
        model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)

    fit(memory)  # Compiles the train step.
    fit(stream)
    # Each round times the three sides back to back, in an order that rotates, so that a round's
    # ratio compares sides under the same load; the process's CPU seconds per wall second say how many
    # cores each side got (a side that ran on one core of two shows it).
    sides = {"input": input_only, "model": lambda: fit(memory), "fit": lambda: fit(stream)}
    names = list(sides)
    times = timed_rounds(sides, args.rounds)
    rates = {side: [args.steps / r.wall for r in times[side]] for side in names}
    cores = {side: [r.cpu / r.wall for r in times[side]] for side in names}
    cpu_ms = {side: [1000.0 * r.cpu / args.steps for r in times[side]] for side in names}
    ratios = [f / min(i, m) for f, i, m in zip(rates["fit"], rates["input"], rates["model"], strict=True)]
    print(f"machine: {machine()}{capped}")
    print(
        f"{os.path.relpath(args.config, ROOT)} ({config.input.batch_size} examples, "
        f"{config.input.image_size} px, backbone {config.model.backbone}, input.cache_mb={config.input.cache_mb}), "
        f"{args.steps} steps a side, {args.rounds} rounds"
    )
    for side in names:
        print(
            f"  {side:>5} steps/s: "
            + " ".join(f"{v:6.1f}" for v in rates[side])
            + f"   median {np.median(rates[side]):6.1f}   cores used: "
            + " ".join(f"{c:.2f}" for c in cores[side])
        )
    cost = {side: np.median(cpu_ms[side]) for side in names}
    print(
        "CPU ms per step (medians; unlike steps/s, not changed by a core the machine takes away): "
        + ", ".join(f"{side} {cost[side]:.1f}" for side in names)
        + f"; fit's input costs {cost['fit'] - cost['model']:.1f} ms on top of the model's. "
        f"With every core busy, fit can reach model {cost['model']:.1f} / fit {cost['fit']:.1f} = "
        f"{cost['model'] / cost['fit']:.3f} of model-only"
    )
    bound = "input" if np.median(rates["input"]) < np.median(rates["model"]) else "model"
    print(
        "fit / slower of input-only and model-only, per round: "
        + " ".join(f"{v:.3f}" for v in ratios)
        + f"; median {np.median(ratios):.3f} (target >= 0.9); bound by the {bound}"
    )


if __name__ == "__main__":
    main()
