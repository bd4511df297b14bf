"""DCL on the embedded demo dataset: a tiny backbone at 64 px for 40 epochs, about 2 minutes of training on 2 CPU cores.

    bin/train --config=configs/demo.py --workdir=workdirs/demo

The dataset (20 classes of procedural birds, 60 training and 20 test images
each; generator version 5) is generated into ~/.cache/dcl_keras the first time
(or $DCL_KERAS_CACHE). Classes share the body and differ in crest, wing
pattern and tail, drawn large enough to be found in a 64-px crop.

Measured on 2 CPU cores, seeds 0-4, each arm at the best learning rate of
0.03 / 0.1 / 0.3 (picked on seeds 0-1): DCL 0.936 +- 0.005 test top-1, the
equal-compute plain classifier 0.913 +- 0.031, the same-steps one 0.866 +-
0.039 (README, docs/experiments.md).

One setting differs from the paper's recipe, because this backbone starts from
random weights instead of ImageNet: a higher learning rate with no 10x boost
for the heads.
"""

from dcl_keras.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.data.source = "demo"
    c.data.demo.image_size = 128
    c.data.demo.train_per_class = 60
    c.data.demo.test_per_class = 20
    c.input.image_size = 64
    c.input.resize_size = 72
    c.input.batch_size = 16
    c.rcm.n = 4
    c.rcm.k = 2
    c.model.backbone = "tiny"
    c.model.weights = "none"
    c.model.width = 32
    c.loss.gamma = 1.0
    c.train.epochs = 40
    c.train.learning_rate = 0.1
    c.train.head_multiplier = 1.0
    c.train.decay_epochs = 30
    c.train.verbose = 2
    return c
