"""Region Confusion Mechanism on the device: a batch at a time, keras.ops only.

The same RCM as `dcl_keras.data.rcm` (row step, column step, Uniform(-k, k)
jitter, argsort), written with `keras.ops` so that it runs inside the compiled
train step under TensorFlow, JAX or XLA. It mirrors the keyed counter hash of
`dcl_keras.data.keyed_hash` with the constants of `dcl_keras.contract`, so a
given uint32 key gives bit-identical permutations in both places
(`contract.MIRRORS` lists the pairs); per-image keys come from a
`keras.random.SeedGenerator`.
"""

import keras
from keras import ops

from dcl_keras import contract


def _u32(value):
    return ops.convert_to_tensor(value, dtype="uint32")


def hash_uint32(x):
    """lowbias32 finalizer, elementwise on uint32 (identical to the pipeline's)."""
    s1, s2, s3 = contract.HASH_SHIFTS
    x = ops.cast(x, "uint32")
    x = ops.bitwise_xor(x, ops.right_shift(x, _u32(s1)))
    x = ops.multiply(x, _u32(contract.HASH_MUL_1))
    x = ops.bitwise_xor(x, ops.right_shift(x, _u32(s2)))
    x = ops.multiply(x, _u32(contract.HASH_MUL_2))
    return ops.bitwise_xor(x, ops.right_shift(x, _u32(s3)))


def combine_keys(*parts):
    """Folds integers or uint32 tensors into one uint32 key (same as the pipeline's combine_keys)."""
    key = _u32(contract.KEY_INIT)
    for part in parts:
        part = _u32(part % (1 << 32)) if isinstance(part, int) else ops.cast(part, "uint32")
        key = hash_uint32(ops.bitwise_xor(ops.multiply(key, _u32(contract.GOLDEN)), part))
    return key


def hash_uniform(keys, count):
    """[B, count] float32 draws in [0, 1) from uint32 keys [B]."""
    counters = ops.multiply(ops.cast(ops.arange(count), "uint32"), _u32(contract.GOLDEN))
    mixed = ops.bitwise_xor(hash_uint32(keys)[:, None], counters[None, :])
    bits = hash_uint32(ops.add(mixed, _u32(1)))
    shift = 32 - contract.UNIFORM_BITS
    return ops.cast(ops.right_shift(bits, _u32(shift)), "float32") * (1.0 / (1 << contract.UNIFORM_BITS))


def draw_region_permutations(keys, n, k):
    """Source maps int32 [B, N, N, 2] for uint32 keys [B] (see dcl_keras.data.rcm)."""
    batch = ops.shape(keys)[0]
    if n == 1:
        return ops.zeros((batch, 1, 1, 2), dtype="int32")
    u = ops.reshape(hash_uniform(keys, 2 * n * n), (batch, 2, n, n))
    q = ops.arange(n, dtype="float32") + float(k) * (2.0 * u - 1.0)
    orders = ops.cast(ops.argsort(q, axis=-1), "int32")
    row_order, col_order = orders[:, 0], orders[:, 1]  # [B, N, N]
    src_row = ops.transpose(col_order, (0, 2, 1))
    # src_col[b, r, c] = row_order[b, src_row[b, r, c], c]
    flat = ops.reshape(row_order, (batch, n * n))
    index = src_row * n + ops.arange(n, dtype="int32")[None, None, :]
    src_col = ops.reshape(ops.take_along_axis(flat, ops.reshape(index, (batch, n * n)), axis=1), (batch, n, n))
    return ops.stack([src_row, src_col], axis=-1)


def apply_region_permutations(images, sources):
    """Moves the regions of images [B, H, W, C] as sources [B, N, N, 2] say (a gather)."""
    n = sources.shape[-2]
    _, h, w, c = images.shape
    rh, rw = h // n, w // n
    batch = ops.shape(images)[0]
    regions = ops.reshape(images, (batch, n, rh, n, rw, c))
    regions = ops.reshape(ops.transpose(regions, (0, 1, 3, 2, 4, 5)), (batch, n * n, rh * rw * c))
    flat = ops.reshape(sources[..., 0] * n + sources[..., 1], (batch, n * n, 1))
    moved = ops.take_along_axis(regions, flat, axis=1)
    moved = ops.transpose(ops.reshape(moved, (batch, n, n, rh, rw, c)), (0, 1, 3, 2, 4, 5))
    return ops.reshape(moved, (batch, h, w, c))


def alignment_targets(sources):
    """The alignment targets of source maps [..., N, N, 2] (`contract.alignment_target`), float32."""
    return contract.alignment_target(ops.cast(sources, "float32"), sources.shape[-2])


@keras.saving.register_keras_serializable(package="dcl_keras")
class RegionConfusion(keras.layers.Layer):
    """Builds DCL views and targets from a batch of augmented originals, on the device.

    Args:
        n: regions per side (the config's rcm.n).
        k: neighbourhood size, 1 <= k < N (rcm.k).
        originals, destructed: views per example (1:1 in the paper).
        seed: int, seed of the SeedGenerator that draws per-image keys.

    Call: `views, targets = layer(images [B, H, W, 3], labels [B])` with views
    [B * V, H, W, 3] grouped example by example and targets keyed like the
    model's outputs (the contract of `dcl_keras.data.pairing`).
    """

    def __init__(self, n, k, originals=1, destructed=1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.n = n
        self.k = k
        self.originals = originals
        self.destructed = destructed
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def draw_keys(self, batch):
        return ops.cast(keras.random.randint((batch,), 0, 2**31 - 1, seed=self.seed_generator), "uint32")

    def _identity(self):
        return ops.convert_to_tensor(contract.identity_source(self.n))

    def originals_only(self, images, labels):
        """The inference-mode views: each original once, identity targets."""
        batch = ops.shape(images)[0]
        n = self.n
        targets = {
            contract.CLASSIFIER: ops.cast(labels, "int32"),
            contract.DISCRIMINATOR: ops.full((batch,), contract.ORIGINAL, dtype="int32"),
            contract.ALIGNMENT: alignment_targets(ops.broadcast_to(self._identity()[None], (batch, n, n, 2))),
        }
        return images, targets

    def call(self, images, labels, keys=None):
        n, k = self.n, self.k
        batch = ops.shape(images)[0]
        keys = self.draw_keys(batch) if keys is None else ops.cast(keys, "uint32")
        identity = self._identity()
        views, sources = [], []
        for _ in range(self.originals):
            views.append(images)
            sources.append(ops.broadcast_to(identity[None], (batch, n, n, 2)))
        for copy in range(self.destructed):
            source = draw_region_permutations(combine_keys(keys, contract.DESTRUCTED_COPY_SALT + copy), n, k)
            views.append(apply_region_permutations(images, source))
            sources.append(source)
        count = self.originals + self.destructed
        views = ops.reshape(ops.stack(views, axis=1), (-1, *images.shape[1:]))
        sources = ops.reshape(ops.stack(sources, axis=1), (-1, n, n, 2))
        flags = ops.convert_to_tensor(contract.view_labels(self.originals, self.destructed), dtype="int32")
        targets = {
            contract.CLASSIFIER: ops.reshape(ops.repeat(ops.cast(labels, "int32")[:, None], count, axis=1), (-1,)),
            contract.DISCRIMINATOR: ops.reshape(ops.tile(flags[None], (batch, 1)), (-1,)),
            contract.ALIGNMENT: alignment_targets(sources),
        }
        return views, targets

    def get_config(self):
        return {
            **super().get_config(),
            "n": self.n,
            "k": self.k,
            "originals": self.originals,
            "destructed": self.destructed,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for old, new in (("num_regions", "n"), ("neighbourhood", "k")):  # Models saved before the rename.
            if old in config:
                config[new] = config.pop(old)
        return cls(**config)
