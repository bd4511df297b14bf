"""Latency and throughput of the exported SavedModel next to the Keras model, in one process (TF backend).

    python benchmarks/serving.py [--backbone resnet50] [--image_size 224] [--rounds 5]

Four ways to get logits for the same images, at batch 1 (latency, ms) and
batch 32 (throughput, images/s):

* keras: the classifier's `predict_on_batch` on preprocessed crops;
* serve_pixels: the export's array signature (resize and crop inside);
* serving_default: the export's image-bytes signature (JPEG decode inside, on the CPU);
* classify: the tf.Example signature (parse, decode).

Timings alternate between the four over several rounds and each median is
reported, so that drift on a shared machine hits them alike. Random weights:
speed does not depend on them.
"""

import argparse
import os
import tempfile

import numpy as np

from common import repeated, timed_rounds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--resize_size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    from dcl_keras import export
    from dcl_keras.data import augment
    from dcl_keras.models import backbones, dcl

    model = dcl.DCLModel(
        backbones.build_backbone(args.backbone, args.image_size, "none"),
        args.classes,
        7 if args.image_size % 7 == 0 else 4,
        class_names=[f"class_{i}" for i in range(args.classes)],
        resize_size=args.resize_size,
    )
    classifier = dcl.classifier_model(model)
    path = export.export_classifier(model, tempfile.mkdtemp(prefix="dcl-serving-bench-"))
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(32)]
    jpegs = [tf.io.encode_jpeg(p, quality=90).numpy() for p in photos]
    examples = [export.image_example(j) for j in jpegs]
    crops = np.stack([augment.eval_preprocess(p, args.resize_size, args.image_size).numpy() for p in photos])

    def ways(b):
        return {
            "keras (crops)": lambda: classifier.predict_on_batch(crops[:b]),
            "serve_pixels": lambda: loaded.signatures["serve_pixels"](
                pixels=tf.constant(np.stack(photos[:b]), tf.float32)
            ),
            "serving_default (JPEG)": lambda: loaded.signatures["serving_default"](images=tf.constant(jpegs[:b])),
            "classify (tf.Example)": lambda: loaded.signatures["classify"](inputs=tf.constant(examples[:b])),
        }

    print(f"{args.backbone} at {args.image_size} px (resize {args.resize_size}), photos 500x375, TF {tf.__version__}")
    print(f"machine: {os.cpu_count()} cores; median of {args.rounds} rounds")
    for batch in (1, 32):
        calls = ways(batch)
        for call in calls.values():  # Trace and warm up.
            call()
            call()
        repeats = 5 if batch == 1 else 1
        rounds = timed_rounds({name: repeated(call, repeats) for name, call in calls.items()}, args.rounds)
        times = {name: [r.wall / repeats for r in values] for name, values in rounds.items()}
        keras_time = float(np.median(times["keras (crops)"]))
        for name, values in times.items():
            t = float(np.median(values))
            figure = f"{1000 * t:8.1f} ms" if batch == 1 else f"{batch / t:8.1f} images/s"
            print(f"batch {batch:2d}  {name:24s} {figure}   ({t / keras_time:.2f}x the Keras time)")


if __name__ == "__main__":
    main()
