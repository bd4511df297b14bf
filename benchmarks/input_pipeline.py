"""Input pipeline throughput: tf.data vs the reference code's steps in Pillow + NumPy.

    python benchmarks/input_pipeline.py [--images 192] [--sizes 500x375,1600x1200,3000x2000] [--max_isa AVX2]

The full training element path for each example: read and decode a JPEG
(an equal mix of the given sizes), resize to 512, rotate, random crop 448,
flip, RCM with N = 7 (k = 2), alignment targets; one original and one
destructed image per example. The Pillow side does what the reference code
does (PIL decode, PIL bilinear resize, PIL rotate with its default nearest
neighbour as the reference's RandomRotation, crop, flip, region swap in NumPy). The tf.data side runs twice: with JPEG draft decoding at the default
reducing gap of 2 (`input.jpeg_reducing_gap`), and decoding every pixel (gap
0). Each runs pinned to 1 core and to all cores, in one run, and the script
prints examples/s and the ratios, with the CPU model and its vector
extensions.

It also times, per example on 1 core, the stream up to each stage: read,
decode, augmentation (resize, rotation, crop, flip), RCM and pairing (in a
map of its own), and the training stream itself (augmentation and pairing in
one map, batched): a stage costs about the difference from the row before,
and the last row against the one before is what batching costs, less what
fusing the two maps saves.

--max_isa=AVX2 caps the instruction set that XLA compiles for and oneDNN
dispatches to (`--xla_cpu_max_isa`, `ONEDNN_MAX_CPU_ISA`), which is how an
AVX-512 host measures what a CPU without AVX-512 gets from those two; TF's
own kernels and Pillow are compiled for a fixed baseline and do not change.
"""

import argparse
import os
import tempfile

import numpy as np

from common import ISA_CHOICES, Timer, cap_isa, machine, run_pinned, write_jpegs

N, K, RESIZE, CROP, ROTATION = 7, 2, 512, 448, 15.0


def pil_example(path, rng):
    """What a user would otherwise write: Pillow for geometry, NumPy for RCM."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB").resize((RESIZE, RESIZE), Image.BILINEAR)
    image = image.rotate(rng.uniform(-ROTATION, ROTATION))  # Nearest neighbour: the reference's RandomRotation.
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


BATCH = 16  # As in training: per-batch work is shared by 16 examples.


def training_stream(paths, reducing_gap=0.0):
    """The project's training stream over `paths` at the benchmark's sizes."""
    from dcl_keras.data import readers, specs, train_stream

    split = readers.FileSplit(paths, [0] * len(paths), ["a", "b"])
    spec = specs.TrainSpec(
        seed=0,
        batch_size=BATCH,
        image_size=CROP,
        resize_size=RESIZE,
        rotation=ROTATION,
        n=N,
        k=K,
        reducing_gap=reducing_gap,
    )
    return train_stream.train_batches(split, spec)


def tf_worker(paths, cores, reducing_gap=2.0):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    ds = training_stream(paths, reducing_gap)
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    ds = ds.with_options(options)
    iterator = iter(ds)
    batches = max(1, len(paths) // BATCH)
    for _ in range(batches):  # Warm-up: one epoch compiles every size bucket and fills the file cache.
        next(iterator)
    with Timer() as t:
        for _ in range(batches):
            next(iterator)
    return batches * BATCH / t.seconds


STAGES = (
    ("read", "read the file"),
    ("decode", "+ decode"),
    ("augment", "+ resize, rotate, crop, flip"),
    ("views", "+ RCM and pairing (a map of its own)"),
    ("stream", "the training stream: all of it, batched"),
)


def split_worker(paths):
    """ms per example of each stage of the training element path (1 core), as "stage=ms ..." on one line."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from dcl_keras.data import augment, keyed_hash, pairing, pipeline

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1

    def per_example(ds, count, examples_per_item=1):
        """ms per example of an endless (repeated) stream, pulled as training pulls it: one live iterator."""
        iterator = iter(ds.with_options(options))
        for _ in range(count):  # Warm-up: one pass compiles every size bucket and fills the file cache.
            next(iterator)
        with Timer() as t:
            for _ in range(count):
                next(iterator)
        return 1000.0 * t.seconds / (count * examples_per_item)

    paths_ds = tf.data.Dataset.from_tensor_slices(paths).repeat()
    files = paths_ds.map(tf.io.read_file)
    decoded = paths_ds.map(pipeline.read_image).enumerate()

    def augmented(i, image):
        key = keyed_hash.combine_keys(0, 0, i)
        return augment.train_augment(image, key, RESIZE, CROP, ROTATION, "pillow", keep_uint8=True), key

    views = decoded.map(augmented).map(lambda image, key: pairing.make_views(image, 0, key, n=N, k=K))
    stream = training_stream(paths)
    count = len(paths)
    cumulative = [
        per_example(files, count),
        per_example(decoded, count),
        per_example(decoded.map(augmented), count),
        per_example(views, count),
        per_example(stream, count // BATCH, BATCH),
    ]
    return " ".join(f"{name}={ms:.3f}" for (name, _), ms in zip(STAGES, cumulative, strict=True))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--sizes", default="500x375,1600x1200,3000x2000", help="WxH,... in equal shares")
    parser.add_argument(
        "--max_isa",
        default="",
        choices=ISA_CHOICES,
        help="Cap the instruction set XLA compiles for and oneDNN dispatches to (AVX2: a CPU without AVX-512).",
    )
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "DIR", "CORES"))
    args = parser.parse_args()
    capped = cap_isa(args.max_isa)  # Read by TensorFlow when it loads, in the worker processes that inherit it.
    if args.worker:
        kind, folder, cores = args.worker[0], args.worker[1], int(args.worker[2])
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".jpg"))
        paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]  # Sizes interleaved.
        if kind == "split":
            print(split_worker(paths))
            return
        if kind == "pil":
            rate = pil_worker(paths, cores)
        else:
            rate = tf_worker(paths, cores, reducing_gap=2.0 if kind == "tf" else 0.0)
        print(f"{rate:.3f}")
        return
    all_cores = len(os.sched_getaffinity(0))
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        for i, size in enumerate(sizes):
            write_jpegs(os.path.join(folder, f"{size[0]}x{size[1]}"), args.images // len(sizes), size, seed=i)
        print(
            f"{args.images} JPEGs ({args.sizes}, equal shares) -> resize {RESIZE}, crop {CROP}, rotate, flip, "
            f"RCM N={N} k={K}, targets"
        )
        print(f"machine: {machine()}; {all_cores} cores available to this process{capped}")
        results = {}
        for cores in sorted({1, all_cores}):
            for kind in ("pil", "tf", "tf_exact"):
                results[kind, cores] = float(run_pinned([__file__, "--worker", kind, folder, str(cores)], cores))
            pil = results["pil", cores]
            print(
                f"{cores} core(s): Pillow+NumPy (reference steps) {pil:.1f} examples/s; "
                f"tf.data {results['tf', cores]:.1f} ({results['tf', cores] / pil:.2f}x) with JPEG draft decoding, "
                f"{results['tf_exact', cores]:.1f} ({results['tf_exact', cores] / pil:.2f}x) decoding every pixel"
            )
        line = run_pinned([__file__, "--worker", "split", folder, "1"], 1)
        stages = dict(item.split("=") for item in line.split())
        print(
            f"tf.data per example, 1 core, each stream up to a stage (Pillow+NumPy: {1000 / results['pil', 1]:.2f} ms):"
        )
        for name, label in STAGES:
            print(f"  {label:42s} {float(stages[name]):6.2f} ms")


if __name__ == "__main__":
    main()
