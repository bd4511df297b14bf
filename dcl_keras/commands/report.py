"""Writes report.html: one self-contained page per run or per sweep, to open in any browser.

    bin/report --workdir=workdirs/demo                  # <workdir>/report.html
    bin/report --workdir=workdirs/demo --num_images=8   # CAM overlays of 8 test images
    bin/report --sweep_dir=sweeps/ablation              # <sweep_dir>/report.html, results.csv and results.md

A run's page: its config, the curves of metrics.csv (losses, accuracy, learning
rate), the test figures, the confusion matrix, the most-confused pairs, RCM
examples, CAM overlays, and where the export is. A sweep's page: each grid
point's mean +- std with its seeds, one plot per metric, and a link to each
run's page. bin/train writes its run's page at its end and bin/sweep its
sweep's; this rebuilds them, also for a run stopped mid-way (the page says what
is missing). Images are inlined: the file can be copied or mailed alone.
"""

import os

from dcl_keras import cli, commands

cli.select_backend()

from absl import flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A bin/train workdir: writes <workdir>/report.html.")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "A bin/sweep folder: writes <sweep_dir>/report.html.")
_NUM = flags.DEFINE_integer("num_images", 4, "Test images with CAM overlays on a run's page.")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")


def main(argv):
    from dcl_keras import report
    from dcl_keras.errors import UserError

    if len(argv) > 1 or (_WORKDIR.value is None) == (_SWEEP_DIR.value is None):
        raise UserError(
            "Expected one of --workdir or --sweep_dir and no other argument. "
            f"Received: --workdir={_WORKDIR.value}, --sweep_dir={_SWEEP_DIR.value}, arguments {argv[1:]}"
        )
    if _SWEEP_DIR.value:
        _, _, page = commands.collect_sweep(_SWEEP_DIR.value)
        print(f"report: {page}")
        return
    path, missing = report.write_report(_WORKDIR.value, _NUM.value)
    for line in missing:
        print(f"missing: {line}")
    print(f"report: {path}")


def run():
    """The `dcl-report` console command (bin/report)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
