"""report.html: one self-contained page per run and per sweep, to open in any browser.

A run's page (`write_report`, in run_page.py) shows the config (what differs
from the defaults, then every field), the curves of metrics.csv (each loss
term, training and validation accuracy, the learning rate), the test figures
of evaluation.json (top-1, top-5, mean per-class, per attribute for the demo's
attribute-named classes), the confusion matrix, the most-confused pairs with
example images, RCM examples (paper Fig. 3), CAM overlays of test images
(paper Fig. 5), and where the export is and how TF Serving serves it. It reads
the run folder through `dcl_keras.workdir`.

A sweep's page (`write_sweep_report`, in sweep_page.py) shows each grid
point's mean +- sample std with its seeds as points, one plot per metric, and
links to each run's page. It draws the rows of `sweep.collect`: bin/sweep and
bin/report compose the two, so neither module imports the other.

The HTML and its style are page.py; the plots, in the project's one
matplotlib style (`dcl_keras.viz.figures`), are plots.py. Every picture is a
PNG inlined as a data URI; the page has no script and loads nothing. A
workdir of a run stopped mid-way still gets a page, which says what is
missing and how to make it.

    bin/report --workdir=workdirs/demo         # bin/train writes it at its end
    bin/report --sweep_dir=sweeps/ablation     # bin/sweep writes it with results.md

    from dcl_keras import report
    path, missing = report.write_report("workdirs/demo")
"""

from dcl_keras.report.run_page import CAM_IMAGES, MissingInput, build_report, write_report
from dcl_keras.report.sweep_page import write_sweep_report
from dcl_keras.workdir import REPORT

__all__ = ["CAM_IMAGES", "REPORT", "MissingInput", "build_report", "write_report", "write_sweep_report"]
