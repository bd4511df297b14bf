"""Pretrains a backbone on the generated corpus once, and prints the path of its weights.

    bin/pretrain                                   # configs/pretrain.py, about 20 minutes on 2 CPU cores
    bin/pretrain --config=configs/pretrain.py --config.train.epochs=8

The run's folder is <cache>/pretrain-<digest> (--cache_dir, by default
$DCL_KERAS_CACHE/pretrained or ~/.cache/dcl_keras/pretrained), where the
digest covers the resolved config and the corpus's parameters and generator
version. The same command again prints the weights' path at once; a changed
recipe or corpus pretrains anew into its own folder; a killed or preempted
run resumes from its checkpoint (exit status 75 on SIGTERM or SIGUSR1, as
bin/train). The last line printed is the path of backbone.weights.h5: give
it to fine-tuning as --config.model.weights=<path>, as ImageNet weights in
a file are given (configs/typefaces_pretrained.py and
configs/demo_pretrained.py find it themselves).
"""

import os
import sys

from dcl_keras import cli

cli.select_backend()

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/pretrain.py", "Pretraining config file[:arg].", lock_config=True
)
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Folder of the pretraining runs (default $DCL_KERAS_CACHE/pretrained)."
)
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")


def main(argv):
    del argv
    from dcl_keras import pretraining
    from dcl_keras.errors import UserError

    config = _CONFIG.value
    if not config.export.backbone_weights:
        raise UserError(
            "bin/pretrain writes the backbone's weights: expected export.backbone_weights=True. "
            "Received: --config.export.backbone_weights=False"
        )
    workdir = pretraining.run_dir(config, _CACHE_DIR.value)
    weights = os.path.join(workdir, pretraining.WEIGHTS_FILE)
    if os.path.isfile(weights):
        logging.info("Already pretrained with this recipe and corpus: %s", workdir)
    else:
        _train(config, workdir)
    print(weights)


def _train(config, workdir):
    from dcl_keras import preemption, training
    from dcl_keras.distribute import Cluster
    from dcl_keras.errors import PREEMPTED_EXIT_STATUS

    logging.set_verbosity(logging.INFO)
    logging.info("Pretraining into %s", workdir)
    try:
        result = training.train_and_evaluate(config, workdir, Cluster.from_env(None, None, None))
    except preemption.Preempted as e:
        print(f"{os.path.basename(sys.argv[0])}: {e}", file=sys.stderr, flush=True)
        sys.exit(PREEMPTED_EXIT_STATUS)
    evaluation = result.get("evaluation")
    if evaluation:
        logging.info("Pretraining test top-1 %.4f on the corpus's test images.", evaluation["top1"])


def run():
    """The `dcl-pretrain` console command (bin/pretrain)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
