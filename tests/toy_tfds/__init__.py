"""A real TFDS builder of generated JPEG birds, prepared offline: TFDS sources tested on real records.

Used by tests/data/test_readers.py and tests/data/test_records.py.
"""

import numpy as np
import tensorflow_datasets as tfds

TRAIN, TEST = 12, 6
WIDTH, HEIGHT = 40, 30
CLASSES = 3


class DclToyBirds(tfds.core.GeneratorBasedBuilder):
    """Smooth random JPEGs with labels i % CLASSES, in TFDS's own record format."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=[f"bird_{i}" for i in range(CLASSES)]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(TRAIN, 0), "test": self._generate_examples(TEST, 1)}

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
        for i in range(count):
            base = np.sin(xx / rng.uniform(5, 40) + i)[..., None] * np.cos(
                yy[..., None] / rng.uniform(5, 40) + np.arange(3)
            )
            image = np.clip(127 + 100 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            yield i, {"image": image, "label": i % CLASSES}


def prepare(data_dir):
    """Builds dcl_toy_birds into data_dir (no network); returns the builder name."""
    tfds.builder(DclToyBirds.name, data_dir=data_dir).download_and_prepare()
    return DclToyBirds.name
