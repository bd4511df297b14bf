"""The command-line tools: one module per command, each with absl flags, `main(argv)` and `run()`.

`pyproject.toml` installs them as console commands (dcl-train, dcl-evaluate,
dcl-export, dcl-predict, dcl-visualize-rcm, dcl-analyze, dcl-sweep,
dcl-make-records, dcl-report, dcl-pretrain, dcl-audit, dcl-gallery); the
scripts in bin/ are thin wrappers of the same `run()`, and
`python -m dcl_keras.commands.<name>` runs them too. Each module picks the
Keras backend (--backend) before Keras is imported, so import only one of them
per process.
"""


def collect_sweep(sweep_dir):
    """A sweep's results, as bin/sweep and bin/report write them: results.csv, results.md and report.html.

    `sweep.collect` tables the finished runs and `report.write_sweep_report`
    draws them; neither library module imports the other. Returns (rows,
    summary, the path of report.html).
    """
    from dcl_keras import report, sweep

    rows, summary = sweep.collect(sweep_dir)
    invocations = sweep.load_plan(sweep_dir)["invocations"]
    page = report.write_sweep_report(sweep_dir, rows, summary, sweep.METRICS, invocations)
    return rows, summary, page
