"""The installable package: console commands, the wheel's contents, configs loaded from anywhere, the README's API."""

import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from helpers import ROOT, config_file


def _scripts():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def test_every_console_command_is_installed_and_is_the_bin_script():
    scripts = _scripts()
    assert set(scripts) == {
        "dcl-train",
        "dcl-evaluate",
        "dcl-export",
        "dcl-predict",
        "dcl-visualize-rcm",
        "dcl-analyze",
        "dcl-sweep",
        "dcl-make-records",
        "dcl-report",
        "dcl-audit",
        "dcl-gallery",
        "dcl-pretrain",
    }
    for command, target in scripts.items():
        module, _, function = target.partition(":")
        name = module.rsplit(".", 1)[1]
        assert function == "run" and module == f"dcl_keras.commands.{name}"
        with open(os.path.join(ROOT, "bin", name)) as f:  # bin/<name> is a thin wrapper of the same run().
            assert f"from {module} import run" in f.read()
        assert os.path.isfile(os.path.join(os.path.dirname(sys.executable), command)), f"{command} not installed"
    # The installed command, run from another folder, shows its module's usage and flags.
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dcl-export"), "--help"],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr[-2000:]  # absl's --help exits with 1.
    assert "Exports the classifier branch" in done.stdout and "--export_dir" in done.stdout


def test_the_wheel_holds_every_module_of_the_package_and_nothing_else(tmp_path):
    source = tmp_path / "source"  # setuptools builds in the source folder (build/, *.egg-info): not in the clone.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "workdirs", "__pycache__", "*_cache"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), source],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = glob.glob(str(tmp_path / "dcl_keras-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "dcl_keras", "**", "*.py"), recursive=True)
    }
    assert sources <= names, sorted(sources - names)
    assert not [n for n in names if n.split("/")[0] in ("tests", "configs", "bin", "benchmarks")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dcl-train = dcl_keras.commands.train:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_no_import_path_tricks_in_the_code():
    """bin/, tests/, benchmarks/ and the package import the installed package, never a patched sys.path."""
    pattern = re.compile(r"sys\.path\.(insert|append)|environ\[\s*[\"']PYTHONPATH")
    files = glob.glob(os.path.join(ROOT, "bin", "*"))
    for folder in ("dcl_keras", "tests", "benchmarks", "configs"):
        files += glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)
    offenders = []
    for path in files:
        if os.path.abspath(path) == os.path.abspath(__file__):
            continue
        with open(path) as f:
            offenders += [f"{os.path.relpath(path, ROOT)}:{i}" for i, line in enumerate(f, 1) if pattern.search(line)]
    assert not offenders


@pytest.mark.parametrize(
    "name",
    ["demo", "demo_study", "demo_96", "tiny", "pretrain_toy", "cub_resnet50", "cars_resnet50", "aircraft_resnet50"],
)
def test_every_config_file_loads_from_outside_the_repository(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # No configs package on the path: a config imports only dcl_keras.
    assert "configs" not in sys.modules
    config = config_file(name, "root=/x" if name.endswith("resnet50") else None)
    assert config.model.backbone and config.rcm.n >= 1
    if name == "pretrain_toy":  # Built on the 96-px demo config, read beside it.
        assert config.data.demo.kind == "coarse" and config.input.image_size == config_file("demo_96").input.image_size
    if name in ("demo_study", "demo_96"):  # The demo's data and method, shorter or at 96 px.
        demo = config_file("demo")
        expected = {"demo_study": (64, 20), "demo_96": (96, 60)}[name]
        assert (config.input.image_size, config.train.epochs) == expected and config.data == demo.data
        assert config.input.image_size % config.rcm.n == 0 and config.loss == demo.loss


def _readme_example():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    match = re.search(r"<!-- python-api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md: the Python API example block is missing"
    return match.group(1)


def test_the_readme_python_api_example_runs(tiny_config, tmp_path):
    """The README's notebook example, as written, on a smaller demo dataset and a few steps."""
    code = _readme_example()
    assert 'load_config_file("configs/demo.py")' in code and "workdirs/notebook" in code
    code = code.replace('"configs/demo.py"', repr(os.path.join(ROOT, "configs", "demo.py")))
    code = code.replace('"workdirs/notebook"', repr(str(tmp_path / "notebook")))
    smaller = (
        f"config.data.demo.cache_dir = {tiny_config.data.demo.cache_dir!r}\n"
        "config.data.demo.num_classes = 4\nconfig.data.demo.train_per_class = 6\nconfig.data.demo.test_per_class = 3\n"
        "config.data.demo.image_size = 48\nconfig.input.image_size = 32\nconfig.input.resize_size = 40\n"
        "config.model.width = 8\nconfig.train.steps_per_epoch = 2\nconfig.train.verbose = 0\n"
    )
    lines = code.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("config = load_config_file"))
    code = "".join(lines[: at + 1]) + smaller + "".join(lines[at + 1 :])
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test top-1:" in done.stdout and "crest_" in done.stdout  # Class names of the demo birds.
