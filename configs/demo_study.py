"""The demo at a quarter of the cost, for multi-seed studies: 64 px crops, 30 epochs, about 4 minutes a run.

    bin/sweep --config=configs/demo_study.py --grid=noise --seeds=0,1,2 --sweep_dir=sweeps/noise

It is configs/demo.py (same data, crop size, backbone, RCM N = 4, k = 2, losses
and learning rate) for a quarter of its epochs; the learning rate drops 10x at
epoch 22 of 30, as demo.py's at 88 of 120. Measured on 2 CPU cores: DCL 0.181
+- 0.033 test top-1 over seeds 0-4 (3.8 minutes a run alone), where the full
120 epochs reach 0.479 +- 0.020 (docs/experiments.md, "What limits the demo"). Use it to compare
options against each other over seeds, not as the demo's score.
"""

import os

from dcl_keras.config import load_config_file


def get_config(arg=None):
    del arg
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py"))
    c.input.image_size = 64
    c.input.resize_size = 72
    c.train.epochs = 30
    c.train.decay_epochs = 22
    return c
