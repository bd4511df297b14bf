"""DCL on CUB-200-2011 (gamma = 1, N = 7), ResNet-50 or VGG-16, the paper's recipe.

    bin/train --config=configs/cub_resnet50.py:root=/data/CUB_200_2011 --workdir=runs/cub
    bin/train --config=configs/cub_resnet50.py:root=/data/CUB_200_2011,backbone=vgg16 --workdir=runs/cub_vgg

`root` is the extracted CUB_200_2011 folder (the one holding images.txt). To use
the TFDS builder instead: `source=tfds` (caltech_birds2011, data_dir from
--config.data.tfds_data_dir). Ablations of the paper: N=1 is the baseline;
--config.loss.beta=0 and --config.loss.gamma=0 drop the discriminator or the
construction head; the whole ablation (baseline, equal-compute baseline,
destruction only, ...) and the N, ratio and k sweeps are named grids of
bin/sweep (see dcl_keras/experiments.py).
"""

from dcl_keras.config import paper_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, root="", backbone="resnet50", n=7, k=2, source="cub200")
    c = paper_config(a["source"], 1.0, a["n"], a["backbone"], a["root"])
    c.rcm.k = a["k"]
    if a["source"] == "tfds":
        c.data.tfds_name = "caltech_birds2011"
    return c
