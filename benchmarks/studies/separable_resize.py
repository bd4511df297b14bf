"""The training warp against a Pillow-exact separable resize followed by a nearest gather, CPU time per example.

    python -m benchmarks.studies.separable_resize [--size 500x375] [--rounds 7] [--max_isa AVX2]

The pillow resampling's warp (`augment.train_augment`) computes each picked
pixel of the resized image on the spot: a bilinear sample of the decoded
image, 4 taps of 3 bytes gathered one by one, which is where an AVX2 CPU
without fast gathers spends most of the element path. The alternative
measured here gathers fewer bytes per output pixel: the whole
`resize` x `resize` image is made first with Pillow's own integer arithmetic
(its bilinear coefficients at 22 fractional bits, horizontal pass, uint8
rounding, vertical pass), each pass gathering whole rows of a transposed or
plain image, then the rotated crop picks 1 tap per output pixel. It needs the
decoded image padded to `resize` x `resize` (a TF pad before XLA) and two XLA
programs (one alone would fuse the resize into the gather and recompute it
per picked pixel).

Both run in a tf.data map of one thread over decoded images held in memory
(the decode costs the same either way), pinned to 1 core, alternating over
the rounds; CPU time per example, medians. The script also checks that the
separable resize equals Pillow's `resize(BILINEAR)` bit for bit and reports
how many of each formulation's pixels differ from Pillow's training view
(resize, nearest rotate, crop, flip). `--max_isa` caps the instruction set
XLA compiles for and oneDNN dispatches to, as in input_pipeline.py.

Exact only where the resize grows an axis or keeps it: Pillow's integer
passes are the whole resize for images no larger than `resize` on either
side (`--size` up to 512x512); a larger one is first shrunk by the pillow
resampling's antialiased TF resize, which is within a grey level of
Pillow's, not equal to it.
"""

import argparse
import os
import statistics

import numpy as np

from benchmarks.common import ISA_CHOICES, cap_isa, machine, photo_like, timed_rounds

PRECISION = 22  # Pillow's fixed-point bits for 8-bit images.


def pillow_coefficients(in_size, out_size):
    """Pillow's bilinear coefficients for an axis growing from in_size to out_size: x0, x1, k0, k1 (int32).

    The same double-precision steps as Pillow's precompute_coeffs and
    normalize_coeffs_8bpc; growing, its triangle filter has at most 2 non-zero
    taps, x0 and x1 = x0 + 1 (clamped to the image).
    """
    x0 = np.zeros(out_size, np.int32)
    k = np.zeros((out_size, 2), np.int32)
    scale = in_size / out_size
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - 1.0 + 0.5), 0)
        weights = [
            max(1.0 - abs(x + xmin - center + 0.5), 0.0) for x in range(min(int(center + 1.0 + 0.5), in_size) - xmin)
        ]
        total = 0.0
        for w in weights:
            total += w
        ints = [int(0.5 + (w / total) * (1 << PRECISION)) for w in weights]
        x0[xx], k[xx, : min(len(ints), 2)] = xmin, ints[:2]
    return x0, np.minimum(x0 + 1, in_size - 1), k[:, 0], k[:, 1]


def build(resize, crop, rotation):
    import tensorflow as tf

    from dcl_keras.data import augment

    tables = [np.stack(t) for t in zip(*(pillow_coefficients(s, resize) for s in range(1, resize + 1)), strict=True)]
    x0s, x1s, k0s, k1s = (tf.constant(t) for t in tables)  # Row s - 1: an axis of s pixels.

    def blend(a, b, k0, k1):
        total = tf.cast(a, tf.int32) * k0 + tf.cast(b, tf.int32) * k1 + (1 << (PRECISION - 1))
        return tf.cast(tf.minimum(tf.bitwise.right_shift(total, PRECISION), 255), tf.uint8)

    def rows(image, size):  # Resizes axis 0 of [size_in, n, 3] (its first `size` rows real) to `resize`.
        x0, x1, k0, k1 = (t[size - 1] for t in (x0s, x1s, k0s, k1s))
        return blend(tf.gather(image, x0), tf.gather(image, x1), k0[:, None, None], k1[:, None, None])

    @tf.function(jit_compile=True)
    def resized(padded, height, width):  # Horizontal pass first, as Pillow.
        columns = rows(tf.transpose(padded, [1, 0, 2]), width)  # [resize (x), resize (y), 3]
        return rows(tf.transpose(columns, [1, 0, 2]), height)

    @tf.function(jit_compile=True)
    def nearest(image, key):
        t = augment.train_transform(key, resize, resize, resize, crop, rotation)
        out = augment.warp_image(tf.reshape(image, [-1, 3]), resize, resize, t, crop, "nearest")
        return tf.cast(out, tf.uint8)

    def separable(image, key):
        # As the pillow resampling does, axes longer than `resize` are shrunk first (TF's antialiased resize,
        # not Pillow's integers): the passes below grow an axis or keep it, and only that is Pillow's exactly.
        image = augment.shrink(image, resize)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        padded = tf.pad(image, [[0, resize - height], [0, resize - width], [0, 0]])
        return nearest(resized(padded, height, width), key)

    def current(image, key):
        return augment.train_augment(image, key, resize, crop, rotation, keep_uint8=True)

    return {"current warp": current, "separable, exact": separable}, resized


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="500x375")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--examples", type=int, default=480)
    parser.add_argument("--max_isa", default="", choices=ISA_CHOICES)
    args = parser.parse_args()
    capped = cap_isa(args.max_isa)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import tensorflow as tf
    from PIL import Image

    from dcl_keras.data import augment, keyed_hash

    width, height = (int(v) for v in args.size.split("x"))
    resize, crop, rotation = 512, 448, 15.0
    rng = np.random.default_rng(0)
    images = [photo_like(rng, height, width) for _ in range(16)]
    held = tf.constant(np.stack(images))
    formulations, resized = build(resize, crop, rotation)

    # Fidelity: the separable resize is Pillow's; each formulation against Pillow's whole training view.
    def pil_resize(image):
        return np.asarray(Image.fromarray(image).resize((resize, resize), Image.BILINEAR))

    exact = []
    grown = [(height, width)] if max(height, width) <= resize else []  # Larger: shrunk first, not exact.
    for h, w in grown + [(1, 1), (2, 511), (97, 300), (333, 512), (512, 512)]:
        image = images[0] if (h, w) == (height, width) else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        padded = np.pad(image, [[0, resize - h], [0, resize - w], [0, 0]])
        exact.append(f"{h}x{w} {np.array_equal(resized(padded, h, w).numpy(), pil_resize(image))}")
    pil = pil_resize(images[0])
    key = keyed_hash.combine_keys(3)
    top, left, angle, flip = (float(v) for v in augment.train_draw(key, resize, crop, rotation))
    view = np.asarray(Image.fromarray(pil).rotate(-np.degrees(angle), resample=Image.NEAREST))
    view = view[int(top) : int(top) + crop, int(left) : int(left) + crop]
    view = view[:, ::-1] if flip else view
    print(f"machine: {machine()}{capped}; pinned to 1 core; {args.size} -> {resize} -> crop {crop}")
    print(f"separable resize equals Pillow's resize bit for bit (height x width): {', '.join(exact)}")
    for name, fn in formulations.items():
        diff = np.abs(fn(held[0], key).numpy().astype(int) - view)
        print(
            f"{name}: {np.mean(diff > 0):.2%} of the view's values differ from Pillow's, "
            f"{np.mean(diff > 1):.2%} by more than 1 grey level"
        )

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1

    def stream(fn):
        def element(i):
            return fn(held[i % 16], keyed_hash.combine_keys(tf.cast(i, tf.uint32)))

        return tf.data.Dataset.range(args.examples).map(element).batch(16).with_options(options)

    def one_round(ds):
        def pull():
            for _ in ds:
                pass

        return pull

    streams = {name: stream(fn) for name, fn in formulations.items()}
    for ds in streams.values():
        for _ in ds.take(2):  # Compiles.
            pass
    seconds = timed_rounds({name: one_round(ds) for name, ds in streams.items()}, args.rounds)
    times = {name: [t.cpu / args.examples * 1e3 for t in values] for name, values in seconds.items()}
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name}: {medians[name]:.3f} ms CPU per example (median of {args.rounds}; {min(t):.3f}-{max(t):.3f})")
    print(f"separable / current: {medians['separable, exact'] / medians['current warp']:.2f}")


if __name__ == "__main__":
    main()
