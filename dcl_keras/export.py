"""Export of the classifier branch alone as a SavedModel for TF Serving (TensorFlow).

The export holds the backbone and the classification head, nothing of the
destruction discriminator or the region alignment head: inference costs
exactly what the plain backbone costs. It is written to
`<export_dir>/<integer version>/`, the layout TF Serving watches, atomically
(a temporary folder renamed), so a server never loads a half-written version.

Signatures (decoding and preprocessing happen inside, identical to evaluation:
resize to `resize_size`, center crop `image_size`):

* `serving_default`: `images`, tf.string [None], encoded JPEG/PNG/BMP/GIF
  bytes of any size (TF Serving's REST API sends them base64-encoded as
  `{"b64": ...}`).
* `serve_pixels`: `pixels`, float32 [None, None, None, 3], RGB in [0, 255].

Both return `logits`, `probabilities`, `top_k_indices`, `top_k_scores` and,
when class names are known, `top_k_names`.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from dcl_keras import saving
from dcl_keras.data import augment, pipeline
from dcl_keras.models import dcl


def next_version(export_dir):
    versions = [int(d) for d in os.listdir(export_dir) if d.isdigit()] if os.path.isdir(export_dir) else []
    return max(versions, default=0) + 1


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
    image_size = int(model.input_shape[1])
    resize_size = int(resize_size or getattr(model, "resize_size", None) or image_size)
    classifier = dcl.classifier_model(model) if isinstance(model, dcl.DCLModel) else model
    num_classes = int(classifier.output_shape[-1])
    k = min(top_k, num_classes)
    names = tf.constant(class_names) if class_names else None

    def outputs(pixels):
        logits = tf.cast(classifier(pixels, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        scores, indices = tf.math.top_k(probabilities, k=k)
        result = {
            "logits": logits,
            "probabilities": probabilities,
            "top_k_indices": indices,
            "top_k_scores": scores,
        }
        if names is not None:
            result["top_k_names"] = tf.gather(names, indices)
        return result

    def preprocess_encoded(data):
        return augment.eval_preprocess(pipeline.decode_image(data), resize_size, image_size)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(images):
        pixels = tf.map_fn(
            preprocess_encoded, images, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32)
        )
        return outputs(pixels)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def serve_pixels(pixels):
        return outputs(augment.eval_preprocess(pixels, resize_size, image_size))

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint("serving_default", serve_encoded)
    archive.add_endpoint("serve_pixels", serve_pixels)

    os.makedirs(export_dir, exist_ok=True)
    version = int(version or next_version(export_dir))
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"Export version folder already exists: {target}. Received: version={version}")
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
    try:
        archive.write_out(tmp, verbose=False)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def export_model_file(model_path, export_dir, *, top_k=5, version=None, model=None):
    """Exports the classifier of a `.keras` DCL model file; returns the version folder.

    `model`, when given, is that file already loaded: the TensorFlow backend
    exports it without reading the file again.

    The export is always a plain TensorFlow graph: under the TensorFlow backend
    the file is loaded here; under another backend (JAX) it is reloaded in a
    child process with KERAS_BACKEND=tensorflow. That keeps the SavedModel free
    of jax2tf's XlaCallModule op, so any TF Serving release loads it.
    """
    if keras.backend.backend() == "tensorflow":
        model = model or saving.load_model(model_path)
        return export_classifier(model, export_dir, top_k=top_k, version=version)
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    args = [sys.executable, "-m", "dcl_keras.export", model_path, export_dir, str(top_k), str(version or 0)]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"Export under the TensorFlow backend failed:\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    import sys

    _path, _dir, _top_k, _version = sys.argv[1:5]
    print(export_model_file(_path, _dir, top_k=int(_top_k), version=int(_version) or None))
