"""Trains DCL, then evaluates and exports the classifier for TF Serving, and writes the run's report.html.

    bin/train --config=configs/demo.py --workdir=workdirs/demo
    bin/train --config=configs/cub_resnet50.py:root=/data/CUB_200_2011 --workdir=runs/cub \
        --config.train.epochs=3

Rerunning the same command resumes from the last checkpoint. SIGTERM or
SIGUSR1 (a scheduler's warning) ends the current step, saves a checkpoint of
it, prints where it is, and exits with status 75, on which a scheduler can
requeue the same command. Skip the last stages with
--config.eval.enabled=False or --config.export.enabled=False.
A run that evaluated and exported ends with a summary: test top-1 and mean
per-class accuracy, the files written, and the commands to predict, serve
with TF Serving and open the report (bin/report rebuilds it).
"""

import os
import shlex
import sys

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
    from dcl_keras import preemption, training
    from dcl_keras.distribute import Cluster
    from dcl_keras.errors import PREEMPTED_EXIT_STATUS

    logging.set_verbosity(logging.INFO)
    cluster = Cluster.from_env(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        result = training.train_and_evaluate(_CONFIG.value, _WORKDIR.value, cluster)
    except preemption.Preempted as e:
        print(f"{os.path.basename(sys.argv[0])}: {e}", file=sys.stderr, flush=True)
        sys.exit(PREEMPTED_EXIT_STATUS)
    evaluation = result.get("evaluation")
    if evaluation:
        logging.info(
            "Test top-1 %.4f over %d images (%s).",
            evaluation["top1"],
            evaluation["num_examples"],
            evaluation["report_path"],
        )
    if "export" in result:
        logging.info("Exported the classifier to %s", result["export"])
    page = None
    if cluster.num_processes > 1 and cluster.is_chief:
        # The report's CAMs run the model, which every process would have to join; the others have finished.
        logging.info("Multi-process run: `bin/report --workdir=%s` writes report.html.", _WORKDIR.value)
    elif cluster.is_chief:
        page = _write_report(os.path.dirname(result["model"]))
    import keras

    print(f"backend: {keras.backend.backend()}")
    print(f"model: {result['model']}")
    if evaluation:
        print(f"test top-1: {evaluation['top1']:.4f}")
    if "export" in result:
        print(f"export: {result['export']}")
    if page:
        print(f"report: {page}")
    if evaluation and "export" in result:
        print(_summary(result, page))


def _write_report(workdir):
    """Writes the run's report.html (its path), or logs why not: the run itself is saved and finished either way."""
    from dcl_keras import report

    try:
        path, missing = report.write_report(workdir)
    except Exception:  # Never fail a finished run over its report; the traceback goes to the log.
        logging.exception("report.html not written; `%s --workdir=%s` rebuilds it.", cli.tool("report"), workdir)
        return None
    for line in missing:
        logging.info("report.html: %s", line)
    return path


def _summary(result, page):
    """What the run gave and what to do next: predict on a file, serve with TF Serving, open the report (`page`)."""
    evaluation, version = result["evaluation"], os.path.abspath(result["export"])
    export_dir = os.path.dirname(version)
    image = "IMAGE.jpg"
    if _CONFIG.value.data.source == "demo":
        from dcl_keras.data import demo

        image = demo.first_test_image(os.path.dirname(result["model"]))
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    predict, docker, curl = cli.serving_commands(export_dir, image)
    lines = [
        "",
        f"Done: test top-1 {evaluation['top1']:.4f}, mean per-class accuracy "
        f"{evaluation['mean_class_accuracy']:.4f} ({evaluation['num_examples']} test images).",
        "Files:",
        f"  model     {result['model']}",
        f"  export    {version}  (version {os.path.basename(version)} of {export_dir}, the folder TF Serving watches)",
        *([f"  report    {page}"] if page else []),
        "Next:",
        "  predict on a file:",
        f"    {predict}",
        "  serve with TF Serving (REST on port 8501), then query it:",
        f"    {docker}",
        f"    {curl}",
    ]
    if page:
        lines += ["  open the report:", f"    {opener} {shlex.quote(page)}"]
    return "\n".join(lines)


def run():
    """The `dcl-train` console command (bin/train)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
