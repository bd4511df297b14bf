"""Pretrains the testbeds' tiny backbone on the generated corpus: the miniature of ImageNet pretraining.

    bin/pretrain                          # this config; prints the weights' path, training only the first time
    bin/train --config=configs/typefaces_pretrained.py --workdir=workdirs/typefaces_pretrained

The corpus (dcl_keras/data/corpus.py) has 138 classes, none of them a
testbed's: 42 of glyph pages in the Computer Modern fonts (which the
typefaces do not use) x 3 slants x 2 stroke weights, and the demo's 96
coarse shape x texture x colour classes. 60 training and 10 test images a
class, 224 px, shrunk to 144 as the typefaces are, so strokes have the
typefaces' width in pixels; but the crop is 64 px, a patch of the page or
the object, at a quarter of the cost of a 128-px crop. A plain classifier (no
destructed views, no DCL heads) with the width-32 tiny backbone that
configs/demo*.py and configs/typefaces.py use, for 40 epochs: about 20
minutes on 2 CPU cores. It writes backbone.weights.h5, which the
*_pretrained configs load through model.weights=<path>, as a user loads
ImageNet weights from a file (docs/accuracy.md, "A pretrained regime").
The same corpus read at 128 px for 16 epochs (as long, a quarter of the
passes) gave a backbone that fine-tuned no better than random weights.
"""

import os

from dcl_keras.config import load_config_file


def get_config(arg=None):
    del arg
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "typefaces.py"))
    c.data.demo.kind = "pretrain"
    c.data.demo.num_classes = 138
    c.data.demo.train_per_class = 60
    c.data.demo.test_per_class = 10
    c.rcm.destructed = 0  # A plain classifier.
    c.loss.beta = 0.0
    c.loss.gamma = 0.0
    c.input.image_size = 64  # A patch of the 144-px page: the strokes' scale, a quarter of the pixels.
    c.train.epochs = 40
    c.train.decay_epochs = 30
    c.export.enabled = False
    c.export.backbone_weights = True
    return c
