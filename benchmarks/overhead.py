"""DCL overhead, measured side by side in one run (TF backend), printed as ratios.

    python benchmarks/overhead.py [--backbone resnet50] [--image_size 224] [--batch 16] [--steps 6]

(a) DCL train step vs a plain classifier train step on the same number of
    images, same backbone: target <= 1.02.
(b) The exported DCL classifier's throughput vs a plain keras.applications
    classifier exported the same way, on the same input: target >= 0.98.
(c) DCL `fit` from the real input pipeline (JPEG files, augmentation, RCM)
    vs `fit` from in-memory tensors: target >= 0.95.
Timings alternate between the two sides over several rounds, and each side's
median is used, so that drift on a shared machine hits both alike.
"""

import argparse
import os
import tempfile

import numpy as np

from common import repeated, timed_rounds, write_jpegs


def median_step_time(calls, steps, rounds):
    """{name: median over rounds of the wall seconds per call}: `calls` maps names to one step's call."""
    times = timed_rounds({name: repeated(call, steps) for name, call in calls.items()}, rounds)
    return {name: float(np.median([r.wall / steps for r in values])) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16, help="images per step (pairs = batch / 2)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=200)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from dcl_keras import contract, export
    from dcl_keras.config import base_config
    from dcl_keras.data import readers
    from dcl_keras.models import backbones, dcl
    from dcl_keras.training import compile_model, train_batches

    s, b, c = args.image_size, args.batch, args.classes
    n = 7 if s % 7 == 0 else 4
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (b, s, s, 3)).astype("float32"))
    y_cls = tf.constant(rng.integers(0, c, b))
    targets = {
        contract.CLASSIFIER: y_cls,
        contract.DISCRIMINATOR: tf.constant(np.arange(b) % 2),
        contract.ALIGNMENT: tf.constant(rng.uniform(0, 1, (b, n, n, 2)).astype("float32")),
    }
    print(f"backend {keras.backend.backend()}, backbone {args.backbone}, {s} px, {b} images/step, {c} classes")

    # (a) Train step: DCL vs plain classifier.
    config = base_config()
    config.input.image_size, config.rcm.n, config.train.epochs = s, n, 180
    model = dcl.DCLModel(backbones.build_backbone(args.backbone, s, "none"), c, n)
    compile_model(model, config, steps=100)
    plain_backbone = backbones.build_backbone(args.backbone, s, "none")
    inputs = keras.Input((s, s, 3))
    logits = keras.layers.Dense(c)(keras.layers.GlobalAveragePooling2D()(plain_backbone(inputs)))
    plain = keras.Model(inputs, logits)
    plain.compile(
        optimizer=keras.optimizers.SGD(0.0008, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseTopKCategoricalAccuracy(1)],
        jit_compile="auto",
    )
    model.train_on_batch(x, targets)
    plain.train_on_batch(x, y_cls)
    steps = {"plain": lambda: plain.train_on_batch(x, y_cls), "dcl": lambda: model.train_on_batch(x, targets)}
    medians = median_step_time(steps, args.steps, args.rounds)
    t_dcl, t_plain = medians["dcl"], medians["plain"]
    print(
        f"(a) train step: DCL {t_dcl * 1000:.1f} ms, plain {t_plain * 1000:.1f} ms, ratio DCL/plain = {t_dcl / t_plain:.3f} (target <= 1.02)"
    )

    # (b) Exported classifier throughput vs a plain keras.applications classifier, same export path.
    with tempfile.TemporaryDirectory() as folder:
        dcl_path = export.export_classifier(model, os.path.join(folder, "dcl"), resize_size=s)
        if args.backbone == "resnet50":
            app = keras.applications.ResNet50(
                weights=None, input_shape=(s, s, 3), classes=c, classifier_activation=None
            )
            app_inputs = keras.Input((s, s, 3))
            reference = keras.Model(app_inputs, app(backbones.PixelNormalization("caffe")(app_inputs)))
        else:
            reference = plain
        ref_path = export.export_classifier(reference, os.path.join(folder, "plain"), resize_size=s)
        serve_dcl = tf.saved_model.load(dcl_path).signatures["serve_pixels"]
        serve_ref = tf.saved_model.load(ref_path).signatures["serve_pixels"]
        serve_dcl(pixels=x)
        serve_ref(pixels=x)
        calls = {
            "plain": lambda: serve_ref(pixels=x)["logits"].numpy(),
            "dcl": lambda: serve_dcl(pixels=x)["logits"].numpy(),
        }
        medians = median_step_time(calls, args.steps, args.rounds)
        thr_dcl, thr_ref = b / medians["dcl"], b / medians["plain"]
        print(
            f"(b) export throughput: DCL {thr_dcl:.1f} img/s, plain {thr_ref:.1f} img/s, ratio = {thr_dcl / thr_ref:.3f} (target >= 0.98)"
        )

        # (c) fit from the input pipeline vs fit from in-memory tensors.
        paths, labels = write_jpegs(os.path.join(folder, "jpegs"), 64)
        split = readers.FileSplit(paths, labels, [f"c{i}" for i in range(4)])
        config.input.batch_size = b // 2
        config.input.resize_size = int(s * 512 / 448)
        pipe = train_batches(config, split)
        memory = tf.data.Dataset.from_tensors((x, targets)).repeat()
        model.fit(pipe, steps_per_epoch=2, epochs=1, verbose=0)
        model.fit(memory, steps_per_epoch=2, epochs=1, verbose=0)

        def fit(ds):
            return lambda: model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)

        medians = median_step_time({"memory": fit(memory), "pipeline": fit(pipe)}, 1, args.rounds)
        ratio = medians["memory"] / medians["pipeline"]
        print(
            f"(c) fit: pipeline {b * args.steps / medians['pipeline']:.1f} img/s, in-memory "
            f"{b * args.steps / medians['memory']:.1f} img/s, ratio pipeline/memory = {ratio:.3f} (target >= 0.95)"
        )


if __name__ == "__main__":
    main()
