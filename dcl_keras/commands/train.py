"""Trains DCL, then evaluates and exports the classifier for TF Serving.

    bin/train --config=configs/demo.py --workdir=workdirs/demo
    bin/train --config=configs/cub_resnet50.py:root=/data/CUB_200_2011 --workdir=runs/cub \
        --config.train.epochs=3

Rerunning the same command resumes after the last completed epoch. Skip the
last stages with --config.eval.enabled=False or --config.export.enabled=False.
"""

import os

from dcl_keras import cli

cli.select_backend()

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs, the model and the export.")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "JAX multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "JAX multi-host: process count (or JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "JAX multi-host: this process's id (or JAX_PROCESS_ID).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from dcl_keras import training
    from dcl_keras.distribute import Cluster

    logging.set_verbosity(logging.INFO)
    cluster = Cluster.from_env(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    result = training.train_and_evaluate(_CONFIG.value, _WORKDIR.value, cluster)
    report = result.get("evaluation")
    if report:
        logging.info(
            "Test top-1 %.4f over %d images (%s).", report["top1"], report["num_examples"], report["report_path"]
        )
    if "export" in result:
        logging.info("Exported the classifier to %s", result["export"])
    import keras

    print(f"backend: {keras.backend.backend()}")
    print(f"model: {result['model']}")
    if report:
        print(f"test top-1: {report['top1']:.4f}")
    if "export" in result:
        print(f"export: {result['export']}")


def run():
    """The `dcl-train` console command (bin/train)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
