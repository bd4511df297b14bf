"""Backbone registry and weight loading, offline."""

import os
import time

import keras
import numpy as np
import pytest

from dcl_keras import contract
from dcl_keras.errors import UserError
from dcl_keras.models import backbones

pytestmark = pytest.mark.backend_agnostic  # Also run under KERAS_BACKEND=jax.


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="backbone='resnet51'"):
        backbones.build_backbone("resnet51", 64)


@pytest.mark.parametrize("name,channels", [("resnet50", 2048), ("efficientnetv2_s", 1280), ("convnext_tiny", 768)])
def test_application_backbones_give_a_spatial_map(name, channels):
    if keras.backend.backend() == "jax" and name != "resnet50":
        # build_backbone takes the same path for every application; under JAX ResNet-50 checks it, and the
        # two larger builds (about 30 s of the serial JAX group) run under TensorFlow only.
        pytest.skip("built under TensorFlow; ResNet-50 checks the application path under JAX")
    model = backbones.build_backbone(name, 64, weights="none")
    assert model.name == "backbone"
    assert model.output_shape == (None, 2, 2, channels)


def test_vgg16_fully_connected_layers_become_convolutions():
    model = backbones.build_backbone("vgg16", 64, weights="none")
    assert model.output_shape == (None, 2, 2, 4096)
    assert model.get_layer("fc6").kernel.shape == (7, 7, 512, 4096)
    assert model.get_layer("fc7").kernel.shape == (1, 1, 4096, 4096)


def test_local_weights_file_round_trip(tmp_path):
    first = backbones.build_backbone("tiny", 32, width=8)
    path = str(tmp_path / "tiny.weights.h5")
    first.save_weights(path)
    second = backbones.build_backbone("tiny", 32, weights=path, width=8)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(second.predict(x, verbose=0), first.predict(x, verbose=0), atol=1e-6)
    fresh = backbones.build_backbone("tiny", 32, width=8)
    assert not np.allclose(fresh.predict(x, verbose=0), first.predict(x, verbose=0))


def test_tiny_depth_stacks_convolutions_per_stage_and_keeps_the_depth_1_names(tmp_path):
    shallow = backbones.build_backbone("tiny", 32, width=4)
    deep = backbones.build_backbone("tiny", 32, width=4, depth=3)
    convs = lambda m: [layer.name for layer in m.layers if isinstance(layer, keras.layers.Conv2D)]  # noqa: E731
    assert convs(shallow) == ["conv1", "conv2", "conv3", "conv4"]
    assert len(convs(deep)) == 12 and convs(deep)[:3] == ["conv1", "conv1_2", "conv1_3"]
    assert deep.output_shape == shallow.output_shape == (None, 4, 4, 16)  # Stride 8 at any depth.
    assert [deep.get_layer(f"conv1_{j}").strides for j in (2, 3)] == [(1, 1), (1, 1)]
    # A depth-1 weights file (saved before depth existed) still loads into depth 1, and not into depth 2.
    path = str(tmp_path / "tiny.weights.h5")
    shallow.save_weights(path)
    backbones.build_backbone("tiny", 32, weights=path, width=4)
    with pytest.raises(UserError, match="does not fit backbone 'tiny'"):
        backbones.build_backbone("tiny", 32, weights=path, width=4, depth=2)


def test_keras_applications_h5_weights_file(tmp_path):
    """A keras.applications-format (legacy HDF5) weights file, as in the Keras cache, loads by path."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    app = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = str(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, app)
    model = backbones.build_backbone("resnet50", 64, weights=path)
    inner = model.get_layer("resnet50")
    for name in ("conv1_conv", "conv5_block3_3_conv"):
        np.testing.assert_array_equal(inner.get_layer(name).kernel.numpy(), app.get_layer(name).kernel.numpy())


def test_imagenet_uses_the_cached_file_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    os.makedirs(tmp_path / "models")
    cached = tmp_path / "models" / backbones.BACKBONES["resnet50"].imagenet_file
    cached.write_bytes(b"placeholder")
    resolved = backbones.resolve_weights("resnet50", "imagenet", network_check=lambda: False)
    assert resolved == str(cached)


def test_imagenet_offline_without_cache_fails_fast_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5") as err:
        backbones.build_backbone("resnet50", 64, weights="imagenet", network_check=lambda: False)
    assert str(tmp_path / "models") in str(err.value)
    assert time.monotonic() - start < 5


def test_missing_weights_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.weights.h5"):
        backbones.build_backbone("tiny", 32, weights=str(tmp_path / "nothing.weights.h5"))


def test_every_spec_is_registered_under_a_backbone_name_of_the_contract():
    assert sorted(backbones._SPECS) == sorted(contract.BACKBONE_NAMES)


def test_every_backbone_is_built_through_the_registry_with_its_declared_options(tmp_path):
    for name, spec in backbones.BACKBONES.items():
        assert callable(spec.builder), name
        with pytest.raises(ValueError, match=rf"Backbone '{name}' takes the options"):
            backbones.build_backbone(name, 32, bogus=1)
    assert backbones.get_spec("tiny").options == ("width", "norm", "depth")
    model = backbones.build_backbone("tiny", 32, width=4, norm="group")
    assert model.get_layer("conv1").filters == 4 and model.get_layer("gn1")
    h5 = tmp_path / "applications_style.h5"
    h5.write_bytes(b"not used")
    with pytest.raises(UserError, match="tiny backbone loads only `.weights.h5` files"):
        backbones.build_backbone("tiny", 32, weights=str(h5))
