"""The device RCM (keras.ops): identical to the pipeline's for the same keys; RCM properties."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dcl_keras import contract
from dcl_keras.data import keyed_hash, pairing, rcm
from dcl_keras.models import region_confusion as device

pytestmark = pytest.mark.backend_agnostic

CASES = [(1, 1), (2, 1), (3, 1), (3, 2), (7, 1), (7, 2), (7, 6)]


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("n,k", CASES)
def test_same_keys_give_the_pipelines_permutations(n, k):
    keys = np.arange(40, dtype=np.uint32) * 7919 + 3
    ours = _np(device.draw_region_permutations(keras.ops.convert_to_tensor(keys, "uint32"), n, k))
    pipeline = np.stack([rcm.draw_region_permutation(tf.constant(int(key), tf.uint32), n, k).numpy() for key in keys])
    np.testing.assert_array_equal(ours, pipeline)


def test_hash_and_key_folding_match_the_pipeline():
    values = [0, 1, 12345, 2**31 + 5]
    np.testing.assert_array_equal(
        _np(device.hash_uint32(keras.ops.convert_to_tensor(values, "uint32"))),
        keyed_hash.hash_uint32(tf.constant(values, tf.int64)).numpy(),
    )
    assert int(_np(device.combine_keys(3, 4))) == int(keyed_hash.combine_keys(3, 4).numpy())
    keys = [0, 7, 2**32 - 1]
    np.testing.assert_array_equal(
        _np(device.hash_uniform(keras.ops.convert_to_tensor(keys, "uint32"), 50)),
        np.stack([keyed_hash.hash_uniform(tf.constant(key, tf.uint32), 50).numpy() for key in keys]),
    )


# Each mirrored pair of dcl_keras.contract.MIRRORS and the test here that compares the two bit for bit.
PARITY_TESTS = {
    "dcl_keras.data.keyed_hash.hash_uint32": "test_hash_and_key_folding_match_the_pipeline",
    "dcl_keras.data.keyed_hash.combine_keys": "test_hash_and_key_folding_match_the_pipeline",
    "dcl_keras.data.keyed_hash.hash_uniform": "test_hash_and_key_folding_match_the_pipeline",
    "dcl_keras.data.rcm.draw_region_permutation": "test_same_keys_give_the_pipelines_permutations",
    "dcl_keras.data.rcm.apply_region_permutation": "test_apply_matches_the_pipeline_and_inverts_exactly",
    "dcl_keras.data.pairing.make_views": "test_layer_builds_the_same_views_and_targets_as_the_pipeline",
}


def test_every_mirrored_pair_of_the_contract_exists_and_has_its_parity_test():
    import importlib
    import inspect

    def resolve(dotted):
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # The longest importable module prefix, then attributes.
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute)
            return obj
        raise AssertionError(dotted)

    assert set(PARITY_TESTS) == set(contract.MIRRORS)
    for pipeline_function, device_function in contract.MIRRORS.items():
        test = globals()[PARITY_TESTS[pipeline_function]]
        source = inspect.getsource(test)
        for name in (pipeline_function, device_function):
            assert callable(resolve(name)), name
            short = name.split(".")[-2] if name.endswith(".call") else name.split(".")[-1]
            assert short in source, f"{test.__name__} does not call {name}"


def test_layers_saved_with_the_old_argument_names_still_load():
    layer = device.RegionConfusion.from_config({"num_regions": 4, "neighbourhood": 2, "seed": 1, "name": "rcm"})
    assert (layer.n, layer.k) == (4, 2)


@pytest.mark.parametrize("n,k", CASES)
def test_device_draws_satisfy_the_rcm_properties(n, k):
    keys = keras.ops.convert_to_tensor(np.arange(60, dtype=np.uint32) * 104729, "uint32")
    sources = _np(device.draw_region_permutations(keys, n, k))
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    for source in sources:
        flat = source[..., 0] * n + source[..., 1]
        assert sorted(flat.ravel().tolist()) == list(range(n * n))
        assert np.all(np.abs(source[..., 0] - rows) < 2 * k) and np.all(np.abs(source[..., 1] - cols) < 2 * k)
    if n == 1:
        assert np.all(sources == 0)


def test_apply_matches_the_pipeline_and_inverts_exactly():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 21, 21, 3)).astype("float32")
    keys = np.array([5, 6, 7], np.uint32)
    sources = device.draw_region_permutations(keras.ops.convert_to_tensor(keys, "uint32"), 3, 2)
    ours = _np(device.apply_region_permutations(keras.ops.convert_to_tensor(images), sources))
    theirs = rcm.apply_region_permutation(tf.constant(images), tf.constant(_np(sources))).numpy()
    np.testing.assert_array_equal(ours, theirs)
    inverse = np.stack([rcm.invert_region_permutation(tf.constant(s)).numpy() for s in _np(sources)])
    restored = _np(device.apply_region_permutations(keras.ops.convert_to_tensor(ours), inverse))
    np.testing.assert_array_equal(restored, images)


def test_layer_builds_the_same_views_and_targets_as_the_pipeline():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (2, 28, 28, 3)).astype("float32")
    labels = np.array([3, 1], np.int32)
    keys = np.array([11, 12], np.uint32)
    layer = device.RegionConfusion(7, 2, originals=1, destructed=2, seed=0)
    views, targets = layer(keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels), keys=keys)
    for b in range(2):
        ref_views, ref_targets = pairing.make_views(
            tf.constant(images[b]), labels[b], tf.constant(int(keys[b]), tf.uint32), n=7, k=2, originals=1, destructed=2
        )
        np.testing.assert_array_equal(_np(views)[3 * b : 3 * b + 3], ref_views.numpy())
        for name, value in ref_targets.items():
            # Targets agree to the last bit up to XLA's division-by-reciprocal (1 ulp).
            np.testing.assert_allclose(_np(targets[name])[3 * b : 3 * b + 3], value.numpy(), rtol=1e-6, err_msg=name)


def test_layer_draws_fresh_keys_each_call():
    layer = device.RegionConfusion(4, 2, seed=3)  # Its config round trip: tests/test_saving.py.
    a = _np(layer.draw_keys(8))
    b = _np(layer.draw_keys(8))
    assert not np.array_equal(a, b)


def test_displacement_distribution_matches_the_pipeline():
    """Device keys come from keras.random, the pipeline's from (seed, epoch, index): compare the statistics."""
    n, k, count = 7, 2, 300
    layer = device.RegionConfusion(n, k, seed=0)
    device_sources = _np(device.draw_region_permutations(layer.draw_keys(count), n, k))
    pipeline_sources = np.stack(
        [rcm.draw_region_permutation(keyed_hash.combine_keys(0, 0, i), n, k).numpy() for i in range(count)]
    )
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")

    def displacement(sources):
        return (np.abs(sources[..., 0] - rows) + np.abs(sources[..., 1] - cols)).mean(axis=(1, 2))

    a, b = displacement(device_sources), displacement(pipeline_sources)
    stderr = np.sqrt(a.var() / count + b.var() / count)
    assert abs(a.mean() - b.mean()) < 4 * stderr
