"""Prediction from a `.keras` model or a TF Serving export folder (top-k names and probabilities)."""

import os

import numpy as np
import tensorflow as tf

from dcl_keras import saving
from dcl_keras.data import augment, pipeline, readers


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

    def logits(self, paths):
        """Logits [len(paths), C] for image files."""
        if self._serving is not None:
            data = tf.constant([tf.io.read_file(p).numpy() for p in paths])
            return self._serving(images=data)["logits"].numpy()
        images = tf.stack(
            [augment.eval_preprocess(pipeline.read_image(p), self._resize_size, self._image_size) for p in paths]
        )
        return np.asarray(self._classifier.predict_on_batch(images.numpy()))

    def predict(self, paths):
        """[(path, [(class name, probability), ...]), ...] with the top-k per image.

        From an export, k is at most the top_k it was exported with.
        """
        if self._serving is not None:
            out = self._serving(images=tf.constant([tf.io.read_file(p).numpy() for p in paths]))
            indices, scores = out["top_k_indices"].numpy(), out["top_k_scores"].numpy()
            names = out["top_k_names"].numpy() if "top_k_names" in out else indices.astype(str).astype(bytes)
            names = [[n.decode() for n in row[: self.top_k]] for row in names]
            return [
                (p, list(zip(names[i], scores[i][: self.top_k].tolist(), strict=True))) for i, p in enumerate(paths)
            ]
        probs = tf.nn.softmax(self.logits(paths), axis=-1).numpy()
        results = []
        for path, row in zip(paths, probs, strict=True):
            order = np.argsort(-row)[: self.top_k]
            results.append((path, [(self.class_names[j], float(row[j])) for j in order]))
        return results
