"""benchmarks/learning.py: the regression rule, the history file and the exit status (no training here)."""

import csv
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def learning(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    return importlib.import_module("learning")


def _row(arm="dcl", mean="0.5000", std="0.0100", commit="abc1234", testbed="typefaces"):
    return {
        "commit": commit,
        "date": "2026-12-05",
        "machine": "test CPU",
        "testbed": testbed,
        "recipe": "configs/typefaces.py",
        "arm": arm,
        "seeds": "0 1 2",
        "per_seed": "0.5 0.5 0.5",
        "mean": mean,
        "std": std,
    }


@pytest.mark.parametrize(
    "mean, std, ok",
    [
        ("0.4810", "0.0100", True),  # Fell 0.019: under the 0.02 floor.
        ("0.4790", "0.0100", False),  # Fell 0.021: over max(2 x 0.01, 0.02).
        ("0.4500", "0.0300", True),  # Fell 0.05 with a recorded std of 0.03: within 2 std.
        ("0.4300", "0.0300", False),
        ("0.6000", "0.0100", True),  # Rose.
        ("0.4790", "", False),  # One recorded seed: no std, the floor alone.
    ],
)
def test_a_mean_may_fall_by_at_most_two_recorded_stds_or_the_floor(learning, mean, std, ok):
    result, message = learning.verdict(_row(mean=mean), _row(mean="0.5000", std=std))
    assert result is ok
    assert ("REGRESSION" in message) is not ok
    assert "typefaces / dcl" in message and mean in message and "abc1234" in message


def _main(learning, tmp_path, monkeypatch, rows, history_rows, *args):
    history = tmp_path / "history.csv"
    if history_rows:
        learning.append_history(str(history), history_rows)
    monkeypatch.setattr(learning, "run_testbed", lambda testbed, arms, seeds, work_dir, log: rows)
    monkeypatch.setattr(learning, "commit", lambda: "new5678")
    code = learning.main(["--history", str(history), "--work_dir", str(tmp_path / "runs"), *args])
    return code, history


def _strip(row):
    return {k: v for k, v in row.items() if k not in ("commit", "date", "machine")}


def test_a_regression_exits_1_naming_the_arm_and_figures(learning, tmp_path, monkeypatch, capsys):
    current = [_strip(_row(arm="dcl", mean="0.4000")), _strip(_row(arm="baseline_equal_compute", mean="0.5000"))]
    recorded = [_row(arm="dcl", mean="0.5000"), _row(arm="baseline_equal_compute", mean="0.5000")]
    code, _ = _main(learning, tmp_path, monkeypatch, current, recorded)
    out = capsys.readouterr().out
    assert code == 1
    assert "REGRESSION typefaces / dcl: 0.4000" in out and "fell by 0.1000" in out
    assert "ok typefaces / baseline_equal_compute" in out
    assert "machine:" in out


def test_no_regression_exits_0_and_record_appends_rows(learning, tmp_path, monkeypatch):
    current = [_strip(_row(arm="dcl", mean="0.5100"))]
    code, history = _main(
        learning, tmp_path, monkeypatch, current, [_row(arm="dcl")], "--arms=dcl", "--testbeds=typefaces", "--record"
    )
    assert code == 0
    with open(history, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["commit"] for r in rows] == ["abc1234", "new5678"]
    assert rows[-1]["mean"] == "0.5100" and rows[-1]["machine"]


def test_only_the_same_testbed_recipe_and_arm_are_compared(learning, tmp_path, monkeypatch, capsys):
    current = [_strip(_row(arm="dcl", mean="0.1000", testbed="demo"))]
    code, _ = _main(learning, tmp_path, monkeypatch, current, [_row(arm="dcl", testbed="typefaces")])
    assert code == 0
    assert "nothing recorded to compare with" in capsys.readouterr().out


def test_a_changed_recipe_is_named_instead_of_passing_silently(learning, tmp_path, monkeypatch, capsys):
    current = [_strip({**_row(arm="dcl", mean="0.1000"), "recipe": "configs/typefaces.py@demo-new"})]
    recorded = [{**_row(arm="dcl"), "recipe": "configs/typefaces.py@demo-old"}]
    code, _ = _main(learning, tmp_path, monkeypatch, current, recorded)
    out = capsys.readouterr().out
    assert code == 0
    assert "its recipe changed" in out and "configs/typefaces.py@demo-old at abc1234" in out and "demo-new" in out


def test_the_latest_recorded_row_is_the_reference(learning):
    history = [_row(mean="0.9000", commit="old"), _row(mean="0.5000", commit="newer")]
    assert learning.last_recorded(history, _strip(_row()))["commit"] == "newer"


def test_bad_flags_and_a_broken_history_are_named(learning, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        learning.main(["--arms=dcl,plain"])
    assert exit_info.value.code == 2
    assert "--arms" in capsys.readouterr().err
    broken = tmp_path / "history.csv"
    broken.write_text("commit,mean\nabc,0.5\n")
    with pytest.raises(SystemExit, match="history.csv, line 2: expected the columns"):
        learning.read_history(str(broken))


def test_the_testbeds_point_at_config_files_that_load(learning):
    from dcl_keras.config import load_config_file

    for testbed, spec in learning.TESTBEDS.items():
        config = load_config_file(os.path.join(ROOT, spec))
        assert config.data.source == "demo", testbed
        assert config.eval.enabled


def test_the_recipe_names_the_config_and_the_generated_dataset(learning, tmp_path):
    """A new demo generator or other data makes a new recipe, so old figures are not compared with new data."""
    specs = []
    for train_per_class in (1, 2):
        path = tmp_path / f"config_{train_per_class}.py"
        path.write_text(
            "from dcl_keras.config import base_config\n\n\n"
            "def get_config(arg=None):\n"
            "    c = base_config()\n"
            "    c.data.source = 'demo'\n"
            f"    c.data.demo.cache_dir = {str(tmp_path / 'cache')!r}\n"
            "    c.data.demo.num_classes, c.data.demo.image_size = 2, 16\n"
            f"    c.data.demo.train_per_class, c.data.demo.test_per_class = {train_per_class}, 1\n"
            "    return c\n"
        )
        specs.append(learning.recipe(str(path)))
    assert all(spec.split("@")[1].startswith("demo-") for spec in specs)
    assert specs[0].split("@")[1] != specs[1].split("@")[1]


def test_a_pretrained_testbeds_recipe_names_its_pretraining_run(learning, tmp_path, monkeypatch):
    monkeypatch.setenv("DCL_KERAS_CACHE", str(tmp_path))
    monkeypatch.setattr(learning.demo, "dataset_root", lambda d: str(tmp_path / "demo-0123456789"))
    name = learning.recipe("configs/typefaces_pretrained.py")
    digest = learning.pretraining.digest(learning.load_config_file(os.path.join(ROOT, "configs", "pretrain.py")))
    assert name == f"configs/typefaces_pretrained.py@demo-0123456789+pretrain-{digest}"
    assert learning.recipe("configs/typefaces.py") == "configs/typefaces.py@demo-0123456789"


def test_a_pretrained_testbed_runs_bin_pretrain_only_when_its_weights_are_missing(learning, tmp_path, monkeypatch):
    monkeypatch.setenv("DCL_KERAS_CACHE", str(tmp_path))
    weights = learning.pretraining.weights_path(os.path.join(ROOT, "configs", "pretrain.py"))
    calls = []

    def fake_run(command, cwd):
        calls.append(command)
        os.makedirs(os.path.dirname(weights), exist_ok=True)
        open(weights, "w").close()
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(learning.subprocess, "run", fake_run)
    learning.ensure_pretrained("configs/typefaces.py", log=print)
    assert calls == []  # From scratch: nothing to pretrain.
    learning.ensure_pretrained("configs/demo_pretrained.py", log=print)
    assert len(calls) == 1 and calls[0][1].endswith("bin/pretrain") and calls[0][2].endswith("configs/pretrain.py")
    learning.ensure_pretrained("configs/typefaces_pretrained.py", log=print)
    assert len(calls) == 1  # Cached.
