"""Is the demo's tail hard to see or hard to find? One network, two views of the same birds, one run.

    python -m benchmarks.studies.demo_tail [--train 2000] [--test 300] [--epochs 15] [--optimizer adam|sgd] [--seed 0]
                                   [--pooling avg|max] [--views tail,whole] [--width 32] [--depth 1]
                                   [--weights none|backbone.weights.h5]

The birds are the demo's first two classes (crest none, wing plain), which
differ only in the tail: fan or fork. They are drawn at 128 px by the demo's
own generator (`dcl_keras.data.demo`) and shown in two views:

* whole: the image resized to 64 px, uncropped (the tail is cut only where
  the generator placed the bird across the border);
* tail: a square of 1.4x the tail's part box about its centre, resized to
  32 px, which shows the tail at about the same resolution (about 1.2x its
  scale in the 64-px whole image).

The demo's backbone (`tiny`, width 32 and depth 1 unless told, from scratch
unless `--weights` names a file saved from it) with global average
pooling (or max, `--pooling max`) and a 2-way dense layer trains on each
view in turn (same images, seed, optimizer and steps), with horizontal
flips. The script prints the test accuracy after each epoch for both views
and, at the end, both figures side by side. A tail learned from its crop but
not from the whole image points to a localisation problem (finding a small
body-coloured outline in clutter) rather than one of resolution or shape.
"""

import argparse
import time

import numpy as np

from benchmarks.common import Timer


def render_views(count, seed):
    """uint8 images [2 * count, 64, 64, 3] (whole) and [2 * count, 32, 32, 3] (tail), labels [2 * count]."""
    from PIL import Image

    from dcl_keras.data import demo

    rng = np.random.default_rng(seed)
    whole, tail, labels = [], [], []
    for _ in range(count):
        for label, attributes in enumerate(demo.class_attributes(2)):
            image, _, parts = demo.render_with_parts(rng, attributes, 128)
            x, y, w, h = parts["tail"]
            cx, cy, r = x + w / 2, y + h / 2, 0.7 * max(w, h)
            crop = image.crop((int(cx - r), int(cy - r), int(cx + r), int(cy + r)))
            whole.append(np.asarray(image.resize((64, 64), Image.BILINEAR)))
            tail.append(np.asarray(crop.resize((32, 32), Image.BILINEAR)))
            labels.append(label)
    return np.stack(whole), np.stack(tail), np.asarray(labels)


def train_view(name, x_train, y_train, x_test, y_test, args):
    import keras

    from dcl_keras.models import backbones

    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input(x_train.shape[1:])
    x = keras.layers.RandomFlip("horizontal", seed=args.seed)(inputs)
    x = backbones.build_backbone("tiny", x_train.shape[1], weights=args.weights, width=args.width, depth=args.depth)(x)
    pooling = keras.layers.GlobalMaxPooling2D() if args.pooling == "max" else keras.layers.GlobalAveragePooling2D()
    x = pooling(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    if args.optimizer == "adam":
        optimizer = keras.optimizers.Adam(args.learning_rate or 1e-3)
    else:
        optimizer = keras.optimizers.SGD(args.learning_rate or 0.1, momentum=0.9)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    with Timer() as timer:
        progress = keras.callbacks.LambdaCallback(  # Printed as it goes: a long run shows when (if) it takes off.
            on_epoch_end=lambda epoch, logs: print(
                f"{name:>5} epoch {epoch + 1:2d}: training {logs['accuracy']:.3f}  test {logs['val_accuracy']:.3f}"
                f"  ({time.perf_counter() - timer.start:.0f} s)",
                flush=True,
            )
        )
        history = model.fit(
            x_train.astype("float32"),
            y_train,
            batch_size=32,
            epochs=args.epochs,
            validation_data=(x_test.astype("float32"), y_test),
            callbacks=[progress],
            verbose=0,
        ).history
    return history["accuracy"][-1], history["val_accuracy"][-1], timer.seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=2000, help="training images per class")
    parser.add_argument("--test", type=int, default=300, help="test images per class")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--learning_rate", type=float, default=None, help="default: 1e-3 (adam), 0.1 (sgd)")
    parser.add_argument("--seed", type=int, default=0, help="network seed; the images are always the same")
    parser.add_argument(
        "--pooling", choices=("avg", "max"), default="avg", help="global pooling before the dense layer"
    )
    parser.add_argument("--views", default="tail,whole", help="which views to train on, comma-separated")
    parser.add_argument("--width", type=int, default=32, help="tiny backbone: channels of its first stage")
    parser.add_argument(
        "--weights",
        default="none",
        help="tiny backbone: 'none' (from scratch) or a backbone.weights.h5 saved from it, e.g. by configs/pretrain_toy.py",
    )
    parser.add_argument(
        "--depth", type=int, default=1, help="tiny backbone: convolutions per stage (2: receptive field 75 px, not 31)"
    )
    args = parser.parse_args()
    for flag in ("width", "depth", "epochs", "train", "test"):  # All checked before the minute of rendering.
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} takes a positive integer. Received: {getattr(args, flag)}")
    if args.weights != "none":  # Does the file fit this backbone? Built once here, not after the rendering.
        from dcl_keras.errors import UserError
        from dcl_keras.models import backbones

        try:
            backbones.build_backbone("tiny", 64, weights=args.weights, width=args.width, depth=args.depth)
        except (UserError, FileNotFoundError, ValueError) as e:
            parser.error(f"--weights: {' '.join(str(e).split())}")
    views = args.views.split(",")
    if not views or set(views) - {"tail", "whole"}:  # Checked before the minute of rendering.
        parser.error(f"--views takes 'tail' and/or 'whole'. Received: {args.views!r}")

    whole_train, tail_train, y_train = render_views(args.train, seed=1000)
    whole_test, tail_test, y_test = render_views(args.test, seed=2000)
    data = {"tail": (tail_train, y_train, tail_test, y_test), "whole": (whole_train, y_train, whole_test, y_test)}
    results = {view: train_view(view, *data[view], args) for view in views}
    print(
        f"\nfan vs fork, {2 * args.train} training and {2 * args.test} test images, "
        f"tiny backbone (width {args.width}, depth {args.depth}, weights {args.weights}), "
        f"{args.pooling} pooling, {args.optimizer}, {args.epochs} epochs, seed {args.seed} (chance 0.5):"
    )
    for name, (train, test, seconds) in results.items():
        print(f"  {name:>5} view: test {test:.3f}, training {train:.3f} ({seconds:.0f} s)")
    if len(results) == 2:
        print(f"  whole / tail test accuracy: {results['whole'][1] / results['tail'][1]:.2f}")


if __name__ == "__main__":
    main()
