"""Exports the classifier branch of a trained DCL model: a SavedModel for TF Serving, TFLite or ONNX.

    bin/export --workdir=workdirs/demo --export_dir=exports/demo
    bin/export --model=runs/cub/model.keras --export_dir=/models/cub --version=3
    bin/export --workdir=workdirs/demo --format=tflite --quantization=int8

    bin/export --workdir=workdirs/demo --format=onnx

SavedModel: writes <export_dir>/<version>/ (default version: the next free
integer) with the signatures serving_default (image bytes), serve_pixels
(arrays), serve_crops (preprocessed crops, the one tf2onnx converts), classify
(tf.Example, TF Serving's Classify API) and serve_embeddings (image bytes ->
unit-length pooled features), and TF Serving's warm-up requests. TFLite
(float32, float16, or int8 calibrated on training images) or ONNX (tf2onnx):
writes --output (default <workdir>/<format>/classifier[_<quantization>].<format>),
runs it and the Keras model on the same test images, prints their top-1
agreement and largest logit difference, and saves them next to it (.json).
"""

import json
import os

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402

from dcl_keras import workdir as run_folder  # noqa: E402
from dcl_keras.errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "The bin/train workdir (its model.keras is exported).")
_MODEL = flags.DEFINE_string("model", None, "A .keras model; default <workdir>/model.keras.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Base folder; default <workdir>/export.")
_VERSION = flags.DEFINE_integer("version", None, "Integer version folder; default the next free one.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "How many top classes the signatures return.")
_FORMAT = flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite", "onnx"], "What to write.")
_QUANTIZATION = flags.DEFINE_enum(
    "quantization", "float32", ["float32", "float16", "int8"], "tflite: weights (and int8: activations) precision."
)
_OUTPUT = flags.DEFINE_string("output", None, "tflite, onnx: the file to write (default under <workdir>/<format>).")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 64, "tflite, onnx: test images to check (and to calibrate int8).")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")


def main(argv):
    del argv
    if not (_WORKDIR.value or _MODEL.value):
        raise UserError("Give --workdir or --model. Received: neither")
    fmt = _FORMAT.value
    ignored = [
        flag
        for flag, given in (
            ("--version", _VERSION.value is not None and fmt != "saved_model"),
            ("--export_dir", _EXPORT_DIR.value is not None and fmt != "saved_model"),
            ("--output", _OUTPUT.value is not None and fmt == "saved_model"),
            ("--quantization", _QUANTIZATION.value != "float32" and fmt != "tflite"),
        )
        if given
    ]
    if ignored:
        raise UserError(f"{', '.join(ignored)} does not apply to --format={fmt}. Received: {', '.join(ignored)}")
    if fmt != "saved_model":
        if not _WORKDIR.value:
            raise UserError(f"--format={fmt} needs --workdir (its data checks the converted model). Received: none")
        if _NUM_IMAGES.value < 1:  # Checked before TensorFlow loads, so that a mistyped flag costs no wait.
            raise UserError(
                f"--num_images: expected an integer >= 1 (test images to compare on). Received: {_NUM_IMAGES.value}"
            )
        from dcl_keras import export_formats

        name = f"classifier_{_QUANTIZATION.value}.tflite" if fmt == "tflite" else "classifier.onnx"
        output = _OUTPUT.value or os.path.join(_WORKDIR.value, fmt, name)
        report = export_formats.export_converted_file(
            run_folder.model_file(_WORKDIR.value, _MODEL.value),
            output,
            fmt=fmt,
            workdir=_WORKDIR.value,
            quantization=_QUANTIZATION.value,
            num_images=_NUM_IMAGES.value,
        )
        with open(os.path.splitext(output)[0] + ".json", "w") as f:
            json.dump(report, f, indent=2)
        print(f"{fmt} ({report['quantization']}, {report['size_bytes']} bytes): {report['path']}")
        print(
            f"against the Keras model on {report['images']} test images: top-1 agreement "
            f"{report['top1_agreement']:.4f}, largest logit difference {report['max_abs_logit_difference']:.2e} "
            f"({report['max_rel_logit_difference']:.2e} of the largest logit)"
        )
        return
    from dcl_keras import export

    export_dir = run_folder.export_dir(_WORKDIR.value or ".", _EXPORT_DIR.value)
    path = export.export_model_file(
        run_folder.model_file(_WORKDIR.value, _MODEL.value), export_dir, top_k=_TOP_K.value, version=_VERSION.value
    )
    print(f"export: {path}")


def run():
    """The `dcl-export` console command (bin/export)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
