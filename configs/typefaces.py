"""DCL on the generated typefaces set: thin detail in 224-px JPEGs, shrunk to 144 and cropped to 128.

    bin/train --config=configs/typefaces.py --workdir=workdirs/typefaces

Sixteen look-alike typefaces (dcl_keras/data/typefaces.py), 60 training and
25 test images each, larger than the resize side, so the resize filter and
the augmentation's resampling decide how much of the strokes' detail the
model sees. A tiny backbone from scratch at 128 px for 30 epochs. It is the
second testbed of benchmarks/learning.py, next to the demo.
"""

from dcl_keras.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.data.source = "demo"
    c.data.demo.kind = "typefaces"
    c.data.demo.num_classes = 16
    c.data.demo.image_size = 224
    c.data.demo.train_per_class = 60
    c.data.demo.test_per_class = 25
    c.input.image_size = 128
    c.input.resize_size = 144
    c.input.batch_size = 16
    c.rcm.n = 4
    c.rcm.k = 2
    c.model.backbone = "tiny"
    c.model.weights = "none"
    c.model.width = 32
    c.loss.gamma = 1.0
    c.loss.alignment_reduction = "mean"
    c.train.epochs = 30
    c.train.learning_rate = 0.1
    c.train.head_multiplier = 1.0
    c.train.decay_epochs = 22
    c.train.verbose = 2
    c.export.enabled = False
    return c
