"""A tiny config for tests and smoke runs: 4 demo classes at 32 px, two short epochs.

bin/train --config=configs/tiny.py --workdir=/tmp/dcl_tiny
"""

from dcl_keras.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.data.source = "demo"
    c.data.demo.num_classes = 4
    c.data.demo.train_per_class = 8
    c.data.demo.test_per_class = 4
    c.data.demo.image_size = 48
    c.input.image_size = 32
    c.input.resize_size = 40
    c.input.batch_size = 4
    c.input.rotation = 10.0
    c.rcm.n = 4
    c.rcm.k = 2
    c.model.backbone = "tiny"
    c.model.weights = "none"
    c.model.width = 8
    c.train.head_multiplier = 1.0
    c.train.epochs = 2
    c.train.learning_rate = 0.01
    c.train.verbose = 2
    c.eval.batch_size = 8
    return c
