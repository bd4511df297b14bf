"""The demo's birds fine-tuned from the pretrained backbone: the paper's regime in miniature.

    bin/pretrain                                  # once (about 15-25 minutes on 2 CPU cores), cached
    bin/train --config=configs/demo_pretrained.py --workdir=workdirs/demo_pretrained

configs/demo_study.py (the demo's data, 64-px crops, backbone, RCM and
losses), started from the backbone that `bin/pretrain` trains on the
generated corpus (configs/pretrain.py: glyph pages and coarse shapes, no
bird), loaded through model.weights=<path> as ImageNet weights from a file
are. The paper's fine-tuning structure: the backbone at rate r, the new
heads at 10r, for 10 epochs, half the study recipe's 20. r = 0.1 is every
arm's best of 0.01 / 0.03 / 0.1 at seed 0 (docs/accuracy.md, "A pretrained regime"). The
same 10 epochs from scratch: --config.model.weights=none
--config.train.head_multiplier=1.
"""

import os

from dcl_keras import pretraining

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
    del arg
    return pretraining.fine_tuning(os.path.join(HERE, "demo_study.py"), os.path.join(HERE, "pretrain.py"))
