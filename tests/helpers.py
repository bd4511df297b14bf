"""Shared test helpers: the repository root (defined once here), config files, the bin/ tools run as a user would."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_file(name, arg=None):
    """The ConfigDict of configs/<name>.py[:arg], loaded as bin/train loads it."""
    from dcl_keras.config import load_config_file

    return load_config_file(os.path.join(ROOT, "configs", f"{name}.py") + (f":{arg}" if arg is not None else ""))


def run_bin(tool, *args, env=None, timeout=600, cwd=ROOT):
    """Runs bin/<tool> with this interpreter (in `cwd`, default the repository); returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", tool), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )


# Shared model-level helpers (in the keras-hub manner): every layer, loss, optimizer and model of the package goes
# through the same config round trip and `.keras` file round trip (tests/test_saving.py).


def tiny_dcl_model(image_size=32, n=4, classes=3, width=8, norm="batch", **kwargs):
    """A small DCLModel on the tiny backbone (random weights); `kwargs` go to DCLModel."""
    from dcl_keras.models import backbones, dcl

    backbone = backbones.build_backbone("tiny", image_size, width=width, norm=norm)
    return dcl.DCLModel(backbone, classes, n, **kwargs)


def assert_config_round_trip(obj):
    """get_config/from_config and keras's (de)serialization give the same class and config; returns the revival."""
    import copy

    import keras

    config = obj.get_config()
    clone = type(obj).from_config(copy.deepcopy(config))  # Some Keras from_config methods consume their argument.
    assert clone.get_config() == config, (type(obj).__name__, config, clone.get_config())
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(revived) is type(obj) and revived.get_config() == config
    return revived


def assert_keras_file_round_trip(model, inputs, folder, atol=1e-6):
    """Saves `model` as a .keras file, loads it with dcl_keras.saving, and checks the outputs match; returns it."""
    import keras
    import numpy as np

    from dcl_keras.saving import load_model

    path = os.path.join(str(folder), f"{model.name}.keras")
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is type(model)
    expected, actual = model(inputs), loaded(inputs)
    flat_expected, flat_actual = keras.tree.flatten(expected), keras.tree.flatten(actual)
    assert len(flat_expected) == len(flat_actual)
    for e, a in zip(flat_expected, flat_actual, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(e), atol=atol)
    return loaded


def global_statistics_accuracy(render, num_classes, train_per_class=30, test_per_class=20):
    """Nearest-centroid test accuracy on global colour statistics of `render(label)` images (PIL).

    What a classifier gets without looking at any part: near chance for a
    fine-grained set.
    """
    import numpy as np

    from dcl_keras.data import demo

    def features(count):
        x = [demo.global_statistics(render(label)) for label in range(num_classes) for _ in range(count)]
        return np.array(x), np.repeat(np.arange(num_classes), count)

    x_train, y_train = features(train_per_class)
    x_test, y_test = features(test_per_class)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    centroids = np.stack([x_train[y_train == c].mean(0) for c in range(num_classes)])
    predicted = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float(np.mean(predicted == y_test))
