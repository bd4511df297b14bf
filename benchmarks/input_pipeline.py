"""Input pipeline throughput: tf.data vs a per-image Pillow + NumPy implementation.

    python benchmarks/input_pipeline.py [--images 192] [--worker tf|pil DIR CORES]

The full training element path for each example: read and decode a 500x375
JPEG, resize to 512, rotate, random crop 448, flip, RCM with N = 7 (k = 2),
alignment targets; one original and one destructed image per example. Each
implementation runs pinned to 1 core and to all cores, in one run, and the
script prints images/s (examples/s) and the ratios.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, run_pinned, write_jpegs  # noqa: E402

N, K, RESIZE, CROP, ROTATION = 7, 2, 512, 448, 15.0


def pil_example(path, rng):
    """What a user would otherwise write: Pillow for geometry, NumPy for RCM."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB").resize((RESIZE, RESIZE), Image.BILINEAR)
    image = image.rotate(rng.uniform(-ROTATION, ROTATION), resample=Image.BILINEAR)
    top, left = rng.integers(0, RESIZE - CROP + 1, size=2)
    image = image.crop((left, top, left + CROP, top + CROP))
    array = np.asarray(image, np.float32)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    row_order = np.argsort(np.arange(N) + rng.uniform(-K, K, (N, N)), axis=1, kind="stable")
    col_order = np.argsort(np.arange(N) + rng.uniform(-K, K, (N, N)), axis=1, kind="stable")
    src_row = col_order.T
    src_col = row_order[src_row, np.arange(N)[None, :]]
    side = CROP // N
    regions = array.reshape(N, side, N, side, 3).transpose(0, 2, 1, 3, 4)
    destructed = regions[src_row, src_col].transpose(0, 2, 1, 3, 4).reshape(CROP, CROP, 3)
    target = (np.stack([src_row, src_col], -1) + 0.5) / N
    return np.stack([array, destructed]), target


def pil_worker(paths, cores):
    from multiprocessing import Pool

    def chunks():
        return [paths[i::cores] for i in range(cores)]

    with Timer() as t:
        if cores == 1:
            _pil_chunk(paths)
        else:
            with Pool(cores) as pool:
                pool.map(_pil_chunk, chunks())
    return len(paths) / t.seconds


def _pil_chunk(paths):
    rng = np.random.default_rng(0)
    for path in paths:
        pil_example(path, rng)
    return len(paths)


def tf_worker(paths, cores):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    from dcl_keras.data import pipeline, readers

    split = readers.FileSplit(paths, [0] * len(paths), ["a", "b"])
    batch = 16  # As in training: per-batch work is shared by 16 examples.
    ds = pipeline.train_batches(
        split, seed=0, batch_size=batch, image_size=CROP, resize_size=RESIZE, rotation=ROTATION, n=N, k=K
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    ds = ds.with_options(options)
    iterator = iter(ds)
    for _ in range(2):  # Warm-up: tracing and the first files.
        next(iterator)
    batches = max(1, len(paths) // batch)
    with Timer() as t:
        for _ in range(batches):
            next(iterator)
    return batches * batch / t.seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "DIR", "CORES"))
    args = parser.parse_args()
    if args.worker:
        kind, folder, cores = args.worker[0], args.worker[1], int(args.worker[2])
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".jpg"))
        rate = (tf_worker if kind == "tf" else pil_worker)(paths, cores)
        print(f"{rate:.3f}")
        return
    all_cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        write_jpegs(folder, args.images)
        print(f"{args.images} JPEGs 500x375 -> resize {RESIZE}, crop {CROP}, rotate, flip, RCM N={N} k={K}, targets")
        print(f"machine: {all_cores} cores available to this process")
        results = {}
        for cores in sorted({1, all_cores}):
            for kind in ("pil", "tf"):
                results[kind, cores] = float(run_pinned([__file__, "--worker", kind, folder, str(cores)], cores))
            print(
                f"{cores} core(s): tf.data {results['tf', cores]:.1f} examples/s, "
                f"Pillow+NumPy {results['pil', cores]:.1f} examples/s, "
                f"ratio tf.data/Pillow = {results['tf', cores] / results['pil', cores]:.2f}"
            )


if __name__ == "__main__":
    main()
