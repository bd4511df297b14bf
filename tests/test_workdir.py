"""dcl_keras.workdir: the run folder's names, its readers, and the one atomic write every writer uses."""

import ast
import json
import os
import pathlib

import pytest

from dcl_keras import workdir as run_folder
from dcl_keras.errors import UserError

from helpers import ROOT

pytestmark = pytest.mark.backend_agnostic


def test_the_temporary_file_keeps_the_suffixes_keras_checks():
    assert run_folder.temporary_path("/r/checkpoints/latest.keras") == "/r/checkpoints/latest.tmp.keras"
    assert run_folder.temporary_path("/r/backbone.weights.h5") == "/r/backbone.tmp.weights.h5"
    assert run_folder.temporary_path("/r/export/3") == "/r/export/3.tmp"


def test_a_write_is_all_or_nothing(tmp_path):
    target = tmp_path / "config.json"
    run_folder.write_json(str(target), {"b": 1, "a": [1, 2]})
    assert target.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2)

    def interrupted(tmp):
        pathlib.Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_folder.write_file(str(target), interrupted)
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1} and os.listdir(tmp_path) == ["config.json"]
    run_folder.write_text(str(tmp_path / "page.html"), "é")
    assert (tmp_path / "page.html").read_text(encoding="utf-8") == "é"


def test_a_folder_is_written_through_a_temporary_folder(tmp_path):
    target = tmp_path / "1"
    with pytest.raises(OSError):
        with run_folder.atomic_path(str(target), tmp=str(tmp_path / ".tmp-1-x")) as tmp:
            os.makedirs(tmp)
            pathlib.Path(tmp, "saved_model.pb").write_bytes(b"part")
            raise OSError("disk full")
    assert os.listdir(tmp_path) == []
    with run_folder.atomic_path(str(target), tmp=str(tmp_path / ".tmp-1-y")) as tmp:
        os.makedirs(tmp)
        pathlib.Path(tmp, "saved_model.pb").write_bytes(b"graph")
    assert os.listdir(tmp_path) == ["1"] and (target / "saved_model.pb").read_bytes() == b"graph"


def test_a_missing_or_broken_file_is_named_with_how_to_write_it_again(tmp_path):
    with pytest.raises(UserError, match=r"No config.json in .*\. bin/train writes it when it starts"):
        run_folder.read_config(str(tmp_path))
    with pytest.raises(FileNotFoundError):  # bin/ tools print both kinds as one line.
        run_folder.load_config(str(tmp_path))
    (tmp_path / run_folder.EVALUATION).write_bytes(b'{"top1": 0.')
    with pytest.raises(run_folder.MissingFile, match=r"evaluation.json cannot be read as JSON .* Rerun it\. Received"):
        run_folder.read_evaluation(str(tmp_path), "Rerun it.")
    with pytest.raises(run_folder.MissingFile, match="no epoch has finished yet"):
        run_folder.read_metrics(str(tmp_path))
    (tmp_path / run_folder.METRICS).write_text("loss,acc\n")
    with pytest.raises(run_folder.MissingFile, match="expected a CSV header with an `epoch` column"):
        run_folder.read_metrics(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"expected a .keras file at .*model.keras"):
        run_folder.model_file(str(tmp_path))
    with pytest.raises(run_folder.MissingFile, match="No model.keras nor checkpoints/latest.keras .* nothing trained"):
        run_folder.load_trained_model(str(tmp_path))


def test_a_saved_config_reads_over_todays_defaults(tmp_path):
    from dcl_keras.config import base_config

    run_folder.write_json(str(tmp_path / run_folder.CONFIG), {"seed": 7, "train": {"epochs": 3}})
    config = run_folder.load_config(str(tmp_path))
    assert config.seed == 7 and config.train.epochs == 3
    assert config.input.image_size == base_config().input.image_size  # A field the run did not save.
    assert run_folder.flatten(run_folder.read_config(str(tmp_path))) == {"seed": 7, "train.epochs": 3}


def test_metrics_skip_incomplete_rows_and_keep_the_last_of_an_epoch(tmp_path):
    (tmp_path / run_folder.METRICS).write_text("epoch,loss,val_loss\n0,2.0,NA\n1,1.5,1.6\n1,1.4,1.5\n2,1.2\n")
    columns, skipped = run_folder.read_metrics(str(tmp_path))
    assert skipped == 1 and list(columns["epoch"]) == [1.0, 2.0] and list(columns["loss"]) == [2.0, 1.4]


def test_a_run_is_finished_by_its_evaluation(tmp_path):
    assert not run_folder.is_finished(str(tmp_path))
    run_folder.write_json(str(tmp_path / run_folder.EVALUATION), {"top1": 0.5})
    assert run_folder.is_finished(str(tmp_path))
    assert run_folder.export_dir(str(tmp_path)) == str(tmp_path / "export")
    assert run_folder.export_dir(str(tmp_path), "/models/cub") == "/models/cub"


def test_no_module_names_a_run_file_or_writes_a_temporary_file_itself():
    """The names are workdir's constants; the write-then-rename idiom is workdir.atomic_path, nowhere else."""
    names = {"config.json", "evaluation.json", "metrics.csv", "model.keras", "latest.keras", "backbone.weights.h5"}
    owners = {"workdir.py"}
    renames_aside = {"preemption.py"}  # Moves a damaged checkpoint aside: a rename, not a write.
    offenders = []
    for path in sorted(pathlib.Path(ROOT, "dcl_keras").rglob("*.py")):
        if path.name in owners:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if node.value in names:
                    offenders.append(f"{path.name}:{node.lineno} names {node.value!r}")
            renames = (
                isinstance(node, ast.Attribute) and node.attr == "replace" and getattr(node.value, "id", "") == "os"
            )
            if renames and path.name not in renames_aside:
                offenders.append(f"{path.name}:{node.lineno} calls os.replace")
    assert offenders == [], offenders
