"""DCL on FGVC-Aircraft (gamma = 0.01, N = 2 as in the paper's main table), ResNet-50 or VGG-16.

    bin/train --config=configs/aircraft_resnet50.py:root=/data/fgvc-aircraft-2013b --workdir=runs/aircraft
    bin/train --config=configs/aircraft_resnet50.py:root=/data/fgvc-aircraft-2013b,n=7 --workdir=runs/aircraft_n7
    bin/train --config=configs/aircraft_resnet50.py:root=/data/fgvc-aircraft-2013b,level=family --workdir=runs/af

`root` holds data/ (images_variant_trainval.txt, variants.txt, images/, ...).
Trains on trainval, tests on test: 100 variants, or `level=family` (70) or
`level=manufacturer` (30). k is the paper's 2 wherever N allows it (N >= 3),
else 1. With N = 2 and k = 1 about 59% of RCM's "destructed" views are the
unchanged image ((7/8)^4; docs/experiments.md, the N sweep), so the discriminator sees
mostly identical pairs; `n=4` or `n=7` (k = 2) avoid that. The 20-pixel
copyright banner at the bottom of every image is removed (`banner=true`
keeps it). `split=train` trains on train and validates on val.
"""

from dcl_keras.config import paper_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, root="", backbone="resnet50", n=2, k=0, level="variant", banner=False, split="trainval")
    c = paper_config("fgvc_aircraft", 0.01, a["n"], a["backbone"], a["root"])
    c.rcm.k = a["k"] or (2 if a["n"] > 2 else 1)
    c.data.aircraft_level = a["level"]
    c.data.aircraft_remove_banner = not a["banner"]
    c.data.aircraft_train_split = a["split"]
    return c
