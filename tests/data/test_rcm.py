"""Region Confusion Mechanism: the paper's properties over many seeds, XLA, tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras import contract
from dcl_keras.data import keyed_hash, rcm

CASES = [(n, k) for n in (1, 2, 3, 7) for k in (range(1, n) if n > 1 else [1])]
SEEDS = range(60)


def draw(seed, n, k):
    return rcm.draw_region_permutation(keyed_hash.combine_keys(seed), n, k).numpy()


def numbered_image(n, side=4):
    """An image whose every pixel tells its region: value = region index (and a gradient)."""
    rows = np.repeat(np.repeat(np.arange(n)[:, None] * n + np.arange(n)[None, :], side, 0), side, 1)
    grad = np.arange(n * side)[None, :] * 0.001
    return tf.constant(np.stack([rows, rows + grad, rows.T], -1).astype(np.float32))


@pytest.mark.parametrize("n,k", CASES)
def test_mapping_is_a_bounded_bijection(n, k):
    for seed in SEEDS:
        source = draw(seed, n, k)
        flat = source[..., 0] * n + source[..., 1]
        assert sorted(flat.ravel().tolist()) == list(range(n * n))
        rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        assert np.all(np.abs(source[..., 0] - rows) < 2 * k)
        assert np.all(np.abs(source[..., 1] - cols) < 2 * k)


@pytest.mark.parametrize("n,k", CASES)
def test_unpermuting_restores_the_original_exactly(n, k):
    image = numbered_image(n)
    for seed in range(20):
        destructed, source = rcm.region_confusion(image, keyed_hash.combine_keys(seed), n, k)
        restored = rcm.apply_region_permutation(destructed, rcm.invert_region_permutation(source))
        np.testing.assert_array_equal(restored.numpy(), image.numpy())
        # Each destination region holds exactly the pixels of its source region.
        region_ids = destructed.numpy()[::4, ::4, 0].astype(int)
        np.testing.assert_array_equal(region_ids, source[..., 0].numpy() * n + source[..., 1].numpy())


def test_n1_returns_the_input_unchanged():
    image = tf.random.uniform([12, 12, 3], seed=1)
    for seed in range(5):
        out, source = rcm.region_confusion(image, keyed_hash.combine_keys(seed), 1, 1)
        np.testing.assert_array_equal(out.numpy(), image.numpy())
        np.testing.assert_array_equal(source.numpy(), [[[0, 0]]])


def _numpy_rcm_displacement(n, k, trials, rng):
    """Mean |row shift| + |col shift| of the paper's construction, simulated with NumPy."""
    total = 0.0
    for _ in range(trials):
        row_order = np.argsort(np.arange(n) + rng.uniform(-k, k, (n, n)), axis=1, kind="stable")
        col_order = np.argsort(np.arange(n) + rng.uniform(-k, k, (n, n)), axis=1, kind="stable")
        src_row = col_order.T
        src_col = row_order[src_row, np.arange(n)[None, :]]
        rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        total += np.mean(np.abs(src_row - rows) + np.abs(src_col - cols))
    return total / trials


@pytest.mark.parametrize("n,k", [(2, 1), (3, 1), (3, 2), (7, 1), (7, 2), (7, 4)])
def test_regions_move_as_much_as_uniform_jitter_implies(n, k):
    trials = 400
    ours = [
        np.mean(np.abs(s[..., 0] - np.arange(n)[:, None]) + np.abs(s[..., 1] - np.arange(n)[None, :]))
        for s in (draw(seed, n, k) for seed in range(trials))
    ]
    expected = _numpy_rcm_displacement(n, k, 4000, np.random.default_rng(0))
    assert np.mean(ours) > 0.1  # Regions do move.
    stderr = np.std(ours) / np.sqrt(trials)
    assert abs(np.mean(ours) - expected) < 4 * stderr + 0.01, (np.mean(ours), expected)


def test_same_key_same_draw_and_different_keys_differ():
    a, b, c = draw(3, 7, 2), draw(3, 7, 2), draw(4, 7, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_xla_gives_bit_identical_draws_and_pixels():
    image = tf.random.uniform([56, 56, 3], maxval=255.0, seed=2)

    def destruct(image, key):
        return rcm.region_confusion(image, key, 7, 2)

    compiled = tf.function(destruct, jit_compile=True)
    for seed in range(10):
        key = keyed_hash.combine_keys(seed, 5, 9)
        eager_image, eager_source = destruct(image, key)
        xla_image, xla_source = compiled(image, key)
        np.testing.assert_array_equal(eager_source.numpy(), xla_source.numpy())
        np.testing.assert_array_equal(eager_image.numpy(), xla_image.numpy())


def test_apply_with_given_permutation_is_identical_under_xla():
    image = tf.random.uniform([2, 21, 21, 3], seed=3)
    source = tf.stack([draw(1, 3, 2), draw(2, 3, 2)])
    eager = rcm.apply_region_permutation(image, source)
    xla = tf.function(rcm.apply_region_permutation, jit_compile=True)(image, source)
    np.testing.assert_array_equal(eager.numpy(), xla.numpy())


def test_runs_inside_tf_data_with_the_same_result():
    image = tf.random.uniform([28, 28, 3], seed=4)
    ds = tf.data.Dataset.range(5).map(lambda i: rcm.region_confusion(image, keyed_hash.combine_keys(i), 7, 2)[1])
    for i, source in enumerate(ds):
        np.testing.assert_array_equal(source.numpy(), draw(i, 7, 2))


@pytest.mark.parametrize(
    "n,k,size,field",
    [(0, 1, 8, "n=0"), (3, 0, 9, "k=0"), (3, 3, 9, "k=3"), (4, 5, 8, "k=5"), (3, 1, 10, "image_size=10")],
)
def test_invalid_arguments_name_the_argument(n, k, size, field):
    with pytest.raises(ValueError, match=field):
        contract.validate_rcm_args(n, k, size)


def test_alignment_target_is_cell_centres():
    target = rcm.alignment_target(rcm.identity_source(2)).numpy()
    np.testing.assert_allclose(target[..., 0], [[0.25, 0.25], [0.75, 0.75]])
    np.testing.assert_allclose(target[..., 1], [[0.25, 0.75], [0.25, 0.75]])


def test_hash_matches_a_numpy_reference():
    def lowbias32(x):
        x = np.uint64(x)
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(0x7FEB352D)) & np.uint64(0xFFFFFFFF)
        x ^= x >> np.uint64(15)
        x = (x * np.uint64(0x846CA68B)) & np.uint64(0xFFFFFFFF)
        x ^= x >> np.uint64(16)
        return int(x)

    values = keyed_hash.hash_uint32(tf.constant([1, 2, 12345, 2**31], tf.int64)).numpy()
    assert values.tolist() == [lowbias32(v) for v in (1, 2, 12345, 2**31)]


def test_integer_keys_of_any_dtype_are_taken_as_uint32():
    for key in (5, tf.constant(5), tf.constant(5, tf.int64)):
        np.testing.assert_array_equal(
            rcm.draw_region_permutation(key, 4, 2).numpy(), rcm.draw_region_permutation(tf.constant(5, tf.uint32), 4, 2)
        )
