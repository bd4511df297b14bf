"""report.html (dcl_keras/report/run_page.py): written at the end of bin/train (with the run's summary), rebuilt by
bin/report, per sweep (sweep_page.py), in chromium. The tests that need a finished bin/train run share one."""

import base64
import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from dcl_keras import commands, report, sweep
from dcl_keras import workdir as run_folder
from dcl_keras.errors import UserError

from helpers import ROOT, run_bin, tiny_dcl_model

CHROMIUM = "/usr/bin/chromium"
RUN_SECTIONS = ("overview", "config", "curves", "figures", "confusion", "pairs", "rcm", "cam", "export")
# Injected into a test copy of a page, before its Content-Security-Policy (which would block it): records load
# errors, CSP violations and console errors and warnings, then writes them and each image's naturalWidth into the DOM.
BROWSER_CHECK = """<script>
window.problems = [];
addEventListener("error", (e) => problems.push("error: " + (e.message || (e.target.src || "").slice(0, 80))), true);
addEventListener("securitypolicyviolation", (e) => problems.push("blocked by the page's CSP: " + e.blockedURI));
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { problems.push("console." + level + ": " + args.join(" ")); original(...args); };
}
addEventListener("load", () => {
  const images = Array.from(document.images);
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({
    widths: images.map((image) => (image.complete ? image.naturalWidth : 0)),
    alts: images.map((image) => image.alt),
    problems: problems,
  });
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium (`make test` installs it): missing, the browser tests skip here and fail under CI."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"{CHROMIUM} not found: `make browser` (part of `make test`) installs Debian's chromium"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; under CI the browser test of report.html must run. Received: CI={os.environ['CI']}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def finished_run(tiny_config, tmp_path_factory):
    """bin/train on the tiny config with a validation split: (workdir, its CompletedProcess)."""
    workdir = tmp_path_factory.mktemp("report") / "run"
    done = run_bin(
        "train",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        f"--config.data.demo.cache_dir={tiny_config.data.demo.cache_dir}",
        f"--config.data.demo.train_per_class={tiny_config.data.demo.train_per_class}",
        f"--config.data.demo.test_per_class={tiny_config.data.demo.test_per_class}",
        "--config.data.val_fraction=0.25",
        "--config.train.validation_freq=1",
        "--config.train.verbose=0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A sweep of 2 grid points x 2 seeds, finished, with a report.html in three of its four runs."""
    folder = tmp_path_factory.mktemp("sweep")
    runs = []
    for point, values in (("arm=baseline", (0.40, 0.50)), ("arm=dcl", (0.55, 0.61))):
        for seed, value in enumerate(values):
            workdir = folder / sweep.slug(point) / f"seed_{seed}"
            workdir.mkdir(parents=True)
            (workdir / run_folder.EVALUATION).write_text(
                json.dumps({"top1": value, "mean_class_accuracy": value - 0.01})
            )
            if (point, seed) != ("arm=dcl", 1):
                (workdir / report.REPORT).write_text("<!DOCTYPE html><title>run</title>")
            runs.append(dict(point=point, seed=seed, workdir=str(workdir), config="x", overrides={}, command=[]))
    sweep.save_plan(runs, str(folder), "bin/sweep --grid=ablation --seeds=0,1")
    commands.collect_sweep(str(folder))
    return folder


def _images(page):
    return re.findall(r'<img src="([^"]*)"', page)


def test_bin_train_ends_with_the_summary_and_writes_the_report(finished_run):
    workdir, done = finished_run
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    export_dir = str(workdir / "export")
    summary = done.stdout[done.stdout.index("Done: ") :]
    assert (
        f"test top-1 {evaluation['top1']:.4f}, mean per-class accuracy {evaluation['mean_class_accuracy']:.4f}"
        in summary
    )
    assert f"model     {workdir / 'model.keras'}" in summary
    assert f"export    {workdir / 'export' / '1'}  (version 1 of {export_dir}," in summary
    assert f"report    {workdir / 'report.html'}" in summary
    predict = re.search(rf"\n    (\S*predict) --model={re.escape(export_dir)} (\S+)\n", summary)
    assert predict and os.path.isfile(predict.group(2)), summary  # One of the demo's test images.
    assert predict.group(1) == os.path.join(ROOT, "bin", "predict")  # bin/train's sibling, as it was started.
    docker = f"docker run -p 8501:8501 -v {export_dir}:/models/dcl -e MODEL_NAME=dcl tensorflow/serving"
    assert f"\n    {docker}\n" in summary and "localhost:8501/v1/models/dcl:predict" in summary
    assert summary.rstrip().endswith(f"open {workdir / 'report.html'}")  # The last line: xdg-open (open on macOS).
    assert (workdir / "report.html").stat().st_size > 10_000


def test_the_run_report_shows_every_part_with_images_inlined_and_nothing_to_load(finished_run):
    workdir, _ = finished_run
    page = (workdir / "report.html").read_text()
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    for anchor in RUN_SECTIONS:
        assert f'<section id="{anchor}">' in page, anchor
    assert 'class="missing"' not in page  # A finished run: nothing missing.
    assert "<script" not in page.lower() and not re.search(r'(src|href)="(https?:)?//', page)
    images = _images(page)
    # Losses, accuracy, other metrics, learning rate, attributes, confusion, pairs, RCM, CAM.
    assert len(images) == 9 and all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        with Image.open(_png_file(src)) as image:
            assert image.width > 50 and image.height > 50
    assert "<td>model.backbone</td><td>tiny</td><td>resnet50</td>" in page  # The config's changed fields.
    assert f"<b>{evaluation['top1']:.4f}</b><span>test top-1</span>" in page
    assert "<td>wing</td>" in page and "<td>tail</td>" in page  # Per attribute: the demo's classes.
    assert all(name in page for pair in evaluation["most_confused_pairs"] for name in pair["classes"])
    assert f"-v {workdir / 'export'}:/models/dcl" in page and "SavedModel versions 1" in page


def _png_file(src):
    import io

    return io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))


def _open_in_chromium(browser, page_path, tmp_path):
    """(what the page's images and console gave, the screenshot's path) of a page opened in headless chromium."""
    text = page_path.read_text()
    checked = tmp_path / f"checked_{page_path.parent.name}.html"  # Next to nothing: the page must need nothing.
    checked.write_text(text.replace("<head>", "<head>" + BROWSER_CHECK, 1))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run([browser, *flags, "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"chromium gave no result (exit {dom.returncode}): {dom.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    result["console"] = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    screenshot = tmp_path / f"{page_path.parent.name}.png"
    shot = subprocess.run(
        [
            browser,
            *flags,
            f"--screenshot={screenshot}",
            "--window-size=1280,2000",
            "--hide-scrollbars",
            page_path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    return result, screenshot


@pytest.mark.parametrize("which", ["run", "sweep"])
def test_the_reports_load_every_image_with_no_console_error_in_chromium(which, chromium, request, tmp_path):
    folder = request.getfixturevalue("finished_run")[0] if which == "run" else request.getfixturevalue("sweep_dir")
    result, screenshot = _open_in_chromium(chromium, folder / "report.html", tmp_path)
    assert len(result["widths"]) == len(_images((folder / "report.html").read_text())) >= 2
    assert all(width > 0 for width in result["widths"]), list(zip(result["alts"], result["widths"], strict=True))
    assert result["problems"] == [] and result["console"] == []
    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.size == (1280, 2000)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # Drawn, not a blank page.


def test_bin_report_rebuilds_the_report_of_a_run_killed_before_its_evaluation(finished_run, tmp_path):
    """Config, metrics and checkpoint only: the CAMs come from the checkpoint, the page names what is missing."""
    workdir = tmp_path / "killed"
    shutil.copytree(finished_run[0] / "checkpoints", workdir / "checkpoints")
    for name in ("config.json", "metrics.csv"):
        shutil.copy(finished_run[0] / name, workdir)
    done = run_bin("report", f"--workdir={workdir}", "--num_images=2")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    missing = [line for line in done.stdout.splitlines() if line.startswith("missing: ")]
    assert [line.split(":")[1] for line in missing] == [" Test figures", " Confusion matrix", " Most-confused pairs"]
    assert all("No evaluation.json" in line and "rerun its bin/train command" in line for line in missing)
    assert done.stdout.strip().endswith(f"report: {workdir / 'report.html'}")
    page = (workdir / "report.html").read_text()
    assert "2 of 2 epochs logged" in page and "from checkpoints/latest.keras" in page
    assert "No export version in" in page
    assert len(_images(page)) == 6  # Four curves, RCM, CAMs.


def _started_workdir(config, folder, metrics=None):
    """A workdir as bin/train leaves it when stopped early: its config.json and, optionally, metrics.csv."""
    folder.mkdir()
    run_folder.write_json(str(folder / "config.json"), config.to_dict())
    if metrics is not None:
        (folder / "metrics.csv").write_text(metrics)
    return folder


@pytest.mark.backend_agnostic
def test_a_run_stopped_mid_way_gets_a_report_that_says_what_is_missing(tiny_config, tmp_path):
    """Killed while writing its second row of metrics.csv; no state.json, so the rate's steps come from the data."""
    metrics = (
        "epoch,classifier_loss,classifier_top1,loss,val_classifier_loss,val_classifier_top1,val_loss\n"
        "0,1.5,0.28,2.6,NA,NA,NA\n"
        "1,1.3,0.4"
    )
    workdir = _started_workdir(tiny_config, tmp_path / "stopped", metrics)
    model = tiny_dcl_model(tiny_config.input.image_size, n=4, classes=4, width=8)
    (workdir / "checkpoints").mkdir()
    model.save(str(workdir / "checkpoints" / "latest.keras"))
    path, missing = report.write_report(str(workdir), num_images=2)
    assert [line.split(":")[0] for line in missing] == ["Test figures", "Confusion matrix", "Most-confused pairs"]
    page = open(path).read()
    assert "1 incomplete row(s) of metrics.csv skipped" in page and "1 of 2 epochs logged" in page
    assert "(6 steps per epoch)" in page  # 24 training images, batch 4.
    assert "from checkpoints/latest.keras" in page and "No evaluation.json in" in page
    assert len(_images(page)) == 5  # Loss, accuracy, learning rate, RCM, CAMs.
    columns, skipped = run_folder.read_metrics_file(str(workdir / "metrics.csv"))
    assert skipped == 1 and list(columns["epoch"]) == [1.0] and np.isnan(columns["val_loss"][0])


@pytest.mark.backend_agnostic
def test_a_started_workdir_a_broken_file_and_a_wrong_folder_are_named(tiny_config, tmp_path):
    workdir = _started_workdir(tiny_config, tmp_path / "started")
    (workdir / "evaluation.json").write_text('{"top1": 0.5, ')  # Not what evaluation writes: it writes atomically.
    path, missing = report.write_report(str(workdir))
    page = open(path).read()
    assert any(line.startswith("Training curves: No metrics.csv in") for line in missing)
    assert any(line.startswith("Class activation maps: No model.keras nor") for line in missing)
    broken = [line for line in missing if line.startswith("Test figures: ")][0]
    assert f"{workdir / 'evaluation.json'} cannot be read as JSON" in broken
    assert broken.endswith("Received: 14 bytes, b'{\"top1\": 0.5, '")
    assert "cannot be read as JSON" in page and len(_images(page)) == 1  # The RCM examples need only the config.
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match=r"No config.json in .*other\. bin/train writes it when it starts"):
        report.write_report(str(tmp_path / "other"))
    with pytest.raises(FileNotFoundError, match="Received: workdir="):
        report.write_report(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="Received: 0"):
        report.write_report(str(workdir), num_images=0)


def test_the_sweep_report_plots_each_metric_per_point_and_links_each_run(sweep_dir):
    page = (sweep_dir / "report.html").read_text()
    images = _images(page)
    assert len(images) == 2  # top1 and mean_class_accuracy: the metrics with values.
    assert 'alt="top1 per grid point"' in page and 'alt="mean_class_accuracy per grid point"' in page
    for src in images:
        with Image.open(_png_file(src)) as image:
            assert image.width > 300
    links = re.findall(r'<a href="([^#"][^"]*)">', page)  # Not the page's own #anchors.
    assert sorted(links) == [
        "arm-baseline/seed_0/report.html",
        "arm-baseline/seed_1/report.html",
        "arm-dcl/seed_0/report.html",
    ]
    assert all((sweep_dir / link).is_file() for link in links)
    assert "<td>arm=dcl</td><td>1</td><td>finished</td><td class=num>0.6100</td>" in page
    assert "no report.html" in page
    assert "<td>arm=baseline</td><td>2/2</td><td class=num>0.4500 +- 0.0707</td>" in page
    assert "bin/sweep --grid=ablation --seeds=0,1" in page and "<script" not in page.lower()
