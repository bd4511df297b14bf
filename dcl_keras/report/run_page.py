"""A run's report.html: config, training curves, test figures, confusion, RCM and CAM pictures, export.

The page reads the run folder through `dcl_keras.workdir`. Each part the run
cannot give yet (no metrics.csv before the first epoch, no evaluation.json
before the end) is said in its place and returned in a list, one line each.
"""

import functools
import html
import json
import os
import re
import shlex

import numpy as np

from dcl_keras import checkpointing, cli
from dcl_keras import workdir as run_folder
from dcl_keras.errors import UserError
from dcl_keras.report import page, plots

CAM_IMAGES = 4
RCM_IMAGES = 3
RCM_CELL_PX = 160  # Crops smaller than this are enlarged in the RCM picture.
CLASS_NAME_CHARS = 36  # Class names in the CAM picture are cut to this length.
WORST_CLASSES = 10
LEARNING_RATE_POINTS = 300


class MissingInput(UserError):
    """What a part of the report needs cannot be had now (a dataset, a complete epoch): the page says so there."""


MISSING = (MissingInput, run_folder.MissingFile)  # What the page says in the place of a part it cannot show.


class _Run:
    """What a workdir holds, each piece read on first use (an absent piece raises MissingFile, every time)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.raw_config = run_folder.read_config(workdir)
        self.config = run_folder.load_config(workdir)
        self.state = checkpointing.saved_state(workdir)

    def file(self, name):
        return os.path.join(self.workdir, name)

    @functools.cached_property
    def metrics(self):
        """(columns, incomplete rows skipped) of metrics.csv."""
        return run_folder.read_metrics(self.workdir)

    @functools.cached_property
    def evaluation(self):
        rerun = (
            f"`{cli.tool('evaluate')} --workdir={self.workdir}` writes it from {run_folder.FINAL_MODEL}"
            if os.path.isfile(self.file(run_folder.FINAL_MODEL))
            else "The run has not finished: rerun its bin/train command, which resumes from the last checkpoint"
        )
        return run_folder.read_evaluation(
            self.workdir,
            f"{rerun}, then `{cli.tool('report')} --workdir={self.workdir}` rebuilds this page "
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
        return run_folder.load_trained_model(self.workdir)

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
    except MISSING:
        done = 0
    finished = run_folder.is_finished(run.workdir)
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
    except MISSING as e:
        note = page.missing(e)
    try:
        metrics, _ = run.metrics
        cards.append(("epochs logged", f"{len(metrics['epoch'])} / {run.config.train.epochs}"))
    except MISSING:
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

    fields = run_folder.flatten(run.raw_config)
    defaults = run_folder.flatten(json.loads(json.dumps(base_config().to_dict())))
    changed = [(name, value, defaults.get(name, "(new field)")) for name, value in fields.items()]
    changed = [row for row in changed if row[1] != row[2]]
    table = page.table(["field", "this run", "default"], changed) if changed else "<p>Every field has its default.</p>"
    full = json.dumps(run.raw_config, indent=2, sort_keys=True)
    return (
        f"<h3>Fields that differ from the defaults</h3>{table}"
        f"<details><summary>Every field ({run_folder.CONFIG})</summary><pre>{html.escape(full)}</pre></details>"
    )


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
            f"{run.file(run_folder.METRICS)} holds no complete epoch yet. Received: {skipped} incomplete row(s)"
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
    shown = [plots.curves(title, metrics, group, ylabel) for title, group, ylabel in groups if group]
    try:
        epochs, rates, caption = _learning_rate(run, metrics)
        shown.append(plots.learning_rate(epochs, rates, run.config.train.head_multiplier, html.escape(caption)))
    except UserError as e:  # The steps per epoch come from a dataset that cannot be read now.
        shown.append(page.missing(f"No learning-rate curve: {e}"))
    note = (
        f"<p>{skipped} incomplete row(s) of {run_folder.METRICS} skipped (a run killed while writing).</p>"
        if skipped
        else ""
    )
    return note + f"<div class=grid>{''.join(shown)}</div>"


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
    parts.append(page.table(["figure", "value"], rows, numeric=(1,)))
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
            page.table(
                ["attribute", "accuracy", "chance"],
                [(name, f"{a['accuracy']:.4f}", f"{a['chance']:.4f}") for name, a in attributes.items()],
                numeric=(1, 2),
            )
        )
        parts.append(plots.attribute_accuracy(attributes))
    per_class = {name: value for name, value in report.get("per_class_accuracy", {}).items() if value is not None}
    if per_class:
        worst = sorted(per_class.items(), key=lambda item: item[1])[:WORST_CLASSES]
        parts.append(f"<h3>The {len(worst)} least accurate classes</h3>")
        parts.append(page.table(["class", "accuracy"], [(name, f"{value:.4f}") for name, value in worst], numeric=(1,)))
    return "".join(parts)


def _confusion_section(run):
    from dcl_keras import evaluation

    report = run.evaluation
    names = report["class_names"]
    uri = page.png_uri(lambda f: evaluation.plot_confusion_matrix(evaluation.confusion_matrix(report), names, f))
    return page.image(uri, "Confusion matrix", "Rows: true class, normalised to 1; columns: predicted class.")


def _pairs_section(run):
    report = run.evaluation
    pairs = report.get("most_confused_pairs", [])
    if not pairs:
        return "<p>No test image was taken for another class.</p>"
    table = page.table(
        ["class a", "class b", "a taken for b", "b taken for a"],
        [(p["classes"][0], p["classes"][1], p["a_as_b"], p["b_as_a"]) for p in pairs],
        numeric=(2, 3),
    )
    path = run.file(run_folder.CONFUSED_PAIRS_PNG)
    if not os.path.isfile(path):
        return table + page.missing(
            f"No {run_folder.CONFUSED_PAIRS_PNG} in {run.workdir}: `{cli.tool('evaluate')}` draws it."
        )
    with open(path, "rb") as f:
        png = f.read()
    return table + page.image(
        page.png_uri(lambda out: out.write(png)),
        "Most-confused pairs",
        "Per pair: test images of a taken for b, then of b taken for a.",
    )


def _rcm_section(run):
    from PIL import Image

    from dcl_keras.data import specs
    from dcl_keras.viz.rcm_grid import rcm_grid

    config = run.config
    grid = rcm_grid(run.splits.train, specs.TrainSpec.from_config(config), num_images=RCM_IMAGES)
    caption = (
        f"Training images as the model sees them: the original (left) and its destructed copy (right), "
        f"N={config.rcm.n} grid drawn, regions swapped within k={config.rcm.k}."
    )
    scale = max(1, RCM_CELL_PX // config.input.image_size)  # Small crops drawn larger, pixels kept sharp.
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return page.image(page.png_uri(lambda f: grid.save(f, format="PNG")), "RCM examples", caption)


def _cam_section(run, num_images):
    from dcl_keras import analysis
    from dcl_keras.data import datasets, specs
    from dcl_keras.models import dcl
    from dcl_keras.viz.attention import plot_cam_grid

    config = run.config
    split = run.splits.test
    model, source = run.model
    images, labels = datasets.spread_crops(split, specs.EvalSpec.from_config(config), num_images)
    names = list(model.class_names or split.class_names)
    maps = analysis.upsample(analysis.class_activation_maps(model, images, labels), images.shape[1])
    _, logits = analysis.features_and_logits(model, images)
    captions = [f"pred {names[int(i)]}"[: CLASS_NAME_CHARS + 5] for i in np.argmax(logits, axis=1)]
    uri = page.png_uri(
        lambda f: plot_cam_grid(
            np.clip(images, 0, 255).astype(np.uint8),
            [names[int(i)][:CLASS_NAME_CHARS] for i in labels],
            {source: (maps, captions)},
            f,
        )
    )
    note = (
        ""
        if source == run_folder.FINAL_MODEL
        else f" The run has no {run_folder.FINAL_MODEL} yet: these come from its last checkpoint."
    )
    classifier_params = dcl.classifier_model(model).count_params()
    return page.image(
        uri,
        "CAM overlays",
        f"Test images (evaluation crop), each with the class activation map of its true class from {source}.{note} "
        f"Model: {model.count_params():,} parameters in training, {classifier_params:,} in the exported classifier.",
    )


def _export_section(run):
    export_dir = run_folder.export_dir(run.workdir, run.config.export.dir)
    versions = sorted(int(d) for d in os.listdir(export_dir) if d.isdigit()) if os.path.isdir(export_dir) else []
    files = [
        ("model (Keras)", run.file(run_folder.FINAL_MODEL)),
        ("last checkpoint", run.file(run_folder.CHECKPOINT)),
        ("TensorBoard logs", run.file(run_folder.TENSORBOARD)),
    ]
    rows = [(name, path, "yes" if os.path.exists(path) else "no") for name, path in files]
    parts = [page.table(["what", "path", "present"], rows)]
    parts.append(f"<pre>tensorboard --logdir={html.escape(shlex.quote(run.file(run_folder.TENSORBOARD)))}</pre>")
    if not versions:
        note = "export.enabled=False" if not run.config.export.enabled else "the run has not exported yet"
        parts.append(page.missing(f"No export version in {export_dir} ({note}): `{cli.tool('export')}` writes one."))
        return "".join(parts)
    latest = os.path.join(export_dir, str(versions[-1]))
    parts.append(
        f"<p>SavedModel versions {', '.join(map(str, versions))} in <code>{html.escape(export_dir)}</code>, the folder "
        "TF Serving watches (it serves the highest version). Signatures: <code>serving_default</code> (encoded "
        "image bytes), <code>serve_pixels</code> (float pixels), <code>serve_crops</code> (crops at the input size, "
        "the one to convert with tf2onnx), <code>serve_embeddings</code> (unit-length features from image bytes, "
        "for <code>bin/gallery</code>), <code>classify</code> (tf.Example).</p>"
    )
    parts.append(f"<pre>{html.escape(chr(10).join(cli.serving_commands(export_dir)))}</pre>")
    parts.append(f"<p>Latest version: <code>{html.escape(latest)}</code></p>")
    return "".join(parts)


def build_report(workdir, num_images=CAM_IMAGES):
    """The HTML of a workdir's report and the list of what it could not show (see `write_report`)."""
    run = _Run(workdir)
    missing = []

    def section(anchor, title, build):
        try:
            return anchor, title, build()
        except UserError as e:  # MissingFile, MissingInput, or what the workdir's config or data refuses now.
            missing.append(f"{title}: {e}")
            return anchor, title, page.missing(e)

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
    return page.page(title, _run_subtitle(run), sections), missing


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
    text, missing = build_report(workdir, num_images)  # MissingFile without config.json: no run to report on.
    return run_folder.write_text(os.path.join(workdir, run_folder.REPORT), text), missing
