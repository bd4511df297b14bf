"""DCL on the embedded demo dataset: a tiny backbone at 64 px, a few minutes on 2 CPU cores.

    bin/train --config=configs/demo.py --workdir=workdirs/demo

The dataset is generated into ~/.cache/dcl_keras the first time (or $DCL_KERAS_CACHE).
"""

from dcl_keras.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.data.source = "demo"
    c.input.image_size = 64
    c.input.resize_size = 72
    c.input.batch_size = 16
    c.rcm.n = 4
    c.rcm.k = 2
    c.model.backbone = "tiny"
    c.model.weights = "none"
    c.model.width = 32
    c.loss.gamma = 1.0
    c.train.epochs = 30
    c.train.learning_rate = 0.01
    c.train.decay_epochs = 20
    c.train.verbose = 2
    return c
