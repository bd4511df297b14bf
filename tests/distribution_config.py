"""The config shared by the distribution tests (tiny, group norm: exact under data parallelism)."""

from helpers import config_file


def config_for(cache, distribution):
    c = config_file("tiny")
    c.data.demo.cache_dir = cache
    c.data.demo.train_per_class = 6
    c.data.demo.test_per_class = 3
    c.model.norm = "group"
    c.input.batch_size = 4  # Global: 4 examples = 8 images per step.
    c.train.epochs = 1
    c.train.steps_per_epoch = 3
    c.train.distribution = distribution
    c.train.verbose = 0
    c.eval.enabled = False
    c.export.enabled = False
    return c


def overrides(cache):
    """The same settings as bin/train flags."""
    return [
        "--config=configs/tiny.py",
        f"--config.data.demo.cache_dir={cache}",
        "--config.data.demo.train_per_class=6",
        "--config.data.demo.test_per_class=3",
        "--config.model.norm=group",
        "--config.input.batch_size=4",
        "--config.train.epochs=1",
        "--config.train.steps_per_epoch=3",
        "--config.train.verbose=0",
        "--config.eval.enabled=False",
        "--config.export.enabled=False",
    ]
