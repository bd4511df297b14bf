"""A real TFDS builder of generated JPEG birds, prepared offline: TFDS sources tested on real records.

Used by tests/data/test_readers.py and benchmarks/tfds_memory.py.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds


@dataclasses.dataclass
class ToyConfig(tfds.core.BuilderConfig):
    train: int = 12
    test: int = 6
    width: int = 40
    height: int = 30
    classes: int = 3


class DclToyBirds(tfds.core.GeneratorBasedBuilder):
    """Smooth random JPEGs with labels i % classes, in TFDS's own record format."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        ToyConfig(name="small"),
        ToyConfig(name="n2000", train=2000, test=8, width=500, height=375, classes=20),
        ToyConfig(name="n8000", train=8000, test=8, width=500, height=375, classes=20),
    ]

    def _info(self):
        c = self.builder_config
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=[f"bird_{i}" for i in range(c.classes)]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        c = self.builder_config
        return {"train": self._generate_examples(c.train, 0), "test": self._generate_examples(c.test, 1)}

    def _generate_examples(self, count, seed):
        c = self.builder_config
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0 : c.height, 0 : c.width]
        for i in range(count):
            base = np.sin(xx / rng.uniform(5, 40) + i)[..., None] * np.cos(
                yy[..., None] / rng.uniform(5, 40) + np.arange(3)
            )
            image = np.clip(127 + 100 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            yield i, {"image": image, "label": i % c.classes}


def prepare(data_dir, config="small"):
    """Builds dcl_toy_birds/<config> into data_dir (no network); returns the builder name."""
    name = f"dcl_toy_birds/{config}"
    tfds.builder(name, data_dir=data_dir).download_and_prepare()
    return name
