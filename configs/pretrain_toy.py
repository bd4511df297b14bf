"""The toy version of ImageNet pretraining: a plain classifier on a broad procedural set.

    bin/train --config=configs/pretrain_toy.py --workdir=workdirs/pretrain_toy
    bin/train --config=configs/demo_96.py --workdir=workdirs/demo_pretrained \
        --config.model.weights=workdirs/pretrain_toy/backbone.weights.h5

The paper fine-tunes an ImageNet-pretrained backbone; the demo trains from
scratch. This config pretrains the demo's tiny backbone once on 96 coarse
classes (shape x texture x colour family, drawn over the demo's clutter, 60
training images each, cached like the demo data) as a plain classifier (no
destructed views, no DCL heads), and writes `backbone.weights.h5`. Fine-tuning
DCL and its baselines from that file through `model.weights=<path>` is then
exactly what a user with ImageNet weights does (bin/sweep --set
model.weights=...).
"""

import os

from dcl_keras.config import load_config_file


def get_config(arg=None):
    del arg
    # At 96 px, as measured in docs/experiments.md (the demo of that date, now configs/demo_96.py).
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_96.py"))
    c.data.demo.kind = "coarse"
    c.data.demo.num_classes = 96
    c.data.demo.train_per_class = 60
    c.data.demo.test_per_class = 10
    c.rcm.destructed = 0  # A plain classifier.
    c.loss.beta = 0.0
    c.loss.gamma = 0.0
    c.train.epochs = 30
    c.train.decay_epochs = 20
    c.export.enabled = False
    c.export.backbone_weights = True
    return c
