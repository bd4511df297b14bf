"""Shared fixtures: small datasets written in real on-disk layouts, never the network."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import ROOT, config_file  # noqa: E402


def write_image(path, size=(40, 30), mode="RGB", fmt=None, seed=0):
    """Writes a random image file (creating folders) and returns its path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 4}[mode]
    array = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    image = Image.fromarray(array[..., 0] if channels == 1 else array, mode)
    image.save(path, format=fmt)
    return path


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A 4-class demo dataset in the image-folder layout (train/ and test/)."""
    from dcl_keras.data import demo

    cache = tmp_path_factory.mktemp("demo_cache")
    return demo.ensure_demo_dataset(str(cache), num_classes=4, train_per_class=6, test_per_class=3, image_size=48)


@pytest.fixture(scope="session")
def tiny_config(demo_root):
    """configs/tiny.py pointed at the session's demo dataset."""
    c = config_file("tiny")
    c.data.demo.cache_dir = os.path.dirname(demo_root)
    c.data.demo.train_per_class = 6
    c.data.demo.test_per_class = 3
    c.train.verbose = 0
    return c


@pytest.fixture
def tiny_config_file(tiny_config, tmp_path):
    """A config file equal to the session's tiny config (bin/train runs read config files)."""
    path = tmp_path / "tiny_test.py"
    path.write_text(
        f"from dcl_keras.config import load_config_file\n\n\ndef get_config(arg=None):\n"
        f"    c = load_config_file({os.path.join(ROOT, 'configs', 'tiny.py')!r})\n"
        f"    c.data.demo.cache_dir = {tiny_config.data.demo.cache_dir!r}\n"
        f"    c.data.demo.train_per_class = {tiny_config.data.demo.train_per_class}\n"
        f"    c.data.demo.test_per_class = {tiny_config.data.demo.test_per_class}\n"
        "    c.train.epochs = 1\n    c.train.verbose = 0\n    c.export.enabled = False\n    return c\n"
    )
    return str(path)
