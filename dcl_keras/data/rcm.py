"""Region Confusion Mechanism (RCM), Chen et al., CVPR 2019, section 3.1.

The image is split into N x N regions. Each row is reordered by the argsort of
`i + r_i`, r_i ~ Uniform(-k, k) drawn afresh per row; then each column of the
result is reordered the same way with fresh draws. No region moves `2k` cells or
more along either axis, and the composed mapping is known exactly: it is the
ground truth of the region alignment loss.

Drawing and applying the permutation are separate steps:

* `draw_region_permutation(key, n, k)` returns `source`, int32 [N, N, 2]:
  `source[r, c] = (row, col)` of the original cell that lands in destination
  cell (r, c); keys [B] give [B, N, N, 2], each key's own map.
* `apply_region_permutation(image, source)` moves the pixels (a pure gather).

Which (N, k, image size) can work is `dcl_keras.contract.validate_rcm_args`,
which the input pipeline and the config share (the config without TensorFlow).

The jitter comes from the keyed counter hash (`dcl_keras.data.keyed_hash`), not
from `tf.random`: TF's stateless generators give different streams with and without
XLA, while this hash gives bit-identical draws in eager mode, inside `tf.data`,
under `jit_compile=True`, and on any device. The same `key` therefore gives the
same destruction everywhere.
"""

import tensorflow as tf

from dcl_keras import contract
from dcl_keras.data.keyed_hash import hash_uniform


def _local_shuffle_orders(jitter, n):
    """Argsort of `i + r_i` along the last axis for a [..., N] block of jitter."""
    positions = tf.range(n, dtype=tf.float32)
    return tf.argsort(positions + jitter, axis=-1, stable=True, direction="ASCENDING")


def draw_region_permutation(key, n, k):
    """Draws the RCM mapping for one image, or for a batch of keys.

    Args:
        key: uint32 scalar tensor (see `combine_keys`), e.g. from (seed, epoch,
            example index), or uint32 [B] keys, one per image.
        n: int, regions per side (N).
        k: int, neighbourhood size, 1 <= k < N.

    Returns:
        int32 tensor [N, N, 2] ([B, N, N, 2] for keys [B]): for each
        destination cell (row, col), the (row, col) of its source cell in the
        original image. A key gives the same map alone and in a batch.
    """
    key = tf.cast(key, tf.uint32)
    batch = tf.shape(key)
    if n == 1:
        return tf.zeros(tf.concat([batch, [1, 1, 2]], 0), tf.int32)
    u = tf.reshape(hash_uniform(key, 2 * n * n), tf.concat([batch, [2, n, n]], 0))
    jitter = float(k) * (2.0 * u - 1.0)
    # row_order[..., j, p]: column (in row j) of the region that goes to column p.
    row_order = _local_shuffle_orders(jitter[..., 0, :, :], n)
    # col_order[..., i, p]: row (in column i) of the region that goes to row p.
    col_order = _local_shuffle_orders(jitter[..., 1, :, :], n)
    src_row = tf.linalg.matrix_transpose(col_order)  # [..., dest_row, dest_col]
    # src_col[..., r, c] = row_order[..., src_row[..., r, c], c]
    index = src_row * n + tf.range(n, dtype=tf.int32)
    flat_shape = tf.concat([batch, [n * n]], 0)
    src_col = tf.gather(tf.reshape(row_order, flat_shape), tf.reshape(index, flat_shape), batch_dims=key.shape.rank)
    return tf.stack([src_row, tf.reshape(src_col, tf.shape(src_row))], axis=-1)


def apply_region_permutation(image, source):
    """Moves the regions of `image` [H, W, C] (or [B, H, W, C]) as `source` says."""
    n = source.shape[-2]
    batched = image.shape.rank == 4
    if not batched:
        image = image[None]
        source = source[None]
    shape = tf.shape(image)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    rh, rw = h // n, w // n
    regions = tf.reshape(image, [b, n, rh, n, rw, c])
    regions = tf.reshape(tf.transpose(regions, [0, 1, 3, 2, 4, 5]), [b, n * n, rh, rw, c])
    flat_source = tf.reshape(source[..., 0] * n + source[..., 1], [b, n * n])
    moved = tf.gather(regions, flat_source, axis=1, batch_dims=1)
    moved = tf.transpose(tf.reshape(moved, [b, n, n, rh, rw, c]), [0, 1, 3, 2, 4, 5])
    out = tf.reshape(moved, [b, h, w, c])
    out = tf.ensure_shape(out, [None, *image.shape[1:]])
    return out if batched else out[0]


def invert_region_permutation(source):
    """The mapping that undoes `source`: apply it to the destructed image to restore the original."""
    n = source.shape[-2]
    flat = tf.reshape(source[..., 0] * n + source[..., 1], [n * n])
    inverse = tf.scatter_nd(flat[:, None], tf.range(n * n, dtype=tf.int32), [n * n])
    return tf.reshape(tf.stack([inverse // n, inverse % n], axis=-1), [n, n, 2])


def region_confusion(image, key, n, k):
    """Destructs one image: returns (destructed image, source map int32 [N, N, 2]); or a batch, with keys [B]."""
    source = draw_region_permutation(key, n, k)
    return apply_region_permutation(image, source), source


def alignment_target(source):
    """Normalised alignment target float32 [..., N, N, 2] from a source map.

    Each destination cell holds the centre of its source cell in normalised image
    coordinates, `(index + 0.5) / N`, so targets lie in (0, 1): non-negative, as
    the ReLU of the alignment head requires. Channel 0 is the row, 1 the column.
    """
    return contract.alignment_target(tf.cast(source, tf.float32), source.shape[-2])


def identity_source(n):
    """The source map of an undestructed image: every cell comes from itself (int32 [N, N, 2])."""
    return tf.constant(contract.identity_source(n))
