"""report.html: one self-contained page per run and per sweep, to open in any browser.

A run's page (`write_report`) shows the config (what differs from the
defaults, then every field), the curves of metrics.csv (each loss term,
training and validation accuracy, the learning rate), the test figures of
evaluation.json (top-1, top-5, mean per-class, per attribute for the demo's
attribute-named classes), the confusion matrix, the most-confused pairs with
example images, RCM examples (paper Fig. 3), CAM overlays of test images
(paper Fig. 5), and where the export is and how TF Serving serves it.

A sweep's page (`write_sweep_report`) shows each grid point's mean +- sample
std with its seeds as points, one plot per metric, and links to each run's
page.

Every picture is a PNG drawn with matplotlib (Agg) and inlined as a data URI;
the page has no script and loads nothing (its Content-Security-Policy allows
only inline styles and data: images). A workdir of a run stopped mid-way
still gets a page, which says what is missing and how to make it.

    bin/report --workdir=workdirs/demo         # bin/train writes it at its end
    bin/report --sweep_dir=sweeps/ablation     # bin/sweep writes it with results.md

    from dcl_keras import report
    path, missing = report.write_report("workdirs/demo")
"""

import base64
import csv
import functools
import html
import io
import json
import math
import os
import re
import shlex
import sys
import time
import urllib.parse

import numpy as np

from dcl_keras import __version__, checkpointing, sweep
from dcl_keras.errors import UserError

REPORT = "report.html"
METRICS_CSV = "metrics.csv"  # Keras's CSVLogger in training.train: one row per epoch.
EVALUATION = "evaluation.json"
CONFUSED_PAIRS_PNG = "confused_pairs.png"  # Drawn by evaluation.evaluate next to evaluation.json.
FINAL_MODEL = "model.keras"
CAM_IMAGES = 4
RCM_IMAGES = 3
RCM_CELL_PX = 160  # Crops smaller than this are enlarged in the RCM picture.
CLASS_NAME_CHARS = 36  # Class names in the CAM picture are cut to this length.
WORST_CLASSES = 10
LEARNING_RATE_POINTS = 300
STYLE = """
body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{background:#24292f;color:#fff;padding:14px 32px}
header h1{margin:0 0 4px;font-size:20px} header p{margin:2px 0;color:#d0d7de}
nav{margin-top:8px} nav a{color:#9ecbff;margin-right:14px;text-decoration:none}
main{max-width:1200px;margin:0 auto;padding:4px 32px 40px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:16px 0;padding:4px 20px 16px}
h2{font-size:17px;border-bottom:1px solid #eaeef2;padding-bottom:6px} h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0} th,td{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f6f8fa;border:1px solid #eaeef2;border-radius:6px;padding:8px 10px;overflow-x:auto;white-space:pre-wrap}
.missing{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 16px;min-width:130px}
.card b{display:block;font-size:22px} .card span{color:#57606a;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:8px}
figure{margin:10px 0} figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:12.5px}
footer{color:#57606a;font-size:12px;text-align:center;padding:16px}
"""
# Inline styles and data: images only: a page that tried to load anything would show it in the console.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class MissingInput(UserError):
    """A file a part of the report needs is absent or unreadable: the page says so (the message) in its place."""


def _read_json(path, fix):
    """The JSON of `path`; MissingInput (naming the file and how to rewrite it, `fix`) when absent or unreadable."""
    if not os.path.isfile(path):
        raise MissingInput(f"No {os.path.basename(path)} in {os.path.dirname(path)}. {fix}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MissingInput(
            f"{path} cannot be read as JSON ({e}). {fix} Received: {len(raw)} bytes, {raw[:40]!r}"
        ) from None


def read_metrics(path):
    """The curves of a CSVLogger file: ({column: float array over epochs}, rows skipped as incomplete).

    Epochs count from 1. 'NA' (an epoch without validation) and values that do
    not parse are NaN; a row with the wrong number of fields (the last line of
    a run killed while writing it) is skipped; an epoch logged twice (a
    resumed run) keeps its last row.
    """
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or "epoch" not in lines[0]:
        raise MissingInput(
            f"{path}: expected a CSV header with an `epoch` column (Keras's CSVLogger). "
            f"Received: {','.join(lines[0])[:80] if lines else 'an empty file'}"
        )
    header, by_epoch, skipped = lines[0], {}, 0
    for row in lines[1:]:
        values = [_number(value) for value in row]
        if len(row) != len(header) or math.isnan(values[header.index("epoch")]):
            skipped += 1
            continue
        by_epoch[int(values[header.index("epoch")])] = values
    rows = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    columns = {name: np.array([row[i] for row in rows], np.float64) for i, name in enumerate(header)}
    columns["epoch"] = columns["epoch"] + 1
    return columns, skipped


def _number(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


def _uri(write):
    """A data: URI of the PNG that `write(file)` writes (savefig, PIL's save, a plotting function taking a path)."""
    buffer = io.BytesIO()
    write(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width, height):
    """A matplotlib Figure (Agg canvas, no pyplot state) and its axes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _legend_outside(ax):
    """The legend right of the axes, clear of the curves."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _figure_uri(figure):
    return _uri(lambda f: figure.savefig(f, format="png", dpi=100))


def _img(uri, alt, caption=""):
    caption = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}">{caption}</figure>'


def _table(header, rows, numeric=()):
    """An HTML table; cells are escaped unless they are `_Raw`; columns in `numeric` align right."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i in numeric else ''}>{cell if isinstance(cell, _Raw) else html.escape(str(cell))}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class _Raw(str):
    """HTML to put in a table cell as it is (a link)."""


def _missing(message):
    return f'<p class="missing">{html.escape(str(message))}</p>'


def _page(title, subtitle, sections, footer_note=""):
    nav = "".join(f'<a href="#{anchor}">{html.escape(name)}</a>' for anchor, name, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{html.escape(name)}</h2>{content}</section>' for anchor, name, content in sections
    )
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1>{subtitle}<nav>{nav}</nav></header>"
        f"<main>{body}</main>"
        f"<footer>dcl_keras {__version__}, {generated}. {footer_note}</footer></body></html>\n"
    )


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def tool(name):
    """How to start another tool: bin/<name> beside the running bin/ script of a clone, else `dcl-<name>`."""
    script = sys.argv[0] if sys.argv else ""
    sibling = os.path.join(os.path.dirname(script), name)
    if os.path.basename(os.path.dirname(os.path.abspath(script))) == "bin" and os.path.isfile(sibling):
        return sibling
    return "dcl-" + name.replace("_", "-")


def serving_commands(export_dir, image="IMAGE.jpg"):
    """Shell lines for an export folder (of versions): predict on a file, serve with TF Serving, query it over REST."""
    export_dir, image = shlex.quote(os.path.abspath(export_dir)), shlex.quote(image)
    return [
        f"{tool('predict')} --model={export_dir} {image}",
        f"docker run -p 8501:8501 -v {export_dir}:/models/dcl -e MODEL_NAME=dcl tensorflow/serving",
        "curl -X POST localhost:8501/v1/models/dcl:predict -d "
        '"{\\"signature_name\\": \\"serving_default\\", \\"inputs\\": {\\"images\\": '
        f'[{{\\"b64\\": \\"$(base64 -w0 {image})\\"}}]}}}}"',
    ]


class _Run:
    """What a workdir holds, each piece read on first use (an absent piece raises MissingInput, every time)."""

    def __init__(self, workdir):
        from dcl_keras import cli

        self.workdir = workdir
        self.raw_config = _read_json(
            os.path.join(workdir, "config.json"), "bin/train writes it when it starts: is this a bin/train workdir?"
        )
        self.config = cli.load_workdir_config(workdir)
        self.state = checkpointing.saved_state(workdir)

    def file(self, name):
        return os.path.join(self.workdir, name)

    @functools.cached_property
    def metrics(self):
        """(columns, incomplete rows skipped) of metrics.csv."""
        path = self.file(METRICS_CSV)
        if not os.path.isfile(path):
            raise MissingInput(
                f"No {METRICS_CSV} in {self.workdir}: no epoch has finished yet (training writes a row at the "
                "end of each epoch)."
            )
        return read_metrics(path)

    @functools.cached_property
    def evaluation(self):
        rerun = (
            f"`{tool('evaluate')} --workdir={self.workdir}` writes it from model.keras"
            if os.path.isfile(self.file(FINAL_MODEL))
            else "The run has not finished: rerun its bin/train command, which resumes from the last checkpoint"
        )
        return _read_json(
            self.file(EVALUATION),
            f"{rerun}, then `{tool('report')} --workdir={self.workdir}` rebuilds this page "
            "(a run with eval.enabled=False has none).",
        )

    @functools.cached_property
    def splits(self):
        from dcl_keras.data import datasets

        try:
            return datasets.load_splits(self.config.data)
        except (UserError, OSError) as e:
            raise MissingInput(f"The run's dataset cannot be read now: {e}") from None

    @functools.cached_property
    def model(self):
        """(DCLModel, where it came from): model.keras, else the last checkpoint of an unfinished run."""
        from dcl_keras import saving
        from dcl_keras.models import dcl

        for name in (FINAL_MODEL, checkpointing.CHECKPOINT):
            if os.path.isfile(self.file(name)):
                loaded = saving.load_model(self.file(name), compile=False)
                loaded = getattr(loaded, "dcl_model", loaded)  # rcm.placement=device checkpoints wrap it.
                if not isinstance(loaded, dcl.DCLModel):
                    raise MissingInput(f"{self.file(name)}: expected a DCLModel. Received: {type(loaded).__name__}")
                return loaded, name
        raise MissingInput(f"No {FINAL_MODEL} nor {checkpointing.CHECKPOINT} in {self.workdir}: nothing trained yet.")

    def steps_per_epoch(self):
        if self.config.train.steps_per_epoch:
            return int(self.config.train.steps_per_epoch)
        if self.state.get("completed_epochs"):
            return self.state["step"] // self.state["completed_epochs"]
        from dcl_keras import training

        return training.steps_per_epoch(self.config, self.splits.train)


def _run_subtitle(run):
    epochs = run.config.train.epochs
    try:
        done = len(run.metrics[0]["epoch"])
    except MissingInput:
        done = 0
    finished = os.path.isfile(run.file(EVALUATION))
    status = "finished and evaluated" if finished else "not evaluated (unfinished, or eval.enabled=False)"
    config = run.config
    return (
        f"<p>{html.escape(run.workdir)}</p>"
        f"<p>{html.escape(status)}; {done} of {epochs} epochs logged; "
        f"data {html.escape(config.data.source)}, backbone {html.escape(config.model.backbone)}, "
        f"N={config.rcm.n}, k={config.rcm.k}, alpha/beta/gamma={config.loss.alpha}/{config.loss.beta}/"
        f"{config.loss.gamma}, seed {config.seed}</p>"
    )


def _overview(run):
    cards, note = [], ""
    try:
        report = run.evaluation
        cards += [(f"test {key.replace('top', 'top-')}", report[key]) for key in report if re.fullmatch(r"top\d+", key)]
        cards += [("mean per-class accuracy", report["mean_class_accuracy"]), ("test images", report["num_examples"])]
    except MissingInput as e:
        note = _missing(e)
    try:
        metrics, _ = run.metrics
        cards.append(("epochs logged", f"{len(metrics['epoch'])} / {run.config.train.epochs}"))
    except MissingInput:
        pass
    if run.state.get("step") is not None:
        cards.append(("optimizer steps", run.state["step"]))
    shown = "".join(
        f"<div class=card><b>{value:.4f}</b><span>{html.escape(name)}</span></div>"
        if isinstance(value, float)
        else f"<div class=card><b>{html.escape(str(value))}</b><span>{html.escape(name)}</span></div>"
        for name, value in cards
        if value is not None
    )
    return f"<div class=cards>{shown}</div>{note}"


def _config_section(run):
    from dcl_keras.config import base_config

    fields = sweep._flat(run.raw_config)
    defaults = sweep._flat(json.loads(json.dumps(base_config().to_dict())))
    changed = [(name, value, defaults.get(name, "(new field)")) for name, value in fields.items()]
    changed = [row for row in changed if row[1] != row[2]]
    table = _table(["field", "this run", "default"], changed) if changed else "<p>Every field has its default.</p>"
    full = json.dumps(run.raw_config, indent=2, sort_keys=True)
    return (
        f"<h3>Fields that differ from the defaults</h3>{table}"
        f"<details><summary>Every field (config.json)</summary><pre>{html.escape(full)}</pre></details>"
    )


def _curve_plot(title, metrics, names, ylabel):
    from matplotlib.ticker import MaxNLocator

    figure, ax = _figure(7.0, 3.4)
    epochs = metrics["epoch"]
    marker = "o" if len(epochs) < 30 else None
    for i, name in enumerate(names):
        color = f"C{i % 10}"
        ax.plot(epochs, metrics[name], color=color, marker=marker, markersize=3, label=name)
        if f"val_{name}" in metrics and not np.all(np.isnan(metrics[f"val_{name}"])):
            valid = ~np.isnan(metrics[f"val_{name}"])
            ax.plot(
                epochs[valid],
                metrics[f"val_{name}"][valid],
                "--",
                color=color,
                marker=marker,
                markersize=3,
                label=f"val {name}",
            )
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _img(_figure_uri(figure), title)


def _learning_rate(run, metrics):
    """(epochs, rates, caption): metrics.csv's learning_rate column, else the config's schedule per step."""
    if "learning_rate" in metrics:
        return metrics["epoch"], metrics["learning_rate"], "learning_rate as logged in metrics.csv."
    import keras

    from dcl_keras import optim

    train = run.config.train
    steps = run.steps_per_epoch()
    schedule = optim.learning_rate_schedule(
        train.learning_rate, steps, train.decay_epochs, train.decay_factor, train.epochs, train.warmup_epochs
    )
    at = np.unique(np.linspace(0, steps * train.epochs - 1, LEARNING_RATE_POINTS).astype(int))
    rates = [float(keras.ops.convert_to_numpy(schedule(int(step)))) if callable(schedule) else schedule for step in at]
    return (
        (at + 1) / steps,
        np.asarray(rates),
        f"metrics.csv has no learning_rate column: the rate of each step from the config's schedule "
        f"({steps} steps per epoch); the heads run at {train.head_multiplier}x.",
    )


def _curves_section(run):
    metrics, skipped = run.metrics
    if not len(metrics["epoch"]):
        raise MissingInput(
            f"{run.file(METRICS_CSV)} holds no complete epoch yet. Received: {skipped} incomplete row(s)"
        )
    names = [name for name in metrics if name not in ("epoch", "learning_rate") and not name.startswith("val_")]
    losses = [name for name in names if name.endswith("loss")]
    accuracy = [name for name in names if "top" in name or name.endswith("accuracy")]
    other = [name for name in names if name not in losses + accuracy]
    groups = [
        ("Loss terms (loss: their weighted sum; dashed: validation)", losses, "loss"),
        ("Accuracy (training; dashed: validation)", accuracy, "accuracy"),
        ("Other metrics", other, "value"),
    ]
    plots = [_curve_plot(title, metrics, group, ylabel) for title, group, ylabel in groups if group]
    try:
        epochs, rates, caption = _learning_rate(run, metrics)
        figure, ax = _figure(7.0, 3.4)
        ax.plot(epochs, rates, color="C3", label="backbone")
        if run.config.train.head_multiplier != 1:
            ax.plot(epochs, rates * run.config.train.head_multiplier, "--", color="C4", label="heads")
        ax.set_ylim(bottom=0)
        _legend_outside(ax)
        ax.set_title("Learning rate", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        plots.append(_img(_figure_uri(figure), "Learning rate", html.escape(caption)))
    except UserError as e:  # The steps per epoch come from a dataset that cannot be read now.
        plots.append(_missing(f"No learning-rate curve: {e}"))
    note = (
        f"<p>{skipped} incomplete row(s) of {METRICS_CSV} skipped (a run killed while writing).</p>" if skipped else ""
    )
    return note + f"<div class=grid>{''.join(plots)}</div>"


def _figures_section(run):
    report = run.evaluation
    rows = [
        (key.replace("top", "top-"), f"{report[key]:.4f}")
        for key in report
        if key.startswith("top") and isinstance(report[key], float)
    ]
    rows.append(("mean per-class accuracy", f"{report['mean_class_accuracy']:.4f}"))
    rows.append(("images", report["num_examples"]))
    split = f"{report.get('split', 'test')} split ({report.get('split_name', '?')})"
    parts = [f"<p>{html.escape(split)}{', flip-averaged' if report.get('flip') else ''}.</p>"]
    parts.append(_table(["figure", "value"], rows, numeric=(1,)))
    before = report.get("before_precise_bn")
    if before:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in before.items() if isinstance(v, float))
        parts.append(f"<p>Before precise BN ({before.get('batchnorm_layers')} layers re-estimated): {shown}.</p>")
    attributes = report.get("attribute_accuracy")
    if attributes:
        parts.append("<h3>Accuracy per attribute</h3>")
        parts.append(
            "<p>The classes are attribute combinations: a prediction is right on an attribute when the predicted "
            "class has the true class's value.</p>"
        )
        parts.append(
            _table(
                ["attribute", "accuracy", "chance"],
                [(name, f"{a['accuracy']:.4f}", f"{a['chance']:.4f}") for name, a in attributes.items()],
                numeric=(1, 2),
            )
        )
        figure, ax = _figure(2.6 + 1.1 * len(attributes), 2.8)
        x = np.arange(len(attributes))
        ax.bar(x - 0.2, [a["accuracy"] for a in attributes.values()], 0.4, label="accuracy")
        ax.bar(x + 0.2, [a["chance"] for a in attributes.values()], 0.4, color="#afb8c1", label="chance")
        ax.set_xticks(x, list(attributes))
        ax.set_ylim(0, 1)
        _legend_outside(ax)
        ax.set_title("Per-attribute accuracy", fontsize=10)
        parts.append(_img(_figure_uri(figure), "Per-attribute accuracy"))
    per_class = {name: value for name, value in report.get("per_class_accuracy", {}).items() if value is not None}
    if per_class:
        worst = sorted(per_class.items(), key=lambda item: item[1])[:WORST_CLASSES]
        parts.append(f"<h3>The {len(worst)} least accurate classes</h3>")
        parts.append(_table(["class", "accuracy"], [(name, f"{value:.4f}") for name, value in worst], numeric=(1,)))
    return "".join(parts)


def _confusion_section(run):
    from dcl_keras import evaluation

    report = run.evaluation
    names = report["class_names"]
    uri = _uri(lambda f: evaluation.plot_confusion_matrix(evaluation.confusion_matrix(report), names, f))
    return _img(uri, "Confusion matrix", "Rows: true class, normalised to 1; columns: predicted class.")


def _pairs_section(run):
    report = run.evaluation
    pairs = report.get("most_confused_pairs", [])
    if not pairs:
        return "<p>No test image was taken for another class.</p>"
    table = _table(
        ["class a", "class b", "a taken for b", "b taken for a"],
        [(p["classes"][0], p["classes"][1], p["a_as_b"], p["b_as_a"]) for p in pairs],
        numeric=(2, 3),
    )
    path = run.file(CONFUSED_PAIRS_PNG)
    if not os.path.isfile(path):
        return table + _missing(f"No {CONFUSED_PAIRS_PNG} in {run.workdir}: `{tool('evaluate')}` draws it.")
    with open(path, "rb") as f:
        png = f.read()
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return table + _img(uri, "Most-confused pairs", "Per pair: test images of a taken for b, then of b taken for a.")


def _rcm_section(run):
    from PIL import Image

    from dcl_keras.viz.rcm_grid import rcm_grid

    config = run.config
    grid = rcm_grid(
        run.splits.train,
        image_size=config.input.image_size,
        resize_size=config.input.resize_size,
        n=config.rcm.n,
        k=config.rcm.k,
        num_images=RCM_IMAGES,
        seed=config.seed,
        rotation=config.input.rotation,
        resampling=config.input.resampling,
    )
    caption = (
        f"Training images as the model sees them: the original (left) and its destructed copy (right), "
        f"N={config.rcm.n} grid drawn, regions swapped within k={config.rcm.k}."
    )
    scale = max(1, RCM_CELL_PX // config.input.image_size)  # Small crops drawn larger, pixels kept sharp.
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return _img(_uri(lambda f: grid.save(f, format="PNG")), "RCM examples", caption)


def _cam_section(run, num_images):
    from dcl_keras import analysis
    from dcl_keras.data import datasets, pipeline
    from dcl_keras.models import dcl
    from dcl_keras.viz.attention import plot_cam_grid

    config = run.config
    split = run.splits.test
    model, source = run.model
    batch = pipeline.eval_batches(
        datasets.spread(split, num_images),
        batch_size=num_images,
        image_size=config.input.image_size,
        resize_size=config.input.resize_size,
        resampling=config.input.resampling,
    )
    images, labels = (tensor.numpy() for tensor in next(iter(batch)))
    names = list(model.class_names or split.class_names)
    maps = analysis.upsample(analysis.class_activation_maps(model, images, labels), images.shape[1])
    _, logits = analysis.features_and_logits(model, images)
    captions = [f"pred {names[int(i)]}"[: CLASS_NAME_CHARS + 5] for i in np.argmax(logits, axis=1)]
    uri = _uri(
        lambda f: plot_cam_grid(
            np.clip(images, 0, 255).astype(np.uint8),
            [names[int(i)][:CLASS_NAME_CHARS] for i in labels],
            {source: (maps, captions)},
            f,
        )
    )
    note = "" if source == FINAL_MODEL else f" The run has no {FINAL_MODEL} yet: these come from its last checkpoint."
    classifier_params = dcl.classifier_model(model).count_params()
    return _img(
        uri,
        "CAM overlays",
        f"Test images (evaluation crop), each with the class activation map of its true class from {source}.{note} "
        f"Model: {model.count_params():,} parameters in training, {classifier_params:,} in the exported classifier.",
    )


def _export_section(run):
    export_dir = run.config.export.dir or run.file("export")
    versions = sorted(int(d) for d in os.listdir(export_dir) if d.isdigit()) if os.path.isdir(export_dir) else []
    files = [
        ("model (Keras)", run.file(FINAL_MODEL)),
        ("last checkpoint", run.file(checkpointing.CHECKPOINT)),
        ("TensorBoard logs", run.file("tensorboard")),
    ]
    rows = [(name, path, "yes" if os.path.exists(path) else "no") for name, path in files]
    parts = [_table(["what", "path", "present"], rows)]
    parts.append(f"<pre>tensorboard --logdir={html.escape(shlex.quote(run.file('tensorboard')))}</pre>")
    if not versions:
        note = "export.enabled=False" if not run.config.export.enabled else "the run has not exported yet"
        parts.append(_missing(f"No export version in {export_dir} ({note}): `{tool('export')}` writes one."))
        return "".join(parts)
    latest = os.path.join(export_dir, str(versions[-1]))
    parts.append(
        f"<p>SavedModel versions {', '.join(map(str, versions))} in <code>{html.escape(export_dir)}</code>, the folder "
        "TF Serving watches (it serves the highest version). Signatures: <code>serving_default</code> (encoded "
        "image bytes), <code>serve_pixels</code> (float pixels), <code>classify</code> (tf.Example).</p>"
    )
    parts.append(f"<pre>{html.escape(chr(10).join(serving_commands(export_dir)))}</pre>")
    parts.append(f"<p>Latest version: <code>{html.escape(latest)}</code></p>")
    return "".join(parts)


def build_report(workdir, num_images=CAM_IMAGES):
    """The HTML of a workdir's report and the list of what it could not show (see `write_report`)."""
    run = _Run(workdir)
    missing = []

    def section(anchor, title, build):
        try:
            return anchor, title, build()
        except UserError as e:  # MissingInput, or what the workdir's config or data refuses now.
            missing.append(f"{title}: {e}")
            return anchor, title, _missing(e)

    sections = [
        ("overview", "Overview", _overview(run)),
        section("config", "Config", lambda: _config_section(run)),
        section("curves", "Training curves", lambda: _curves_section(run)),
        section("figures", "Test figures", lambda: _figures_section(run)),
        section("confusion", "Confusion matrix", lambda: _confusion_section(run)),
        section("pairs", "Most-confused pairs", lambda: _pairs_section(run)),
        section("rcm", "RCM examples", lambda: _rcm_section(run)),
        section("cam", "Class activation maps", lambda: _cam_section(run, num_images)),
        section("export", "Files, export and serving", lambda: _export_section(run)),
    ]
    title = f"DCL run {os.path.basename(os.path.normpath(workdir))}"
    return _page(title, _run_subtitle(run), sections), missing


def write_report(workdir, num_images=CAM_IMAGES):
    """Writes `<workdir>/report.html` (atomically); returns (its path, what it could not show).

    Args:
        workdir: str, a bin/train workdir (config.json at least).
        num_images: int, test images with CAM overlays.

    Each part the workdir cannot give yet (no metrics.csv before the first
    epoch, no evaluation.json before the end) is said on the page and in the
    returned list, one line each.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"No bin/train workdir at {workdir}. Received: workdir={workdir!r}")
    if num_images < 1:
        raise UserError(f"num_images: expected 1 or more test images for the CAMs. Received: {num_images}")
    text, missing = build_report(workdir, num_images)  # MissingInput without config.json: no run to report on.
    return _write_atomic(os.path.join(workdir, REPORT), text), missing


def _sweep_plot(metric, rows, summary):
    """Each seed of each grid point as a point (its seed written beside it), then the point's mean +- std."""
    points = list(summary)
    figure, ax = _figure(max(5.5, 1.3 * len(points) + 2.6), 3.6)
    labels = {"seeds": "seeds (number: the seed)", "mean": "mean +- sample std"}  # Each in the legend once.
    for i, point in enumerate(points):
        seeds = [(row["seed"], row[metric]) for row in rows if row["point"] == point and metric in row]
        x = i - 0.1 + (np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else np.zeros(len(seeds)))
        if seeds:
            ax.scatter(
                x, [value for _, value in seeds], s=16, color="#6e7781", zorder=3, label=labels.pop("seeds", None)
            )
        for at, (seed, value) in zip(x, seeds, strict=True):
            ax.annotate(str(seed), (at, value), xytext=(3, 2), textcoords="offset points", fontsize=6)
        if metric in summary[point]["stats"]:
            mean, std, _ = summary[point]["stats"][metric]
            ax.errorbar(
                i + 0.18, mean, yerr=std or 0, fmt="o", color="C0", capsize=4, zorder=4, label=labels.pop("mean", None)
            )
    slanted = max(map(len, points)) > 12
    ax.set_xticks(range(len(points)), points, rotation=20 if slanted else 0, ha="right" if slanted else "center")
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_ylabel(metric)
    ax.set_title(metric, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _legend_outside(ax)
    return _img(_figure_uri(figure), f"{metric} per grid point")


def write_sweep_report(sweep_dir, rows, summary, invocations=()):
    """Writes `<sweep_dir>/report.html` from `sweep.collect`'s rows and summary; returns its path.

    One plot per metric of `sweep.METRICS` that has values (each seed a
    point, the mean with a +- sample std error bar per grid point), the table
    of mean +- std, and a link to each run's report.html.
    """
    sweep_dir = os.path.abspath(sweep_dir)
    finished = [row for row in rows if row["status"] == "finished"]
    metrics = [m for m in sweep.METRICS if any(m in entry["stats"] for entry in summary.values())]
    plots = [_sweep_plot(metric, finished, summary) for metric in metrics]
    table_rows = []
    for point, entry in summary.items():
        cells = [point, f"{entry['finished']}/{entry['planned']}"]
        for metric in metrics:
            mean, std, worst = entry["stats"].get(metric, (None, None, None))
            shown = "" if mean is None else f"{mean:.4f} +- {std:.4f}" if std is not None else f"{mean:.4f}"
            cells += [shown, "" if worst is None else f"{worst:.4f}"]
        table_rows.append(cells)
    header = ["point", "seeds"] + [f"{m} {part}" for m in metrics for part in ("mean +- std", "min")]
    runs = []
    for row in rows:
        page = os.path.join(row["workdir"], REPORT)
        if os.path.isfile(page):
            href = urllib.parse.quote(os.path.relpath(page, sweep_dir))
            link = _Raw(f'<a href="{html.escape(href)}">{html.escape(os.path.relpath(page, sweep_dir))}</a>')
        else:
            link = "no report.html" if row["status"] == "finished" else "not finished"
        values = [f"{row[m]:.4f}" if isinstance(row.get(m), float) else "" for m in metrics]
        runs.append([row["point"], row["seed"], row["status"], *values, link])
    commands = "".join(f"<pre>{html.escape(line)}</pre>" for line in invocations)
    numeric = tuple(range(2, 2 + 2 * len(metrics)))
    sections = [
        (
            "plots",
            "Per grid point",
            f"<div class=grid>{''.join(plots)}</div>" if plots else _missing("No finished run yet."),
        ),
        ("table", "Mean +- sample std over seeds", _table(header, table_rows, numeric) + "<p>min: the worst seed.</p>"),
        (
            "runs",
            "Runs",
            _table(["point", "seed", "status", *metrics, "report"], runs, tuple(range(3, 3 + len(metrics)))),
        ),
        ("commands", "Produced by", commands or "<p>(no invocation recorded)</p>"),
    ]
    subtitle = f"<p>{html.escape(sweep_dir)}</p><p>{len(finished)} of {len(rows)} runs finished.</p>"
    text = _page(f"DCL sweep {os.path.basename(sweep_dir)}", subtitle, sections)
    return _write_atomic(os.path.join(sweep_dir, REPORT), text)
