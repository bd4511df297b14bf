"""Input at scale: per-process work with several processes, and record streams flat in memory.

    python benchmarks/scale.py processes   # input examples/s per process, 1 vs 2 processes
    python benchmarks/scale.py records     # peak memory of one epoch over 20,000 vs 200,000 records

processes: 192 generated 500x375 JPEGs. P processes (P = 1, then 2) start at
once, each pinned to its own core, and each builds `train_stream.train_batches(
process_index=p, process_count=P)`: its share of 40 global batches of 16
examples (224 px, RCM N=7). Printed per process: the examples it decoded and
augmented per second and the time per global batch. The processes are what a
multi-host JAX run starts (the input share does not depend on JAX, so no
collectives are needed to measure it).

records: 20,000 and 200,000 records of small JPEGs (64x48, 2,000 classes, 16
shards, written once into --dir), each streamed for one epoch of the training
pipeline (32 px, batches of 64) in a fresh process; prints peak resident memory
and examples/s.
"""

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile

import numpy as np

from common import Timer, write_jpegs

GLOBAL_BATCH, STEPS = 16, 40


def process_worker(folder, index, count, keras_sharding):
    os.sched_setaffinity(0, {index})
    from dcl_keras.data import readers, specs, train_stream

    split = readers.image_folder(folder, "train")
    spec = specs.TrainSpec(seed=0, batch_size=GLOBAL_BATCH, image_size=224, resize_size=256, n=7, k=2)
    if keras_sharding:  # Before: every process builds the whole global batch, then keeps its piece (Keras's way).
        ds = train_stream.train_batches(split, spec).rebatch(GLOBAL_BATCH * 2 // count).shard(count, index)
    else:
        ds = train_stream.train_batches(split, spec, process_index=index, process_count=count)
    iterator = iter(ds)
    next(iterator)  # Warm-up: tracing and the first batch.
    with Timer() as timer:
        for _ in range(STEPS):
            next(iterator)
    seconds = timer.seconds
    share = GLOBAL_BATCH if keras_sharding else GLOBAL_BATCH // count
    print(json.dumps({"examples_per_s": STEPS * share / seconds, "s_per_global_batch": seconds / STEPS}))


def processes():
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(os.path.join(root, "train"), 192, (500, 375), classes=8)
        print(f"machine: {cores} cores; {STEPS} global batches of {GLOBAL_BATCH} examples (500x375 JPEGs -> 224 px)")
        per_step = {}
        for count, keras_sharding in ((1, False), (2, False), (2, True)):
            if count > cores:
                print(f"{count} processes: skipped, {cores} core(s)")
                continue
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        "process",
                        root,
                        str(i),
                        str(count),
                        str(int(keras_sharding)),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for i in range(count)
            ]
            results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            per_step[count, keras_sharding] = np.mean([r["s_per_global_batch"] for r in results])
            built = GLOBAL_BATCH if keras_sharding else GLOBAL_BATCH // count
            label = " (before: Keras's rebatch + shard)" if keras_sharding else ""
            for i, r in enumerate(results):
                print(
                    f"{count} process(es){label}, process {i}: builds {built} examples per global batch, "
                    f"{r['s_per_global_batch'] * 1000:.0f} ms per global batch, "
                    f"{r['examples_per_s']:.1f} examples/s of its share"
                )
        if (2, False) in per_step:
            one = per_step[1, False]
            print(
                f"time per global batch, 1 process / 2 processes: {one / per_step[2, False]:.2f}x (ideal 2.00x); "
                f"before, with Keras's sharding: {one / per_step[2, True]:.2f}x"
            )


def write_records(folder, count, classes=2000, shards=16):
    from PIL import Image

    from dcl_keras.data import records

    rng = np.random.default_rng(0)
    pool = []
    for _ in range(256):  # Distinct small photos-like JPEGs, reused: the bytes do not matter here.
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), np.uint8)).save(buffer, "JPEG", quality=85)
        pool.append(buffer.getvalue())
    import tensorflow as tf

    names = [records.shard_name("train", s, shards) for s in range(shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(folder, n)) for n in names]
    sizes, counts = [0] * shards, np.zeros(classes, np.int64)
    for i in range(count):
        label = int(rng.integers(classes))
        writers[i % shards].write(records.serialize(pool[i % len(pool)], label, key=f"generated/{i}"))
        sizes[i % shards] += 1
        counts[label] += 1
    for w in writers:
        w.close()
    entry = {
        "shards": [{"file": n, "examples": s} for n, s in zip(names, sizes, strict=True)],
        "examples": count,
        "class_counts": counts.tolist(),
        "left_out": [],
        "written_from": "benchmark",
    }
    manifest = {
        "format": records.FORMAT,
        "version": records.VERSION,
        "class_names": [f"c{i}" for i in range(classes)],
        "splits": {"train": entry},
    }
    with open(os.path.join(folder, records.MANIFEST), "w") as f:
        json.dump(manifest, f)


def records_worker(folder):
    from dcl_keras.data import records, specs, train_stream

    split = records.records(folder, "train")
    ds = train_stream.train_batches(
        split, specs.TrainSpec(seed=0, batch_size=64, image_size=32, resize_size=40, n=4, k=2)
    )
    steps = split.num_examples // 64
    with Timer() as timer:
        for _ in ds.take(steps):
            pass
    seconds = timer.seconds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak, "examples_per_s": steps * 64 / seconds}))


def records_benchmark(base):
    print(f"machine: {len(os.sched_getaffinity(0))} cores; one epoch of 64x48 JPEG records -> 32 px, batches of 64")
    for count in (20_000, 200_000):
        folder = os.path.join(base, f"records_{count}")
        if not os.path.isfile(os.path.join(folder, "manifest.json")):
            os.makedirs(folder, exist_ok=True)
            write_records(folder, count)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run(
            [sys.executable, __file__, "--worker", "records", folder],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{count:>7} records: peak RSS {r['peak_mib']:.0f} MiB, {r['examples_per_s']:.0f} examples/s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", choices=["processes", "records"])
    parser.add_argument("--dir", default=os.path.expanduser("~/.cache/dcl_keras/bench_records"))
    parser.add_argument("--worker", nargs="+")
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "process":
            process_worker(rest[0], int(rest[1]), int(rest[2]), bool(int(rest[3])))
        else:
            records_worker(rest[0])
    elif args.what == "processes":
        processes()
    else:
        records_benchmark(args.dir)


if __name__ == "__main__":
    main()
