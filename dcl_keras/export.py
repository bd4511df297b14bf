"""Export of the classifier branch alone: a SavedModel for TF Serving (TensorFlow).

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
* `serve_crops`: `crops`, float32 [None, S, S, 3], RGB in [0, 255], already
  resized and centre-cropped (no resize in the graph: the one tf2onnx
  converts to a model ONNX Runtime runs);
* `classify`: `inputs`, tf.string [None], serialized `tf.Example`s with the
  image bytes under `image/encoded` (TF Serving's Classify API: method name
  `tensorflow/serving/classify`, outputs `classes` and `scores`);
* `serve_embeddings`: `images` as `serving_default`; output `embeddings`,
  float32 [None, D], the unit-length pooled feature (`dcl.embedding_model`).

`serving_default`, `serve_pixels` and `serve_crops` return `logits`,
`probabilities`, `top_k_indices`, `top_k_scores` and, when class names are
known, `top_k_names`. `assets.extra/tf_serving_warmup_requests` holds two
`serving_default` requests, which TF Serving runs when it loads the version,
so the first user request does not pay for the graph's warm-up.

TFLite and ONNX files are `export_formats`'s.
"""

import json
import logging
import os
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from dcl_keras import checkpointing, contract, saving
from dcl_keras import workdir as run_folder
from dcl_keras.data import augment, pipeline, specs
from dcl_keras.errors import UserError
from dcl_keras.models import dcl

EXAMPLE_IMAGE_KEY = "image/encoded"  # The tf.Example feature of the classify signature.
CLASSIFY_METHOD = "tensorflow/serving/classify"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_BATCH_SIZES = (1, 8)
DECODE_PARALLELISM = 16
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


def decode_images(images, spec):
    """Encoded images [B] -> crops [B, S, S, 3] as `spec` (an `EvalSpec`) makes them, on the CPU in parallel."""
    with tf.device("/CPU:0"):
        return tf.map_fn(
            lambda data: augment.eval_preprocess(
                pipeline.decode_image(data), spec.resize_size, spec.image_size, spec.resampling
            ),
            images,
            fn_output_signature=tf.TensorSpec([spec.image_size, spec.image_size, 3], tf.float32),
            parallel_iterations=DECODE_PARALLELISM,
        )


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

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(images):
        return serve(decode_images(images, spec))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def serve_pixels(pixels):
        return serve(augment.eval_preprocess(pixels, spec.resize_size, image_size, spec.resampling))

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="crops")])
    def serve_crops(crops):
        return serve(crops)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def serve_examples(inputs):
        features = tf.io.parse_example(inputs, {EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        result = serve(decode_images(features[EXAMPLE_IMAGE_KEY], spec))
        return {"classes": tf.gather(names, result["top_k_indices"]), "scores": result["top_k_scores"]}

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint("serving_default", serve_encoded)
    archive.add_endpoint("serve_pixels", serve_pixels)
    archive.add_endpoint("serve_crops", serve_crops)
    archive.add_endpoint("classify", serve_examples)
    if any(layer.name == contract.POOLED_LAYER for layer in classifier.layers):
        embedding = dcl.embedding_model(classifier)  # The classifier's own weights: nothing more is tracked.

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve_embeddings(images):
            return {"embeddings": embedding(decode_images(images, spec), training=False)}

        archive.add_endpoint("serve_embeddings", serve_embeddings)
    else:  # A model built elsewhere: no feature of the DCL contract to serve.
        logging.warning("No %r layer in %s: the export has no serve_embeddings.", contract.POOLED_LAYER, model.name)
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


def in_tensorflow(function, **kwargs):
    """Runs `function` (a module-level function, JSON-able arguments and result) under the TensorFlow backend.

    The export is always a plain TensorFlow graph: under the TensorFlow backend
    it runs here; under another backend (JAX) the model file is reloaded in a
    child process with KERAS_BACKEND=tensorflow (`python -m <its module>`,
    whose `__main__` calls `child_main`). That keeps the SavedModel free of
    jax2tf's XlaCallModule op, so any TF Serving release loads it.
    """
    if keras.backend.backend() == "tensorflow":
        return function(**kwargs)
    import subprocess

    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    args = [sys.executable, "-m", function.__module__, function.__name__, json.dumps(kwargs)]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode == STORAGE_ERROR_EXIT:
        raise checkpointing.StorageError(done.stderr.strip().splitlines()[-1])
    if done.returncode == USER_ERROR_EXIT:  # The child's one-line message about the user's input.
        raise UserError(done.stderr.strip().splitlines()[-1])
    if done.returncode:
        raise RuntimeError(f"Export under the TensorFlow backend failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(functions):
    """The child process of `in_tensorflow`: runs `functions[argv[1]](**JSON argv[2])`, prints the JSON result.

    An error in the user's input exits with USER_ERROR_EXIT (a full disk with
    STORAGE_ERROR_EXIT) after printing its one line, which the parent re-raises.
    """
    try:
        print(json.dumps(functions[sys.argv[1]](**json.loads(sys.argv[2]))))
    except (UserError, FileNotFoundError, FileExistsError) as e:
        print(e, file=sys.stderr)
        sys.exit(STORAGE_ERROR_EXIT if isinstance(e, checkpointing.StorageError) else USER_ERROR_EXIT)


def _saved_model_from_file(model_path, export_dir, top_k=5, version=None):
    return export_classifier(saving.load_model(model_path), export_dir, top_k=top_k, version=version)


def export_model_file(model_path, export_dir, *, top_k=5, version=None, model=None):
    """Exports the classifier of a `.keras` DCL model file for TF Serving; returns the version folder.

    `model`, when given, is that file already loaded: the TensorFlow backend
    exports it without reading the file again.
    """
    if model is not None and keras.backend.backend() == "tensorflow":
        return export_classifier(model, export_dir, top_k=top_k, version=version)
    return in_tensorflow(
        _saved_model_from_file, model_path=model_path, export_dir=export_dir, top_k=top_k, version=version
    )


def require_signature(signatures, name, export_path):
    """`signatures[name]` of a loaded export; a one-line UserError naming the fix when an older export lacks it."""
    if name not in signatures:
        raise UserError(
            f"The export {export_path} has no {name!r} signature (written by an older dcl_keras): re-export it with "
            f"bin/export --model=<its .keras model> --export_dir={os.path.dirname(os.path.normpath(export_path))}. "
            f"Received: signatures {sorted(signatures)}"
        )
    return signatures[name]


if __name__ == "__main__":
    child_main(globals())
