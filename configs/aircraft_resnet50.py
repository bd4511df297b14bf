"""DCL on FGVC-Aircraft (gamma = 0.01, N = 2 as in the paper's main table), ResNet-50 or VGG-16.

    bin/train --config=configs/aircraft_resnet50.py:root=/data/fgvc-aircraft-2013b --workdir=runs/aircraft
    bin/train --config=configs/aircraft_resnet50.py:root=/data/fgvc-aircraft-2013b,n=7 --workdir=runs/aircraft_n7

`root` holds data/ (images_variant_trainval.txt, variants.txt, images/). Trains
on trainval, tests on test, 100 variants.
"""

from configs.common import paper_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, root="", backbone="resnet50", n=2, k=1)
    c = paper_config("fgvc_aircraft", 0.01, a["n"], a["backbone"], a["root"])
    c.rcm.k = a["k"] if a["n"] > 1 else 1
    return c
