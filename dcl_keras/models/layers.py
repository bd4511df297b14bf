"""Backend-agnostic layers used by the backbones and the DCL heads."""

import keras
from keras import ops


def _pooling_matrix(size, bins):
    """[bins, size] averaging weights: bin i covers [floor(i*size/bins), ceil((i+1)*size/bins))."""
    rows = []
    for i in range(bins):
        start = (i * size) // bins
        end = -((-(i + 1) * size) // bins)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return rows


@keras.saving.register_keras_serializable(package="dcl_keras")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average-pools a [B, H, W, C] map to [B, N, N, C] for any H, W (as PyTorch's adaptive pool).

    Bins overlap by at most one row or column when H or W is not a multiple of
    N, so every N works with every feature-map size.

    Args:
        output_size: int, N.
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(output_size, int) or output_size < 1:
            raise ValueError(f"`output_size` must be an int >= 1. Received: output_size={output_size!r}")
        self.output_size = output_size

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                f"AdaptiveAveragePooling2D needs a static spatial size. Received: input_shape={input_shape}"
            )
        self._rows = _pooling_matrix(height, self.output_size)
        self._cols = _pooling_matrix(width, self.output_size)

    def call(self, inputs):
        rows = ops.convert_to_tensor(self._rows, dtype=inputs.dtype)
        cols = ops.convert_to_tensor(self._cols, dtype=inputs.dtype)
        return ops.einsum("nh,bhwc,mw->bnmc", rows, inputs, cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


PREPROCESSING_MODES = ("caffe", "torch", "tf", "none")


@keras.saving.register_keras_serializable(package="dcl_keras")
class PixelNormalization(keras.layers.Layer):
    """Maps [0, 255] RGB pixels to what a backbone expects.

    Modes follow keras.applications: "caffe" (BGR, ImageNet mean subtracted,
    ResNet-50 and VGG-16), "torch" (RGB scaled to [0, 1], ImageNet mean and
    std), "tf" (scaled to [-1, 1]), "none" (the backbone does it itself).

    Args:
        mode: one of PREPROCESSING_MODES.
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"`mode` must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor([0.485, 0.456, 0.406], dtype=x.dtype)
            std = ops.convert_to_tensor([0.229, 0.224, 0.225], dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
