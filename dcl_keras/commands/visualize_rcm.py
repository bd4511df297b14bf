"""Writes a PNG grid of originals and destructed copies for a dataset and config (Fig. 3 of the paper).

bin/visualize_rcm --config=configs/demo.py --output=rcm.png --num_images=6
bin/visualize_rcm --config=configs/cub_resnet50.py:root=/data/CUB_200_2011 --output=cub_rcm.png
"""

import os

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].", lock_config=True)
_OUTPUT = flags.DEFINE_string("output", "rcm.png", "PNG file to write.")
_NUM = flags.DEFINE_integer("num_images", 4, "Examples (rows) to show.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    from dcl_keras.config import validate_config
    from dcl_keras.data import datasets, specs
    from dcl_keras.viz.rcm_grid import rcm_grid

    config = _CONFIG.value
    validate_config(config)
    train = datasets.load_splits(config.data).train
    grid = rcm_grid(train, specs.TrainSpec.from_config(config), num_images=_NUM.value)
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    grid.save(_OUTPUT.value, format="PNG")
    print(f"wrote {_OUTPUT.value} ({grid.width}x{grid.height})")


def run():
    """The `dcl-visualize-rcm` console command (bin/visualize_rcm)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
