"""DCL on Stanford Cars (gamma = 0.01, N = 7), ResNet-50 or VGG-16, via TFDS `cars196`.

    bin/train --config=configs/cars_resnet50.py:data_dir=/data/tfds --workdir=runs/cars
    bin/train --config=configs/cars_resnet50.py:data_dir=/data/tfds,backbone=vgg16 --workdir=runs/cars_vgg

Prepare the data once where a network exists: `tfds build cars196 --data_dir=/data/tfds`.
With the images in class folders instead: `source=image_folder,root=/data/cars`.
"""

from dcl_keras.config import paper_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, data_dir="", root="", backbone="resnet50", n=7, k=2, source="tfds")
    c = paper_config(a["source"], 0.01, a["n"], a["backbone"], a["root"])
    c.rcm.k = a["k"]
    c.data.tfds_name = "cars196"
    c.data.tfds_data_dir = a["data_dir"]
    return c
