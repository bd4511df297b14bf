"""Prediction from a `.keras` model or a TF Serving export folder: top-k names and probabilities, and embeddings."""

import functools
import os

import numpy as np
import tensorflow as tf

from dcl_keras import saving
from dcl_keras.data import augment, pipeline, readers
from dcl_keras.errors import UserError
from dcl_keras.models import dcl

EMBEDDINGS_SIGNATURE = "serve_embeddings"  # The export's signature: encoded images -> {"embeddings": [B, D]}.


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
    """Top-k class names and scores from a `.keras` DCL model or a TF Serving export.

        predictor = Predictor.from_export("workdirs/demo/export")   # or .from_keras("workdirs/demo/model.keras")
        for key, top in predictor.predict(["bird.jpg", pixels]):      # files and/or H x W x 3 RGB arrays
            print(key, top)                                            # [(class name, probability), ...]

    Both kinds preprocess exactly as evaluation does (resize, centre crop);
    an export is run through its own signatures (`serving_default` for files,
    `serve_pixels` for arrays, `serve_embeddings` for `embeddings`), as TF
    Serving would run it.

    Args:
        model_path: a `.keras` file or a SavedModel folder (or export base folder).
        top_k: int.
    """

    def __init__(self, model_path, top_k=5):
        self.top_k = top_k
        self.model_path = model_path = os.fspath(model_path)
        if model_path.endswith(".keras") and os.path.isfile(model_path):
            from dcl_keras import export

            model = saving.load_model(model_path)
            self._classifier, self._spec = export.classifier_and_spec(model)
            self.class_names = model.class_names or [str(i) for i in range(model.num_classes)]
            self._serving = None
        elif os.path.isdir(model_path):
            self._export_path = resolve_export(model_path)
            self._signatures = tf.saved_model.load(self._export_path).signatures
            self._serving = self._signatures["serving_default"]
            self.class_names = None
        else:
            raise FileNotFoundError(
                f"Model not found: expected a .keras file or an export folder. Received: {model_path!r}"
            )

    @classmethod
    def from_keras(cls, path, top_k=5):
        """A predictor over a `.keras` DCL model file (bin/train's model.keras or a checkpoint)."""
        if not os.fspath(path).endswith(".keras") or not os.path.isfile(path):
            raise FileNotFoundError(f"Expected a .keras model file. Received: {os.fspath(path)!r}")
        return cls(path, top_k)

    @classmethod
    def from_export(cls, path, top_k=5):
        """A predictor over an export: `<dir>/<version>/` or its base folder (the highest version)."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Expected an export folder (bin/export's). Received: {os.fspath(path)!r}")
        return cls(path, top_k)

    def _read(self, inputs, failures):
        """(keys, encoded bytes or None, decoded or given pixels) of the usable inputs.

        A file's key is its path, an array's its position in `inputs`. Unusable
        inputs are reported in `failures`, or raised without it.
        """
        if isinstance(inputs, str | os.PathLike | np.ndarray):
            inputs = list(inputs) if isinstance(inputs, np.ndarray) and inputs.ndim == 4 else [inputs]
        keys, data, images = [], [], []
        for i, item in enumerate(inputs):
            if isinstance(item, str | os.PathLike):
                path = os.fspath(item)
                try:
                    encoded = tf.io.read_file(path)
                    image = pipeline.decode_image(encoded)
                except tf.errors.OpError as e:
                    reason = f"{path}: cannot be read or decoded as an image ({e.message.splitlines()[0][:200]})"
                    if failures is None:
                        raise UserError(reason) from None
                    failures.append((path, reason))
                    continue
                keys.append(path)
                data.append(encoded.numpy())
                images.append(image)
                continue
            array = np.asarray(item)
            if array.ndim != 3 or array.shape[-1] != 3 or min(array.shape[:2]) < 1:
                reason = (
                    f"input {i}: expected an image file path or an H x W x 3 RGB array. Received shape {array.shape}"
                )
                if failures is None:
                    raise UserError(reason)
                failures.append((i, reason))
                continue
            keys.append(i)
            data.append(None)
            images.append(tf.convert_to_tensor(array))
        return keys, data, images

    def _outputs(self, data, images):
        """The signatures' outputs (as NumPy) for the inputs, in order: files batched, arrays one by one."""
        files = [j for j, d in enumerate(data) if d is not None]
        parts = {}
        if files:
            out = self._serving(images=tf.constant([data[j] for j in files]))
            parts.update({j: {k: v.numpy()[row] for k, v in out.items()} for row, j in enumerate(files)})
        for j, d in enumerate(data):
            if d is None:
                out = self._signatures["serve_pixels"](pixels=tf.cast(images[j], tf.float32)[None])
                parts[j] = {k: v.numpy()[0] for k, v in out.items()}
        return [parts[j] for j in range(len(data))]

    def logits(self, inputs, failures=None):
        """Logits [number of usable inputs, C] for image files and/or arrays (see `predict`)."""
        keys, data, images = self._read(inputs, failures)
        if not keys:
            return np.zeros((0, len(self.class_names or [])), np.float32)
        if self._serving is not None:
            return np.stack([out["logits"] for out in self._outputs(data, images)])
        return self._keras_logits(images)

    def _keras_crops(self, images):
        spec = self._spec
        crops = [augment.eval_preprocess(image, spec.resize_size, spec.image_size, spec.resampling) for image in images]
        return tf.stack(crops).numpy()

    def _keras_logits(self, images):
        return np.asarray(self._classifier.predict_on_batch(self._keras_crops(images)))

    def predict(self, inputs, failures=None):
        """[(key, [(class name, probability), ...]), ...]: the top-k of each usable input.

        `inputs`: image file paths and/or RGB arrays (H x W x 3, uint8 or
        float in [0, 255]; a 4-D array is a batch). The key is the path of a
        file, the position in `inputs` of an array. An input that cannot be
        read, decoded or used raises UserError naming it; with a `failures`
        list it is appended there as (key, reason) instead, and the others are
        still predicted. From an export, k is at most the top_k it was
        exported with.
        """
        keys, data, images = self._read(inputs, failures)
        if not keys:
            return []
        if self._serving is not None:
            results = []
            for key, out in zip(keys, self._outputs(data, images), strict=True):
                names = out.get("top_k_names", out["top_k_indices"].astype(str).astype(bytes))
                top = zip(
                    [n.decode() for n in names[: self.top_k]], out["top_k_scores"][: self.top_k].tolist(), strict=True
                )
                results.append((key, list(top)))
            return results
        probs = tf.nn.softmax(self._keras_logits(images), axis=-1).numpy()
        results = []
        for key, row in zip(keys, probs, strict=True):
            order = np.argsort(-row)[: self.top_k]
            results.append((key, [(self.class_names[j], float(row[j])) for j in order]))
        return results

    @functools.cached_property
    def _embedder(self):
        """`dcl.embedding_model` of a `.keras` model; an export's `serve_embeddings` (a UserError when it has none)."""
        if self._serving is None:
            return dcl.embedding_model(self._classifier)
        from dcl_keras import export

        return export.require_signature(self._signatures, EMBEDDINGS_SIGNATURE, self._export_path)

    @property
    def embedding_size(self):
        """D, the length of this model's embeddings (the width of its pooled feature)."""
        if self._serving is None:
            return int(self._embedder.output_shape[-1])
        return int(self._embedder.structured_outputs["embeddings"].shape[-1])

    def embeddings(self, inputs, failures=None):
        """Unit-length embeddings, float32 [number of usable inputs, D]: see `keyed_embeddings`."""
        return self.keyed_embeddings(inputs, failures)[1]

    def keyed_embeddings(self, inputs, failures=None):
        """(keys, float32 [len(keys), D]): the L2-normalised pooled feature of each usable input.

        Inputs, keys and `failures` as in `predict`. A `.keras` model runs
        `dcl.embedding_model` on the evaluation crops; an export runs its
        `serve_embeddings` signature, which takes encoded images: files are
        sent as they are, arrays encoded as PNG, which holds uint8 pixels
        exactly. An array with fractional values would be rounded, so it is
        refused (give its file, uint8 pixels or the `.keras` model).
        """
        embedder = self._embedder  # An export without the signature fails here, before any image is read.
        keys, data, images = self._read(inputs, failures)
        if self._serving is None:
            if not keys:
                return keys, np.zeros((0, self.embedding_size), np.float32)
            return keys, np.asarray(embedder.predict_on_batch(self._keras_crops(images)), np.float32)
        encoded_keys, encoded = [], []
        for key, item, image in zip(keys, data, images, strict=True):
            item = item if item is not None else _lossless_png(key, image, failures)
            if item is not None:
                encoded_keys.append(key)
                encoded.append(item)
        if not encoded:
            return encoded_keys, np.zeros((0, self.embedding_size), np.float32)
        return encoded_keys, embedder(images=tf.constant(encoded))["embeddings"].numpy()

    def split_embeddings(self, split, batch_size=32):
        """(float32 [N, D], int labels [N]): the embeddings of a dataset split's examples, read as evaluation reads them.

        A `.keras` model embeds `pipeline.eval_batches`' crops; an export
        embeds each image as the split decodes it (an aircraft banner
        removed), encoded as PNG, through `serve_embeddings`. Examples that do
        not decode are skipped and logged, as evaluation skips them.
        """
        embedder = self._embedder
        if self._serving is None:
            batches = (
                (embedder.predict_on_batch(images.numpy()), labels)
                for images, labels in pipeline.eval_batches(split, self._spec, batch_size=batch_size)
            )
        else:
            ds = pipeline.examples(split).ignore_errors(log_warning=True)
            ds = ds.map(lambda image, label: (tf.io.encode_png(image), label)).batch(batch_size)
            batches = ((embedder(images=images)["embeddings"], labels) for images, labels in ds)
        rows, labels = [np.zeros((0, self.embedding_size), np.float32)], [np.zeros((0,), np.int64)]
        for embedded, batch_labels in batches:
            rows.append(np.asarray(embedded, np.float32))
            labels.append(np.asarray(batch_labels, np.int64))
        return np.concatenate(rows), np.concatenate(labels)


def _lossless_png(key, image, failures):
    """PNG bytes of an array input, or None (reported in `failures`, else raised) when PNG cannot hold its pixels."""
    pixels = np.asarray(image)
    whole = np.clip(np.round(pixels), 0, 255)
    if not np.array_equal(whole, pixels):
        reason = (
            f"input {key}: an export embeds encoded images, and PNG holds only whole pixel values in [0, 255]: "
            f"give uint8 pixels, the image file or the .keras model. Received: {pixels.dtype} values in "
            f"[{pixels.min():g}, {pixels.max():g}], not all whole"
        )
        if failures is None:
            raise UserError(reason)
        failures.append((key, reason))
        return None
    return tf.io.encode_png(whole.astype(np.uint8)).numpy()
