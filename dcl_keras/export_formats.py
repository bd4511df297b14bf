"""The classifier as a TFLite or ONNX file, checked against the Keras model (TensorFlow).

TFLite (float32, float16, int8) and ONNX models take preprocessed crops
[batch, S, S, 3] in [0, 255] (resized and centre-cropped as
`augment.eval_preprocess` does) and return logits; `export_converted_file`
runs each next to the Keras model on the same test images and reports the
top-1 agreement and the largest logit difference. (A SavedModel from
`export.export_classifier` converts too: its `serve_crops` signature, with
`python -m tf2onnx.convert --signature_def serve_crops`.)
"""

import importlib.util
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from dcl_keras import checkpointing, export, saving
from dcl_keras import workdir as run_folder
from dcl_keras.data import specs
from dcl_keras.errors import UserError
from dcl_keras.models import dcl

TFLITE_QUANTIZATIONS = ("float32", "float16", "int8")
ONNX_OPSET = 17


def _write_atomically(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        run_folder.write_file(path, write)
    except OSError as e:
        raise checkpointing.storage_error(
            f"the converted model {path}", e, "the model it came from", export.RETRY
        ) from None
    return path


def _convert_from_saved_model(model, batch_size, convert):
    """`convert(saved_model_dir)` over a temporary SavedModel of the classifier: crops -> logits.

    Written by Keras's ExportArchive, which tracks every variable (a converter
    given the concrete function directly left some unfrozen, and the TFLite
    model returned NaN).
    """
    classifier, spec = export.classifier_and_spec(model)
    image_size = spec.image_size
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(
        "serving_default",
        lambda pixels: {"logits": tf.cast(classifier(pixels, training=False), tf.float32)},
        input_signature=[tf.TensorSpec([batch_size, image_size, image_size, 3], tf.float32, name="pixels")],
    )
    saved_model = tempfile.mkdtemp(prefix="dcl-convert-")
    try:
        archive.write_out(saved_model, verbose=False)
        return convert(saved_model)
    finally:
        shutil.rmtree(saved_model, ignore_errors=True)


def export_tflite(model, path, *, quantization="float32", representative_images=None):
    """Converts the classifier to a TFLite model file; returns its path.

    The TFLite model takes preprocessed crops, float32 [1, S, S, 3] in [0, 255]
    (resize and centre-crop on the device, as `augment.eval_preprocess` does),
    and returns the logits. `quantization`: "float32", "float16" (weights), or
    "int8" (post-training quantization of weights and activations, calibrated
    on `representative_images`, crops from the training data; float input and
    output).
    """
    if quantization not in TFLITE_QUANTIZATIONS:
        raise UserError(f"TFLite quantization must be one of {TFLITE_QUANTIZATIONS}. Received: {quantization!r}")
    if quantization == "int8" and (representative_images is None or not len(representative_images)):
        raise UserError("int8 quantization needs representative training images. Received: none")

    def convert(saved_model):
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in representative_images)
        return converter.convert()

    return _write_atomically(path, _convert_from_saved_model(model, 1, convert))


def tflite_logits(path, images):
    """Logits of a TFLite model file (from `export_tflite`) for crops [B, S, S, 3], one image at a time."""
    import warnings

    with warnings.catch_warnings():  # tf.lite.Interpreter's notice that LiteRT (ai-edge-litert) replaces it.
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in images:
        interpreter.set_tensor(inp["index"], np.asarray(image, np.float32)[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def export_onnx(model, path, *, opset=ONNX_OPSET):
    """Converts the classifier to ONNX with tf2onnx; returns the path.

    Input `pixels`: preprocessed crops, float32 [batch, S, S, 3] in [0, 255];
    output `logits`. Needs the `tf2onnx` package (requirements.txt pins it).
    """
    import subprocess
    import sys

    def convert(saved_model):
        tmp = path + ".tmp"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tf2onnx.convert",
                "--saved-model",
                saved_model,
                "--output",
                tmp,
                f"--opset={opset}",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"tf2onnx failed to convert the classifier:\n{done.stderr[-3000:]}")
        with open(tmp, "rb") as f:
            data = f.read()
        os.remove(tmp)
        return data

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return _write_atomically(path, _convert_from_saved_model(model, None, convert))


def onnx_logits(path, images):
    """Logits of an ONNX model file (from `export_onnx`) for crops [B, S, S, 3], with ONNX Runtime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"pixels": np.asarray(images, np.float32)})[0]


def agreement(reference_logits, logits):
    """How a converted model's logits match the Keras model's on the same images."""
    reference_logits, logits = np.asarray(reference_logits, np.float64), np.asarray(logits, np.float64)
    difference = np.abs(reference_logits - logits)
    return {
        "images": int(len(logits)),
        "top1_agreement": float(np.mean(np.argmax(reference_logits, -1) == np.argmax(logits, -1))),
        "max_abs_logit_difference": float(difference.max()),
        "max_rel_logit_difference": float(difference.max() / max(np.abs(reference_logits).max(), 1e-12)),
    }


def _converted_from_file(model_path, output, fmt, quantization, workdir, num_images):
    from dcl_keras.data import datasets

    model = saving.load_model(model_path)
    config = run_folder.load_config(workdir)
    splits = datasets.load_splits(config.data)

    def crops(split):
        return datasets.spread_crops(split, specs.EvalSpec.from_config(config), num_images)[0]

    if fmt == "tflite":
        representative = crops(splits.train) if quantization == "int8" else None
        export_tflite(model, output, quantization=quantization, representative_images=representative)
        run = tflite_logits
    else:
        export_onnx(model, output)
        run = onnx_logits
    test = crops(splits.test)
    reference = dcl.classifier_model(model).predict(test, batch_size=32, verbose=0)
    report = {"path": output, "format": fmt, "quantization": quantization, **agreement(reference, run(output, test))}
    report["size_bytes"] = os.path.getsize(output)
    return report


def export_converted_file(model_path, output, *, fmt, workdir, quantization="float32", num_images=64):
    """Converts a `.keras` model's classifier to TFLite or ONNX and checks it against the Keras model.

    `workdir` (bin/train's) gives the data: TFLite int8 calibrates on
    `num_images` training crops, and the converted model is compared with the
    Keras model on `num_images` test crops. Returns the `agreement` figures
    with the path, format and size.
    """
    if fmt not in ("tflite", "onnx"):
        raise UserError(f"Expected the format tflite or onnx. Received: {fmt!r}")
    if not isinstance(num_images, int) or num_images < 1:
        raise UserError(f"--num_images: expected an integer >= 1 (test images to compare on). Received: {num_images!r}")
    missing = [p for p in (("tf2onnx", "onnxruntime") if fmt == "onnx" else ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"--format=onnx needs {missing}: pip install 'dcl-keras[onnx]'. Received: not installed")
    if quantization not in TFLITE_QUANTIZATIONS or (fmt == "onnx" and quantization != "float32"):
        raise UserError(
            f"--quantization: tflite takes {TFLITE_QUANTIZATIONS}, onnx float32. Received: {quantization!r}"
        )
    return export.in_tensorflow(
        _converted_from_file,
        model_path=model_path,
        output=os.path.abspath(output),
        fmt=fmt,
        quantization=quantization,
        workdir=workdir,
        num_images=num_images,
    )


if __name__ == "__main__":
    export.child_main(globals())
