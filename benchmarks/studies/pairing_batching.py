"""RCM and pairing per example or per batch: CPU time per example, both ways in one process.

    python -m benchmarks.studies.pairing_batching [--sizes 500x375:448,128x128:64] [--rounds 7]

For each (JPEG size, crop) the training element path decodes, augments
(pillow resampling, 15 degrees) and then either makes the original and
destructed views of each example before batching 16 (what streams read from
files do) or batches 16 augmented images first and makes the views of the
whole batch in one go (what the stream of held images does,
`train_stream.DecodedImages`). The augmented stream alone is timed too, so the
cost of RCM and pairing shows as the difference. CPU time (not wall time,
which this shared machine's stolen cores distort) per example on 1 core,
the three streams alternating over the rounds in a rotating order; medians and the per-batch /
per-example ratio of the RCM and pairing cost.
"""

import argparse
import os
import statistics
import tempfile

from benchmarks.common import machine, timed_rounds, write_jpegs

BATCH = 16


def parse_sizes(text):
    """'500x375:448,...' -> [((500, 375), 448), ...]."""
    cases = []
    for item in text.split(","):
        size, _, crop = item.partition(":")
        width, _, height = size.partition("x")
        cases.append(((int(width), int(height)), int(crop)))
    return cases


def measure(size, crop, rounds, batches_per_round):
    import tensorflow as tf

    from dcl_keras.data import augment, keyed_hash, pairing, pipeline

    n = 7 if crop % 7 == 0 else 4
    resize = crop * 8 // 7
    paths, _ = write_jpegs(tempfile.mkdtemp(), 96, size)
    decoded = tf.data.Dataset.from_tensor_slices(paths).repeat().map(pipeline.read_image).enumerate()

    def augmented(i, image):
        key = keyed_hash.combine_keys(0, 0, i)
        image = augment.train_augment(image, key, resize, crop, 15.0, "pillow", keep_uint8=True)
        return image, tf.cast(i, tf.int32), key

    def views(images, labels, keys):
        return pairing.make_views(images, labels, keys, n=n, k=2)

    streams = {
        "augmented only": decoded.map(augmented).batch(BATCH),
        "views per example": decoded.map(augmented).map(views).batch(BATCH).map(pairing.flatten_views),
        "views per batch": decoded.map(augmented).batch(BATCH).map(lambda *x: pairing.flatten_views(*views(*x))),
    }
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    iterators = {name: iter(ds.with_options(options)) for name, ds in streams.items()}
    for iterator in iterators.values():  # Warm-up: compiles, fills the file cache.
        for _ in range(batches_per_round):
            next(iterator)

    def one_round(iterator):
        def pull():
            for _ in range(batches_per_round):
                next(iterator)

        return pull

    seconds = timed_rounds({name: one_round(iterator) for name, iterator in iterators.items()}, rounds)
    times = {name: [1000.0 * t.cpu / (batches_per_round * BATCH) for t in values] for name, values in seconds.items()}
    return n, {name: statistics.median(values) for name, values in times.items()}, times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500x375:448,128x128:64", help="JPEG WxH:crop, comma-separated")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=12, help="batches per stream per round")
    args = parser.parse_args()
    cases = parse_sizes(args.sizes)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    print(f"machine: {machine()}; pinned to 1 core")
    for size, crop in cases:
        n, medians, times = measure(size, crop, args.rounds, args.batches)
        print(f"{size[0]}x{size[1]} JPEGs -> {crop}-px crops, RCM N={n}, batches of {BATCH}: CPU ms per example")
        for name, value in medians.items():
            print(f"  {name:18s} {value:6.3f}   rounds: " + " ".join(f"{t:.3f}" for t in times[name]))
        base = medians["augmented only"]
        per_example, per_batch = medians["views per example"] - base, medians["views per batch"] - base
        print(
            f"  RCM and pairing: {per_example:.3f} ms per example made per example, {per_batch:.3f} per batch "
            f"(per batch / per example: {per_batch / per_example:.2f})"
            if per_example > 0
            else f"  RCM and pairing: {per_example:.3f} / {per_batch:.3f} ms (below this machine's noise)"
        )


if __name__ == "__main__":
    main()
