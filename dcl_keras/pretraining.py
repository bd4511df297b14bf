"""Where a pretraining run lives: a folder named by the digest of its config and corpus, so it runs once.

`bin/pretrain` (dcl_keras/commands/pretrain.py) trains a plain classifier
on the generated corpus (configs/pretrain.py) into `run_dir(config)` and
writes the backbone's weights there; a fine-tuning config points
`model.weights` at `weights_path(...)`, as a user points it at ImageNet
weights in a file. The digest covers every config field (the recipe) and the
corpus's cache folder name (its parameters and generator version), so a
change to either pretrains anew, in a new folder, and the old one stays.
"""

import hashlib
import json
import os

from dcl_keras import workdir as run_folder
from dcl_keras.data import demo

WEIGHTS_FILE = run_folder.BACKBONE_WEIGHTS  # What export.backbone_weights writes; model.weights=<path> loads.
# Fields that do not change the weights: how much the run prints.
_NOT_RECIPE = (("train", "verbose"),)


def digest(config):
    """Ten hex digits of the recipe (every config field but the log level) and of the corpus it reads."""
    fields = config.to_dict()
    for section, key in _NOT_RECIPE:
        fields.get(section, {}).pop(key, None)
    corpus = demo.folder_name(**{k: v for k, v in fields["data"]["demo"].items() if k != "cache_dir"})[0]
    return hashlib.sha1(json.dumps([fields, corpus], sort_keys=True, default=str).encode()).hexdigest()[:10]


def default_dir():
    return os.path.join(demo.default_cache_dir(), "pretrained")


def run_dir(config, cache_dir=None):
    """The pretraining run's folder: <cache_dir>/pretrain-<digest> (cache_dir: $DCL_KERAS_CACHE/pretrained)."""
    return os.path.join(os.path.expanduser(cache_dir or default_dir()), f"pretrain-{digest(config)}")


def weights_path(config_file, cache_dir=None):
    """The backbone weights that `bin/pretrain --config=<config_file>` writes (present once it has run)."""
    from dcl_keras.config import load_config_file

    return os.path.join(run_dir(load_config_file(config_file), cache_dir), WEIGHTS_FILE)


def fine_tuning(config_file, pretrain_config_file):
    """The config at `config_file`, fine-tuned from `pretrain_config_file`'s backbone with the paper's structure.

    The backbone at rate r = 0.1 and the new heads at 10r, for 10 epochs with
    the rate cut at 7 (docs/accuracy.md, "A pretrained regime").
    """
    from dcl_keras.config import load_config_file

    c = load_config_file(config_file)
    c.model.weights = weights_path(pretrain_config_file)
    c.train.learning_rate = 0.1
    c.train.head_multiplier = 10.0
    c.train.epochs = 10
    c.train.decay_epochs = 7
    return c
