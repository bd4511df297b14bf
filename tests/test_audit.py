"""bin/audit: the fold runs and the margin run through the sweep machinery, the ranking, the files and the page."""

import csv
import os

import numpy as np
import pytest

from dcl_keras import audit, sweep, training
from dcl_keras import workdir as run_folder
from dcl_keras.config import load_config_file
from dcl_keras.errors import UserError
from dcl_keras.report import audit_page

from helpers import run_bin


def _train_here(runs):
    """What bin/sweep's run mode does, in this process: bin/train's config (the run's overrides and seed), trained."""
    for run in runs:
        config = load_config_file(run["config"])
        config = sweep.apply_overrides(config, {**run["overrides"], "seed": run["seed"]})
        training.train_and_evaluate(config, run["workdir"])


def test_plan_makes_one_run_per_fold_without_export_and_refuses_what_the_audit_sets(tiny_config_file, tmp_path):
    runs = audit.plan(tiny_config_file, str(tmp_path / "a"), folds=3, seed=4)
    assert [r["overrides"]["data.audit_fold"] for r in runs] == [0, 1, 2]
    assert {r["overrides"]["data.audit_folds"] for r in runs} == {3} and {r["seed"] for r in runs} == {4}
    assert all(r["overrides"]["export.enabled"] is False for r in runs)
    assert len({r["workdir"] for r in runs}) == 3
    (margin_run,) = audit.plan(tiny_config_file, str(tmp_path / "b"), method="aum")
    assert margin_run["overrides"]["train.record_margins"] is True
    with pytest.raises(UserError, match="--folds"):
        audit.plan(tiny_config_file, str(tmp_path / "c"), folds=1)
    with pytest.raises(UserError, match="data.audit_fold"):
        audit.plan(tiny_config_file, str(tmp_path / "c"), overrides={"data.audit_fold": "1"})


# TensorFlow only: the margin test below runs the same probabilities (label_audit.split_probabilities) under JAX.
def test_kfold_audit_ranks_every_training_image_once_and_writes_its_lists_and_page(tiny_config_file, tmp_path):
    folder = str(tmp_path / "audit")
    runs = audit.plan(tiny_config_file, folder, folds=2)
    sweep.save_plan(runs, folder, "test")
    with pytest.raises(UserError, match="2 of 2 audit run"):
        audit.collect(folder)
    _train_here(runs)
    for run in runs:
        with np.load(os.path.join(run["workdir"], run_folder.FOLD_PREDICTIONS)) as data:
            assert data["probabilities"].shape == (len(data["keys"]), 4)
            np.testing.assert_allclose(data["probabilities"].sum(-1), 1.0, rtol=1e-5)
    rows, flagged, summary, config, split = audit.collect(folder)
    assert sorted(r["key"] for r in rows) == sorted(split.keys()) and len(rows) == 24  # 4 classes x 6.
    assert summary["flagged"] == flagged == sum(r["flagged"] for r in rows)
    paths = audit.write(folder, rows, summary)
    with open(paths[audit.SUSPECTS]) as f:
        table = list(csv.DictReader(f))
    assert [t["key"] for t in table] == [r["key"] for r in rows] and table[0]["rank"] == "1"
    listed = [line.strip() for line in open(paths[audit.EXCLUDE]) if line.strip() and not line.startswith("#")]
    assert listed == [r["key"] for r in rows if r["flagged"]]
    shown = audit.thumbnails(config, split, rows, 5)
    assert [row["key"] for row, _ in shown] == [row["key"] for row in rows[:5]]  # Rank order, not split order.
    size = config.input.image_size
    assert all(crop.shape == (size, size, 3) and crop.dtype == np.uint8 for _, crop in shown)
    page = open(audit_page.write_audit_page(folder, rows, summary, shown)).read()
    assert page.count("<img") == 5 and rows[0]["key"] in page
    with pytest.raises(UserError, match="another audit's runs"):
        audit.plan(tiny_config_file, folder, method="aum")
    assert audit.plan(tiny_config_file, folder, folds=2) == runs  # The same plan again: it resumes.


def test_the_margin_audit_ranks_by_the_mean_margin_and_a_sweep_folder_is_refused(tiny_config_file, tmp_path):
    folder = str(tmp_path / "aum")
    runs = audit.plan(tiny_config_file, folder, method="aum")
    sweep.save_plan(runs, folder, "test")
    _train_here(runs)
    rows, flagged, summary, _, split = audit.collect(folder)
    assert sorted(r["key"] for r in rows) == sorted(split.keys()) and summary["method"].startswith("aum")
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores) and flagged == sum(s < 0 for s in scores)
    other = str(tmp_path / "sweep")
    sweep.save_plan(sweep.plan(tiny_config_file, "single", [0], other), other, "bin/sweep")
    with pytest.raises(UserError, match="not a bin/audit folder"):
        audit.collect(other)


def test_a_class_smaller_than_the_fold_count_is_refused_when_planning(tiny_config_file, tmp_path):
    with pytest.raises(UserError, match="needs at least 7 training examples in every class"):
        audit.plan(tiny_config_file, str(tmp_path / "a"), folds=7)  # 6 images a class.


@pytest.mark.backend_agnostic  # Trains: also under KERAS_BACKEND=jax.
def test_recording_margins_leaves_training_unchanged_and_keeps_one_row_per_epoch(tiny_config, tmp_path):
    weights = {}
    for record in (False, True):
        config = tiny_config.copy_and_resolve_references()
        config.train.epochs, config.export.enabled, config.eval.enabled = 2, False, False
        config.train.record_margins = record
        model = training.train_and_evaluate(config, str(tmp_path / str(record)))["model"]
        from dcl_keras.saving import load_model

        weights[record] = [np.asarray(w) for w in load_model(model).get_weights()]
    for a, b in zip(weights[False], weights[True], strict=True):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "True" / run_folder.MARGINS
    with np.load(path) as data:
        assert data["epochs"].tolist() == [0, 1] and data["margins"].shape == (2, 24)
        assert data["suggested"].shape == (24,)
        last = data["margins"][1].copy()
    # A run stopped on epoch 1's last step resumes at epoch 2 without having written epoch 1: it is taken then.
    config.train.epochs = 3
    from dcl_keras import label_audit
    from dcl_keras.data import datasets, specs

    split = datasets.load_splits(config.data).train
    recorder = label_audit.MarginRecorder(
        load_model(model), split, specs.EvalSpec.from_config(config), str(path.parent)
    )
    with np.load(path) as data:
        np.savez(
            path, **{**{k: data[k] for k in data.files}, "epochs": data["epochs"][:1], "margins": data["margins"][:1]}
        )
    recorder.record_if_missing(1)
    recorder.record_if_missing(1)  # Once only.
    with np.load(path) as data:
        assert data["epochs"].tolist() == [0, 1]
        np.testing.assert_allclose(data["margins"][1], last, atol=1e-5)


def test_bin_audit_writes_commands_and_a_collect_of_unfinished_runs_is_a_one_line_error(tiny_config_file, tmp_path):
    folder = tmp_path / "audit"
    result = run_bin("audit", f"--config={tiny_config_file}", f"--audit_dir={folder}", "--folds=3", "--mode=commands")
    assert result.returncode == 0, result.stderr
    assert len((folder / sweep.COMMANDS).read_text().splitlines()) == 3
    result = run_bin("audit", f"--audit_dir={folder}", "--mode=collect")
    assert result.returncode == 2 and "3 of 3 audit run(s) have not finished" in result.stderr
    assert "Traceback" not in result.stderr
