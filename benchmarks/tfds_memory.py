"""Peak resident memory of one training epoch over TFDS data: flat in the dataset size.

    python benchmarks/tfds_memory.py [--data_dir ~/.cache/dcl_keras/bench_tfds]

Prepares a real TFDS dataset of 2,000 and one of 8,000 generated 500x375 JPEGs
(benchmarks/tfds_jpegs.py, TFDS's own record files; cached in --data_dir), then, each in
a fresh process, streams one epoch of the training pipeline (shuffle, decode,
augment to 224 px, RCM, batches of 16) and prints the process's peak resident
memory. For contrast, the same epoch with the previous design (records decoded
first, then shuffled through a buffer of up to 10,000 decoded images).
"""

import argparse
import os
import resource

from common import Timer, run_pinned


def epoch_worker(data_dir, config, mode):
    import tensorflow as tf
    import tfds_jpegs  # Registers the bench_jpegs builder.

    from dcl_keras.data import augment, specs, tfds_reader, train_stream

    split = tfds_reader.tfds(f"{tfds_jpegs.BenchJpegs.name}/{config}", "train", data_dir=data_dir)
    steps = split.num_examples // 16
    with Timer() as timer:
        if mode == "encoded":
            spec = specs.TrainSpec(seed=0, batch_size=16, image_size=224, resize_size=256, n=7, k=2)
            ds = train_stream.train_batches(split, spec)
        else:  # The previous design: decode every record, then shuffle decoded images.
            ds = split.builder.as_dataset(split="train", as_supervised=True, shuffle_files=False)
            ds = ds.shuffle(min(split.num_examples, 10_000), seed=0)
            ds = ds.map(lambda image, label: augment.train_augment(image, tf.constant(1, tf.uint32), 256, 224, 15.0))
            ds = ds.batch(16, drop_remainder=True)
        for _ in ds.take(steps):
            pass
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{peak_mib:.0f} {steps * 16 / timer.seconds:.1f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_dir", default=os.path.expanduser("~/.cache/dcl_keras/bench_tfds"))
    parser.add_argument("--worker", nargs=3, metavar=("DATA_DIR", "CONFIG", "MODE"))
    args = parser.parse_args()
    if args.worker:
        epoch_worker(*args.worker)
        return
    import tfds_jpegs

    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} cores; one epoch, 500x375 JPEG records -> 224 px DCL batches of 16")
    for config in ("n2000", "n8000"):
        tfds_jpegs.prepare(args.data_dir, config)
    for mode in ("encoded", "decoded"):
        for config in ("n2000", "n8000"):
            peak, rate = run_pinned([__file__, "--worker", args.data_dir, config, mode], cores).split()
            label = "shuffle encoded, decode after" if mode == "encoded" else "previous: decode, then shuffle"
            print(f"{config[1:]:>5} images, {label}: peak RSS {peak} MiB, {rate} examples/s")


if __name__ == "__main__":
    main()
