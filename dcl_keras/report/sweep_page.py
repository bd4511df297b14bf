"""A sweep's report.html: each grid point's mean +- std with its seeds, one plot per metric, links to the runs."""

import html
import os
import urllib.parse

from dcl_keras import workdir as run_folder
from dcl_keras.report import page
from dcl_keras.report import plots as plots_lib


def write_sweep_report(sweep_dir, rows, summary, metrics, invocations=()):
    """Writes `<sweep_dir>/report.html` from `sweep.collect`'s rows and summary; returns its path.

    One plot per metric of `metrics` (`sweep.METRICS`) that has values (each
    seed a point, the mean with a +- sample std error bar per grid point), the
    table of mean +- std, and a link to each run's report.html.

    Args:
        sweep_dir: str, the bin/sweep folder.
        rows: list of dicts, one per run (point, seed, status, workdir, metrics).
        summary: {point: {"finished", "planned", "stats": {metric: (mean, std, min)}}}.
        metrics: the metric names to show, in order.
        invocations: the command lines that planned the sweep.

    Example:

        rows, summary = sweep.collect("sweeps/ablation")
        report.write_sweep_report("sweeps/ablation", rows, summary, sweep.METRICS)
    """
    sweep_dir = os.path.abspath(sweep_dir)
    finished = [row for row in rows if row["status"] == "finished"]
    metrics = [m for m in metrics if any(m in entry["stats"] for entry in summary.values())]
    sections = [
        ("plots", "Per grid point", _plots(metrics, finished, summary)),
        ("table", "Mean +- sample std over seeds", _summary_table(summary, metrics)),
        ("runs", "Runs", _runs_table(rows, metrics, sweep_dir)),
        ("commands", "Produced by", _commands(invocations)),
    ]
    subtitle = f"<p>{html.escape(sweep_dir)}</p><p>{len(finished)} of {len(rows)} runs finished.</p>"
    text = page.page(f"DCL sweep {os.path.basename(sweep_dir)}", subtitle, sections)
    return run_folder.write_text(os.path.join(sweep_dir, run_folder.REPORT), text)


def _commands(invocations):
    return "".join(f"<pre>{html.escape(line)}</pre>" for line in invocations) or "<p>(no invocation recorded)</p>"


def _plots(metrics, finished, summary):
    plots = [plots_lib.sweep_points(metric, finished, summary) for metric in metrics]
    return f"<div class=grid>{''.join(plots)}</div>" if plots else page.missing("No finished run yet.")


def _summary_table(summary, metrics):
    table_rows = []
    for point, entry in summary.items():
        cells = [point, f"{entry['finished']}/{entry['planned']}"]
        for metric in metrics:
            mean, std, worst = entry["stats"].get(metric, (None, None, None))
            shown = "" if mean is None else f"{mean:.4f} +- {std:.4f}" if std is not None else f"{mean:.4f}"
            cells += [shown, "" if worst is None else f"{worst:.4f}"]
        table_rows.append(cells)
    header = ["point", "seeds"] + [f"{m} {part}" for m in metrics for part in ("mean +- std", "min")]
    numeric = tuple(range(2, 2 + 2 * len(metrics)))
    return page.table(header, table_rows, numeric) + "<p>min: the worst seed.</p>"


def _runs_table(rows, metrics, sweep_dir):
    runs = []
    for row in rows:
        run_page = os.path.join(row["workdir"], run_folder.REPORT)
        if os.path.isfile(run_page):
            href = urllib.parse.quote(os.path.relpath(run_page, sweep_dir))
            link = page.Raw(f'<a href="{html.escape(href)}">{html.escape(os.path.relpath(run_page, sweep_dir))}</a>')
        else:
            link = "no report.html" if row["status"] == "finished" else "not finished"
        values = [f"{row[m]:.4f}" if isinstance(row.get(m), float) else "" for m in metrics]
        runs.append([row["point"], row["seed"], row["status"], *values, link])
    return page.table(["point", "seed", "status", *metrics, "report"], runs, tuple(range(3, 3 + len(metrics))))
