"""A real TFDS builder of generated 500x375 JPEGs (`common.photo_like`), prepared offline, for tfds_memory.py."""

import numpy as np
import tensorflow_datasets as tfds

from common import photo_like

CLASSES = 20
WIDTH, HEIGHT = 500, 375


class BenchJpegs(tfds.core.GeneratorBasedBuilder):
    """Photo-like JPEGs with labels i % CLASSES, in TFDS's own record format; configs "n<training examples>"."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="n2000"), tfds.core.BuilderConfig(name="n8000")]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=[f"class_{i}" for i in range(CLASSES)]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        train = int(self.builder_config.name[1:])
        return {"train": self._generate_examples(train, 0), "test": self._generate_examples(8, 1)}

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            yield i, {"image": photo_like(rng, HEIGHT, WIDTH), "label": i % CLASSES}


def prepare(data_dir, config):
    """Builds bench_jpegs/<config> into data_dir (no network); returns the builder name."""
    name = f"bench_jpegs/{config}"
    tfds.builder(name, data_dir=data_dir).download_and_prepare()
    return name
