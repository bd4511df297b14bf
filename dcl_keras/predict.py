"""Prediction from a `.keras` model or a TF Serving export folder (top-k names and probabilities)."""

import os

import numpy as np
import tensorflow as tf

from dcl_keras import saving
from dcl_keras.data import augment, pipeline, readers
from dcl_keras.errors import UserError


def list_images(inputs):
    """Image paths from files and folders (folders searched recursively, sorted)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            for folder, _, files in sorted(os.walk(item)):
                paths.extend(os.path.join(folder, f) for f in sorted(files) if readers.is_image_file(f))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"Image path not found: expected a file or folder. Received: {item!r}")
    if not paths:
        raise FileNotFoundError(f"No images found in {list(inputs)}")
    return paths


def resolve_export(path):
    """An export base folder (<dir>/<version>/) resolves to its highest version."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [d for d in os.listdir(path) if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"No SavedModel in {path!r}: expected saved_model.pb or <version>/saved_model.pb")
    return os.path.join(path, max(versions, key=int))


class Predictor:
    """Top-k predictions from a `.keras` DCL model or an export folder.

    Args:
        model_path: a `.keras` file or a SavedModel folder (or export base folder).
        top_k: int.
    """

    def __init__(self, model_path, top_k=5):
        self.top_k = top_k
        if model_path.endswith(".keras"):
            from dcl_keras.models import dcl

            model = saving.load_model(model_path)
            self._classifier = dcl.classifier_model(model)
            self.class_names = model.class_names or [str(i) for i in range(model.num_classes)]
            self._image_size = int(model.input_shape[1])
            self._resize_size = int(model.resize_size or self._image_size)
            self._serving = None
        elif os.path.isdir(model_path):
            self._serving = tf.saved_model.load(resolve_export(model_path)).signatures["serving_default"]
            self.class_names = None
        else:
            raise FileNotFoundError(
                f"Model not found: expected a .keras file or an export folder. Received: {model_path!r}"
            )

    def _read(self, paths, failures):
        """(readable paths, their encoded bytes, their decoded pixels); unreadable files reported or raised."""
        good, data, images = [], [], []
        for path in paths:
            try:
                encoded = tf.io.read_file(path)
                image = pipeline.decode_image(encoded)
            except tf.errors.OpError as e:
                reason = f"{path}: cannot be read or decoded as an image ({e.message.splitlines()[0][:200]})"
                if failures is None:
                    raise UserError(reason) from None
                failures.append((path, reason))
                continue
            good.append(path)
            data.append(encoded.numpy())
            images.append(image)
        return good, data, images

    def logits(self, paths, failures=None):
        """Logits [len(readable paths), C] for image files (see `predict` for `failures`)."""
        good, data, images = self._read(paths, failures)
        if not good:
            return np.zeros((0, len(self.class_names or [])), np.float32)
        if self._serving is not None:
            return self._serving(images=tf.constant(data))["logits"].numpy()
        return self._keras_logits(images)

    def _keras_logits(self, images):
        pixels = tf.stack([augment.eval_preprocess(image, self._resize_size, self._image_size) for image in images])
        return np.asarray(self._classifier.predict_on_batch(pixels.numpy()))

    def predict(self, paths, failures=None):
        """[(path, [(class name, probability), ...]), ...] with the top-k per readable image.

        A file that cannot be read or decoded raises UserError naming it; with
        a `failures` list it is appended there as (path, reason) instead, and
        the other files are still predicted. From an export, k is at most the
        top_k it was exported with.
        """
        if self._serving is not None:
            paths, data, _ = self._read(paths, failures)
            if not paths:
                return []
            out = self._serving(images=tf.constant(data))
            indices, scores = out["top_k_indices"].numpy(), out["top_k_scores"].numpy()
            names = out["top_k_names"].numpy() if "top_k_names" in out else indices.astype(str).astype(bytes)
            names = [[n.decode() for n in row[: self.top_k]] for row in names]
            return [
                (p, list(zip(names[i], scores[i][: self.top_k].tolist(), strict=True))) for i, p in enumerate(paths)
            ]
        paths, _, images = self._read(paths, failures)
        if not paths:
            return []
        probs = tf.nn.softmax(self._keras_logits(images), axis=-1).numpy()
        results = []
        for path, row in zip(paths, probs, strict=True):
            order = np.argsort(-row)[: self.top_k]
            results.append((path, [(self.class_names[j], float(row[j])) for j in order]))
        return results
