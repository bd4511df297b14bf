"""Shared helpers for the benchmark scripts (not part of the library)."""

import collections
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def photo_like(rng, height, width):
    """uint8 [height, width, 3]: smooth waves plus noise, like a photo (not white noise)."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(xx / rng.uniform(10, 60) + c) * np.cos(yy / rng.uniform(10, 60) - c) for c in range(3)], -1)
    return np.clip(127 + 90 * base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def write_jpegs(folder, count, size=(500, 375), classes=4, seed=0):
    """Writes `count` smooth-plus-noise JPEGs (`photo_like`) in class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    paths, labels = [], []
    for i in range(count):
        label = i % classes
        image = photo_like(rng, h, w)
        path = os.path.join(folder, f"class_{label}", f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
        paths.append(path)
        labels.append(label)
    return paths, labels


def run_pinned(args, cores):
    """Runs `python args...` pinned to the first `cores` CPUs; returns its last stdout line.

    The child runs the script as `python script.py` does (its folder first on its import path) and
    sets its CPU affinity before Python starts, so every thread it spawns inherits the pinning.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(cores))
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, set(range(cores))),
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout.strip().splitlines()[-1]


ISA_CHOICES = ("", "SSE4_2", "AVX", "AVX2", "AVX512")
ONEDNN_ISA = {"SSE4_2": "SSE41", "AVX": "AVX", "AVX2": "AVX2", "AVX512": "AVX512_CORE"}  # oneDNN's names.


def cap_isa(max_isa):
    """Caps the instruction set XLA compiles for and oneDNN dispatches to (before TensorFlow loads; inherited).

    How an AVX-512 host measures what a CPU without AVX-512 gets from those
    two (`--max_isa AVX2`); TF's own kernels and Pillow are compiled for a
    fixed baseline and do not change. Returns a note for the machine line.
    """
    if not max_isa:
        return ""
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_max_isa={max_isa}".strip()
    os.environ["ONEDNN_MAX_CPU_ISA"] = ONEDNN_ISA[max_isa]
    return f"; XLA and oneDNN capped at {max_isa}"


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def machine():
    """One line naming this CPU, its core count and its vector extensions (printed with every figure)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        import platform

        model = platform.processor() or model
    vector = " ".join(f for f in VECTOR_FLAGS if f in flags) or "none of " + "/".join(VECTOR_FLAGS[:3])
    return f"{model}, {os.cpu_count()} cores, {vector}"


class Timer:
    """Times the block it wraps: `seconds` of wall time (what a user waits) and `cpu_seconds` of this process.

    Process CPU time is not inflated by a core that the shared machine takes
    away, but counts the work of every thread.
    """

    def __enter__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


Round = collections.namedtuple("Round", ["wall", "cpu"])  # Seconds of one side's round (see Timer).


def timed_rounds(sides, rounds):
    """Each side's rounds, {name: [Round(wall, cpu)]}: `sides` maps names to one round's work.

    The order of the sides rotates from round to round, so each side runs
    early and late under the same load. With one side, it times that side
    `rounds` times.
    """
    names = list(sides)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with Timer() as timer:
                sides[name]()
            times[name].append(Round(timer.seconds, timer.cpu_seconds))
    return times


def repeated(work, times):
    """One round's work: `work()` called `times` times."""

    def round_of_work():
        for _ in range(times):
            work()

    return round_of_work
