"""Export of the classifier branch alone: a SavedModel for TF Serving, TFLite or ONNX (TensorFlow).

The export holds the backbone and the classification head, nothing of the
destruction discriminator or the region alignment head: inference costs
exactly what the plain backbone costs. It is written to
`<export_dir>/<integer version>/`, the layout TF Serving watches, atomically
(a temporary folder renamed), so a server never loads a half-written version.

One serve function (classifier, softmax, top-k) behind one signature per
input kind; decoding and preprocessing happen inside, identical to evaluation
(resize to `resize_size`, centre crop `image_size`), and decoding is pinned to
the CPU with a parallel map:

* `serving_default`: `images`, tf.string [None], encoded JPEG/PNG/BMP/GIF
  bytes of any size (TF Serving's REST API sends them base64-encoded as
  `{"b64": ...}`);
* `serve_pixels`: `pixels`, float32 [None, None, None, 3], RGB in [0, 255];
* `classify`: `inputs`, tf.string [None], serialized `tf.Example`s with the
  image bytes under `image/encoded` (TF Serving's Classify API: method name
  `tensorflow/serving/classify`, outputs `classes` and `scores`).

The first two return `logits`, `probabilities`, `top_k_indices`,
`top_k_scores` and, when class names are known, `top_k_names`.
`assets.extra/tf_serving_warmup_requests` holds two `serving_default`
requests, which TF Serving runs when it loads the version, so the first user
request does not pay for the graph's warm-up.

TFLite (float32, float16, int8) and ONNX models take preprocessed crops
[batch, S, S, 3] in [0, 255] and return logits; `export_converted_file` runs
each next to the Keras model on the same test images and reports the top-1
agreement and the largest logit difference.
"""

import importlib.util
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from dcl_keras import checkpointing, saving
from dcl_keras import workdir as run_folder
from dcl_keras.data import augment, pipeline, specs
from dcl_keras.errors import UserError
from dcl_keras.models import dcl

EXAMPLE_IMAGE_KEY = "image/encoded"  # The tf.Example feature of the classify signature.
CLASSIFY_METHOD = "tensorflow/serving/classify"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_BATCH_SIZES = (1, 8)
DECODE_PARALLELISM = 16
TFLITE_QUANTIZATIONS = ("float32", "float16", "int8")
ONNX_OPSET = 17
USER_ERROR_EXIT = 2  # Exit status of the TensorFlow child process for an error in the user's input.
STORAGE_ERROR_EXIT = 3  # ... and for a file it could not write (re-raised as checkpointing.StorageError).
# What a write to a full, read-only or lost disk raises: Python's OSError, or TensorFlow's file system errors
# (a SavedModel and TFRecords are written by TensorFlow's C++ file system). Not NotFoundError: a file that
# could not be read (an asset, a variable) is no write error.
WRITE_ERRORS = (
    OSError,
    tf.errors.ResourceExhaustedError,
    tf.errors.PermissionDeniedError,
    tf.errors.UnavailableError,
    tf.errors.DataLossError,
)
RETRY = "free space (or fix the mount or permissions), then rerun the export"


def next_version(export_dir):
    versions = [int(d) for d in os.listdir(export_dir) if d.isdigit()] if os.path.isdir(export_dir) else []
    return max(versions, default=0) + 1


def classifier_and_spec(model, resize_size=None):
    """(classifier, `specs.EvalSpec`) of a DCLModel or a plain classifier: what serves, and how its input is made.

    The spec is the one the model carries (`EvalSpec.from_model`); `resize_size` overrides its resize side.
    """
    classifier = dcl.classifier_model(model) if isinstance(model, dcl.DCLModel) else model
    return classifier, specs.EvalSpec.from_model(model, resize_size)


def export_classifier(model, export_dir, *, top_k=5, version=None, class_names=None, resize_size=None):
    """Writes the classifier of a DCLModel as `<export_dir>/<version>/`; returns that path.

    Args:
        model: a DCLModel (its class names and resize size are used unless
            given here).
        export_dir: str, the model's base folder for TF Serving.
        top_k: int, how many top classes the signatures return.
        version: int or None (next free integer).
        class_names, resize_size: override what the model carries.
    """
    class_names = class_names or getattr(model, "class_names", None)
    classifier, spec = classifier_and_spec(model, resize_size)
    image_size = spec.image_size
    num_classes = int(classifier.output_shape[-1])
    k = min(top_k, num_classes)
    names = tf.constant(class_names or [str(i) for i in range(num_classes)])

    def serve(pixels):
        """The one serve function: preprocessed crops [B, S, S, 3] -> logits, probabilities, top-k."""
        logits = tf.cast(classifier(pixels, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        scores, indices = tf.math.top_k(probabilities, k=k)
        result = {"logits": logits, "probabilities": probabilities, "top_k_indices": indices, "top_k_scores": scores}
        if class_names:
            result["top_k_names"] = tf.gather(names, indices)
        return result

    def decode(images):
        """Encoded images [B] -> crops [B, S, S, 3], decoded on the CPU in parallel."""
        with tf.device("/CPU:0"):
            return tf.map_fn(
                lambda data: augment.eval_preprocess(
                    pipeline.decode_image(data), spec.resize_size, image_size, spec.resampling
                ),
                images,
                fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
                parallel_iterations=DECODE_PARALLELISM,
            )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(images):
        return serve(decode(images))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def serve_pixels(pixels):
        return serve(augment.eval_preprocess(pixels, spec.resize_size, image_size, spec.resampling))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def serve_examples(inputs):
        features = tf.io.parse_example(inputs, {EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        result = serve(decode(features[EXAMPLE_IMAGE_KEY]))
        return {"classes": tf.gather(names, result["top_k_indices"]), "scores": result["top_k_scores"]}

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint("serving_default", serve_encoded)
    archive.add_endpoint("serve_pixels", serve_pixels)
    archive.add_endpoint("classify", serve_examples)
    return _write_version(archive, export_dir, version, spec.resize_size)


def _write_version(archive, export_dir, version, resize_size):
    """Writes `archive` as `<export_dir>/<version>/` through a temporary folder; returns that path.

    A full, read-only or lost disk is a one-line StorageError, and the
    temporary folder is removed: a server never sees a part of a version.
    """
    try:
        os.makedirs(export_dir, exist_ok=True)
    except OSError as e:
        raise checkpointing.storage_error(f"the export folder {export_dir}", e, "the model", RETRY) from None
    version = int(version or next_version(export_dir))
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"Export version folder already exists: {target}. Received: version={version}")
    try:
        # A hidden folder: TF Serving loads only integer-named versions, and never this one half-written.
        with run_folder.atomic_path(target, tmp=tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)) as tmp:
            archive.write_out(tmp, verbose=False)
            _set_method_name(tmp, "classify", CLASSIFY_METHOD)
            write_warmup_requests(tmp, resize_size)
    except WRITE_ERRORS as e:
        raise checkpointing.storage_error(
            f"the export {target}", e, f"every earlier version in {export_dir}", RETRY
        ) from None
    return target


def image_example(data):
    """A serialized tf.Example holding encoded image bytes, as the `classify` signature reads it."""
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    return tf.train.Example(features=tf.train.Features(feature={EXAMPLE_IMAGE_KEY: feature})).SerializeToString()


def _set_method_name(saved_model_dir, signature, method_name):
    """Sets a signature's method name in saved_model.pb (TF2 saves every signature as "predict")."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(saved_model_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    for meta_graph in proto.meta_graphs:
        meta_graph.signature_def[signature].method_name = method_name
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    try:  # The fingerprint holds a checksum of saved_model.pb: recompute it (a private TF module).
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(saved_model_dir)
    except (ImportError, AttributeError):  # Without it, drop the stale fingerprint (it is optional).
        fingerprint = os.path.join(saved_model_dir, "fingerprint.pb")
        if os.path.exists(fingerprint):
            os.remove(fingerprint)


def _field(number, payload):
    """One length-delimited protobuf field (wire type 2)."""

    def varint(value):
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def predict_log(inputs, signature_name="serving_default"):
    """A serialized tensorflow.serving.PredictionLog holding one PredictRequest.

    Written field by field (PredictionLog.predict_log = 6, PredictLog.request = 1,
    PredictRequest.model_spec = 1 and inputs = 2, ModelSpec.signature_name = 3),
    so that the export needs no tensorflow-serving-api package.
    """
    entries = b"".join(
        _field(2, _field(1, name.encode()) + _field(2, tf.make_tensor_proto(value).SerializeToString()))
        for name, value in inputs.items()
    )
    request = _field(1, _field(3, signature_name.encode())) + entries
    return _field(6, _field(1, request))


def write_warmup_requests(saved_model_dir, image_side):
    """Writes assets.extra/tf_serving_warmup_requests: serving_default on JPEGs of the resize side."""
    rows = np.linspace(0, 255, image_side, dtype=np.float32)
    image = np.stack(
        [np.add.outer(rows, rows[::-1]) / 2, np.add.outer(rows[::-1], rows) / 2, np.tile(rows, (image_side, 1))], -1
    )
    jpeg = tf.io.encode_jpeg(tf.constant(image.astype(np.uint8))).numpy()
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for batch in WARMUP_BATCH_SIZES:
            writer.write(predict_log({"images": np.array([jpeg] * batch, dtype=object)}))
    return path


def _write_atomically(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        run_folder.write_file(path, write)
    except OSError as e:
        raise checkpointing.storage_error(f"the converted model {path}", e, "the model it came from", RETRY) from None
    return path


def _convert_from_saved_model(model, batch_size, convert):
    """`convert(saved_model_dir)` over a temporary SavedModel of the classifier: crops -> logits.

    Written by Keras's ExportArchive, which tracks every variable (a converter
    given the concrete function directly left some unfrozen, and the TFLite
    model returned NaN).
    """
    classifier, spec = classifier_and_spec(model)
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


def _in_tensorflow(function, **kwargs):
    """Runs `function` (a name in this module, JSON-able arguments and result) under the TensorFlow backend.

    The export is always a plain TensorFlow graph: under the TensorFlow backend
    it runs here; under another backend (JAX) the model file is reloaded in a
    child process with KERAS_BACKEND=tensorflow. That keeps the SavedModel free
    of jax2tf's XlaCallModule op, so any TF Serving release loads it.
    """
    if keras.backend.backend() == "tensorflow":
        return globals()[function](**kwargs)
    import json
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    args = [sys.executable, "-m", "dcl_keras.export", function, json.dumps(kwargs)]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode == STORAGE_ERROR_EXIT:
        raise checkpointing.StorageError(done.stderr.strip().splitlines()[-1])
    if done.returncode == USER_ERROR_EXIT:  # The child's one-line message about the user's input.
        raise UserError(done.stderr.strip().splitlines()[-1])
    if done.returncode:
        raise RuntimeError(f"Export under the TensorFlow backend failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _saved_model_from_file(model_path, export_dir, top_k=5, version=None):
    return export_classifier(saving.load_model(model_path), export_dir, top_k=top_k, version=version)


def export_model_file(model_path, export_dir, *, top_k=5, version=None, model=None):
    """Exports the classifier of a `.keras` DCL model file for TF Serving; returns the version folder.

    `model`, when given, is that file already loaded: the TensorFlow backend
    exports it without reading the file again.
    """
    if model is not None and keras.backend.backend() == "tensorflow":
        return export_classifier(model, export_dir, top_k=top_k, version=version)
    return _in_tensorflow(
        "_saved_model_from_file", model_path=model_path, export_dir=export_dir, top_k=top_k, version=version
    )


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
    return _in_tensorflow(
        "_converted_from_file",
        model_path=model_path,
        output=os.path.abspath(output),
        fmt=fmt,
        quantization=quantization,
        workdir=workdir,
        num_images=num_images,
    )


if __name__ == "__main__":
    import json
    import sys

    try:
        print(json.dumps(globals()[sys.argv[1]](**json.loads(sys.argv[2]))))
    except (UserError, FileNotFoundError, FileExistsError) as e:  # The parent re-raises it as a UserError.
        print(e, file=sys.stderr)
        sys.exit(STORAGE_ERROR_EXIT if isinstance(e, checkpointing.StorageError) else USER_ERROR_EXIT)
