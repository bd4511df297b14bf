"""Backbone registry: images in [0, 255] -> last convolutional feature map.

Every backbone is a functional `keras.Model` named "backbone" whose input is a
float image batch [B, S, S, 3] with pixels in [0, 255]; its own preprocessing
(PixelNormalization, or the application's built-in one) is inside, so the
pipeline, evaluation and the exported classifier all feed raw pixels.

Weights: "imagenet" (the standard Keras cache, ~/.keras/models or
$KERAS_HOME/models, downloaded when a network exists), "none", or a path:
a `*.weights.h5` file saved from this backbone (`backbone.save_weights`), or a
keras.applications `.h5` weights file for that architecture.
"""

import dataclasses
import os
import socket

import keras

from dcl_keras import contract
from dcl_keras.errors import UserError
from dcl_keras.models.layers import PixelNormalization


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """builder(input_shape, weights, **options) -> keras.Model; weights is None or what `weights=` loads."""

    builder: object
    preprocessing: str
    stride: int
    imagenet_file: str | None  # None: no ImageNet weights (only `.weights.h5` files saved from it).
    options: tuple = ()  # Builder options, named as in the config's `model` section.


def _tiny(input_shape, weights, width=32, norm="batch", depth=1):
    """A small CNN of 4 stages and stride 8 for tests and the CPU demo (no pretrained weights).

    `width`: channels of the first stage (then 2x, 4x, 4x). `depth`: 3x3
    convolutions per stage (the first one strided); each stage's receptive
    field grows with it. `norm`: "batch" (BatchNormalization) or "group"
    (GroupNormalization, per-sample, so data-parallel training equals
    single-device training).
    """
    inputs = keras.Input(input_shape, name="images")
    x = PixelNormalization("tf", name="pixel_normalization")(inputs)
    for i, (filters, strides) in enumerate(((width, 2), (2 * width, 2), (4 * width, 2), (4 * width, 1))):
        for j in range(depth):
            # Depth 1 keeps the names of the original 4-layer network, so its weights files still load.
            suffix = f"{i + 1}" if j == 0 else f"{i + 1}_{j + 1}"
            x = keras.layers.Conv2D(
                filters, 3, strides=strides if j == 0 else 1, padding="same", use_bias=False, name=f"conv{suffix}"
            )(x)
            if norm == "batch":
                x = keras.layers.BatchNormalization(name=f"bn{suffix}")(x)
            else:
                x = keras.layers.GroupNormalization(groups=4, name=f"gn{suffix}")(x)
            x = keras.layers.ReLU(name=f"relu{suffix}")(x)
    del weights  # Only its own `.weights.h5` files, loaded by build_backbone.
    return keras.Model(inputs, x, name="backbone")


def _application(app_fn, preprocessing):
    def build(input_shape, weights):
        inputs = keras.Input(input_shape, name="images")
        x = PixelNormalization(preprocessing, name="pixel_normalization")(inputs)
        app = app_fn(include_top=False, weights=weights, input_shape=input_shape)
        return keras.Model(inputs, app(x), name="backbone")

    return build


def _vgg16(input_shape, weights):
    """VGG-16 with fc6/fc7 turned into convolutions (7x7 and 1x1), as in the paper."""
    inputs = keras.Input(input_shape, name="images")
    x = PixelNormalization("caffe", name="pixel_normalization")(inputs)
    convs = keras.applications.VGG16(include_top=False, weights=None, input_shape=input_shape)
    x = convs(x)
    fc6 = keras.layers.Conv2D(4096, 7, padding="same", activation="relu", name="fc6")
    fc7 = keras.layers.Conv2D(4096, 1, activation="relu", name="fc7")
    model = keras.Model(inputs, fc7(fc6(x)), name="backbone")
    if weights is not None:
        full = keras.applications.VGG16(include_top=True, weights=weights)
        for layer in convs.layers:
            if layer.weights:
                layer.set_weights(full.get_layer(layer.name).get_weights())
        kernel, bias = full.get_layer("fc1").get_weights()
        fc6.set_weights([kernel.reshape(7, 7, 512, 4096), bias])
        kernel, bias = full.get_layer("fc2").get_weights()
        fc7.set_weights([kernel.reshape(1, 1, 4096, 4096), bias])
    return model


_SPECS = {
    "tiny": BackboneSpec(_tiny, "tf", 8, None, options=("width", "norm", "depth")),
    "resnet50": BackboneSpec(
        _application(keras.applications.ResNet50, "caffe"),
        "caffe",
        32,
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg16": BackboneSpec(_vgg16, "caffe", 32, "vgg16_weights_tf_dim_ordering_tf_kernels.h5"),
    "efficientnetv2_s": BackboneSpec(
        _application(keras.applications.EfficientNetV2S, "none"), "none", 32, "efficientnetv2-s_notop.h5"
    ),
    "convnext_tiny": BackboneSpec(
        _application(keras.applications.ConvNeXtTiny, "none"), "none", 32, "convnext_tiny_notop.h5"
    ),
}

# The registry has the config's choices (contract.BACKBONE_NAMES, checked without importing Keras), in their order:
# a name without a spec fails on import, a spec without a name in tests/models/test_backbones.py.
BACKBONES = {name: _SPECS[name] for name in contract.BACKBONE_NAMES}


def keras_cache_dir():
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")


def network_available(host="storage.googleapis.com", port=443, timeout=3.0):
    """True when the host that serves keras.applications weights answers quickly."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_weights(name, weights, network_check=network_available):
    """Turns the `weights` setting into what keras.applications takes.

    Returns None (random init), a local file path, or "imagenet" (download).
    Raises FileNotFoundError within seconds when ImageNet weights are neither
    cached nor downloadable, naming the file to place and where.
    """
    spec = get_spec(name)
    if weights in (None, "none", "None", ""):
        return None
    if weights == "imagenet":
        if spec.imagenet_file is None:
            raise UserError(f"Backbone {name!r} has no ImageNet weights. Received: weights='imagenet'")
        cached = os.path.join(keras_cache_dir(), spec.imagenet_file)
        if os.path.isfile(cached):
            return cached
        if network_check():
            return "imagenet"
        raise FileNotFoundError(
            f"ImageNet weights for {name!r} are not cached and the network is unreachable. "
            f"Place {spec.imagenet_file!r} in {keras_cache_dir()!r} (the Keras cache; set KERAS_HOME to "
            f"move it), or set model.weights='none' or a local weights file path."
        )
    path = os.path.expanduser(str(weights))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Backbone weights file not found: expected 'imagenet', 'none' or an existing file. "
            f"Received: weights={weights!r}"
        )
    return path


def get_spec(name):
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone. Expected one of {sorted(BACKBONES)}. Received: backbone={name!r}")
    return BACKBONES[name]


def build_backbone(name, image_size, weights="none", network_check=network_available, **options):
    """Builds a registered backbone for square images of side `image_size`.

    Args:
        name: a key of BACKBONES ("resnet50", "vgg16", "efficientnetv2_s",
            "convnext_tiny", "tiny").
        image_size: int, input side in pixels.
        weights: "imagenet", "none" or a path (see the module docstring).
        **options: the builder's options (`BackboneSpec.options`; the tiny
            backbone takes `width`, `norm` and `depth`).

    Returns:
        A functional keras.Model named "backbone".
    """
    spec = get_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"Backbone {name!r} takes the options {list(spec.options)}. Received: {unknown}")
    input_shape = (image_size, image_size, 3)
    resolved = resolve_weights(name, weights, network_check)
    own_weights_file = isinstance(resolved, str) and resolved.endswith(".weights.h5")
    if spec.imagenet_file is None and resolved is not None and not own_weights_file:
        raise UserError(
            f"The {name} backbone loads only `.weights.h5` files saved from it. Received: weights={weights!r}"
        )
    model = spec.builder(input_shape, None if own_weights_file else resolved, **options)
    if own_weights_file:
        try:
            model.load_weights(resolved)
        except ValueError as e:  # Keras: a layer count or shape that does not match this backbone.
            raise UserError(
                f"The weights file does not fit backbone {name!r} at {image_size} px: {str(e)[:300]}. "
                f"Received: weights={weights!r}"
            ) from None
    return model
