"""The demo at half the cost, for multi-seed studies: 64 px crops, 20 epochs, about 70 s a run.

    bin/sweep --config=configs/demo_study.py --grid=noise --seeds=0,1,2 --sweep_dir=sweeps/noise

It is configs/demo.py (same data, crop size, backbone, RCM N = 4, k = 2, losses
and learning rate) for 20 of its 40 epochs, with no export; the learning
rate drops 10x at epoch 15, as demo.py's at 30. It stops before the demo's
accuracy levels off (DCL 0.555 / 0.65 / 0.5725 at seeds 0-2 where the full
recipe gives 0.93-0.95; the crest is half learned), so options that change
how fast DCL learns show. Use it to compare options against each other over
seeds, not as the demo's score (docs/experiments.md).
"""

import os

from dcl_keras.config import load_config_file


def get_config(arg=None):
    del arg
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py"))
    c.input.image_size = 64
    c.input.resize_size = 72
    c.train.epochs = 20
    c.train.decay_epochs = 15
    c.export.enabled = False
    return c
