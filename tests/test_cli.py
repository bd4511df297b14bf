"""What the commands share (dcl_keras/cli.py): --backend, user errors in one line, naming another tool, serving lines."""

import base64
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tomllib

import pytest

from dcl_keras import cli
from dcl_keras.config import ConfigError
from dcl_keras.errors import UserError

from helpers import ROOT


@pytest.fixture
def environ(monkeypatch):
    """KERAS_BACKEND=tensorflow, no TF_CPP_MIN_LOG_LEVEL and Keras not imported yet: a command's start; restored."""
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    return os.environ


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("argv", [["train", "--backend=jax"], ["train", "--backend", "jax", "--workdir=w"]])
def test_select_backend_sets_keras_backend_from_either_spelling(environ, argv):
    cli.select_backend(argv)
    assert environ["KERAS_BACKEND"] == "jax"
    assert environ["TF_CPP_MIN_LOG_LEVEL"] == "2"  # TensorFlow's C++ start-up lines are hidden by default.


@pytest.mark.backend_agnostic
def test_select_backend_without_the_flag_keeps_the_environment(environ, monkeypatch):
    cli.select_backend(["train", "--workdir=w"])
    assert environ["KERAS_BACKEND"] == "tensorflow" and environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # A user's own setting wins.
    monkeypatch.setattr(sys, "argv", ["train", "--backend=jax"])  # No argument: sys.argv.
    cli.select_backend()
    assert environ["KERAS_BACKEND"] == "jax" and environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("argv", [["train", "--backend=torch"], ["train", "--backend", "Jax"]])
def test_select_backend_refuses_an_unknown_backend_naming_the_choices(environ, argv):
    with pytest.raises(SystemExit) as stop:
        cli.select_backend(argv)
    value = argv[-1].split("=")[-1]
    assert stop.value.code == f"error: --backend must be one of ('tensorflow', 'jax'). Received: --backend={value}"
    assert environ["KERAS_BACKEND"] == "tensorflow"


@pytest.mark.backend_agnostic
def test_select_backend_after_keras_was_imported_only_accepts_that_backend(environ, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", object())
    cli.select_backend(["train", "--backend=tensorflow"])  # The backend Keras was imported with: fine.
    with pytest.raises(SystemExit) as stop:
        cli.select_backend(["train", "--backend=jax"])
    assert "--backend was given after Keras was imported; set KERAS_BACKEND instead" in stop.value.code
    assert environ["KERAS_BACKEND"] == "tensorflow"


@pytest.mark.backend_agnostic
def test_select_backend_without_tensorflow_says_how_to_install_it(environ, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, package=None: None if name == "tensorflow" else find_spec(name, package),
    )
    with pytest.raises(SystemExit) as stop:
        cli.select_backend(["train", "--backend=jax"])
    assert "needs TensorFlow" in stop.value.code and "pip install 'dcl-keras[cpu]'" in stop.value.code


def test_run_main_returns_what_main_returns():
    assert cli.run_main(lambda argv: argv + ["done"], ["train"]) == ["train", "done"]


@pytest.mark.parametrize(
    "error",
    [
        UserError("Config field `x`: expected y. Received: x=1"),
        ConfigError("Config field `train.epochs`: expected a positive int. Received: train.epochs=0"),
        FileNotFoundError(2, "No such file or directory", "configs/nope.py"),
        FileExistsError(17, "File exists", "exports/1"),
    ],
)
def test_run_main_prints_user_errors_and_missing_paths_as_one_line_and_exits_2(error, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [os.path.join("somewhere", "bin", "train"), "--workdir=w"])

    def main(argv):
        raise error

    with pytest.raises(SystemExit) as stop:
        cli.run_main(main, sys.argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"train: error: {error}\n"


def test_run_main_lets_other_exceptions_and_exit_statuses_through(capsys):
    bug = KeyError("a bug deep inside")

    def buggy(argv):
        raise bug

    with pytest.raises(KeyError) as raised:
        cli.run_main(buggy, [])
    assert raised.value is bug and capsys.readouterr().err == ""

    def preempted(argv):
        sys.exit(75)  # A stopped run's status is the caller's to see, not turned into 2.

    with pytest.raises(SystemExit) as stop:
        cli.run_main(preempted, [])
    assert stop.value.code == 75


def test_a_command_shows_a_user_error_in_one_line_and_a_bug_with_its_traceback(tmp_path):
    script = tmp_path / "tool"
    script.write_text(
        "import sys\n"
        "from dcl_keras import cli\n"
        "from dcl_keras.errors import UserError\n\n\n"
        "def main(argv):\n"
        "    if argv[1] == 'user':\n"
        "        raise UserError('Config field `x`: expected y. Received: x=1')\n"
        "    if argv[1] == 'missing':\n"
        "        open('/nonexistent/config.py')\n"
        "    raise ValueError('a bug deep inside')\n\n\n"
        "cli.run_main(main, sys.argv)\n"
    )
    done = {
        kind: subprocess.run([sys.executable, str(script), kind], capture_output=True, text=True, timeout=120)
        for kind in ("user", "missing", "bug")
    }
    assert (done["user"].returncode, done["user"].stderr) == (
        2,
        "tool: error: Config field `x`: expected y. Received: x=1\n",
    )
    missing = "tool: error: [Errno 2] No such file or directory: '/nonexistent/config.py'\n"
    assert (done["missing"].returncode, done["missing"].stderr) == (2, missing)
    assert done["bug"].returncode == 1
    assert done["bug"].stderr.startswith("Traceback (most recent call last):")
    assert done["bug"].stderr.endswith("ValueError: a bug deep inside\n")


def test_user_errors_are_one_line_and_other_errors_keep_their_traceback(capsys):
    def user(argv):
        raise UserError("Config field `x`: expected y. Received: x=1")

    with pytest.raises(SystemExit) as stop:
        cli.run_main(user, [])
    assert stop.value.code == 2 and "Received: x=1" in capsys.readouterr().err

    def bug(argv):
        raise ValueError("a bug deep inside")

    with pytest.raises(ValueError, match="a bug deep inside"):
        cli.run_main(bug, [])


def test_tool_names_the_sibling_bin_script_in_a_clone_and_the_console_command_otherwise(monkeypatch):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        console = set(tomllib.load(f)["project"]["scripts"])
    names = sorted(os.listdir(os.path.join(ROOT, "bin")))
    assert "predict" in names and "visualize_rcm" in names
    monkeypatch.setattr(sys, "argv", [os.path.join(ROOT, "bin", "train"), "--workdir=w"])
    assert [cli.tool(name) for name in names] == [os.path.join(ROOT, "bin", name) for name in names]
    for started_as in (["dcl-train"], [os.path.join(sys.prefix, "bin", "dcl-train")], ["-m"], []):
        monkeypatch.setattr(sys, "argv", started_as)
        commands = [cli.tool(name) for name in names]
        assert "dcl-visualize-rcm" in commands and set(commands) <= console, (started_as, commands)


def test_tool_needs_the_sibling_to_exist_and_its_folder_to_be_bin(tmp_path, monkeypatch):
    for folder in ("bin", "scripts"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train").write_text("")
        (tmp_path / folder / "report").write_text("")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bin" / "train")])
    assert cli.tool("report") == str(tmp_path / "bin" / "report")
    assert cli.tool("predict") == "dcl-predict"  # No bin/predict beside it.
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "scripts" / "train")])
    assert cli.tool("report") == "dcl-report"


def test_serving_commands_quote_paths_and_send_the_image_as_valid_json(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["dcl-train"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my exports").mkdir()
    image = tmp_path / "a photo.jpg"
    image.write_bytes(bytes(range(256)) * 3)
    predict, docker, curl = cli.serving_commands("my exports", str(image))
    export_dir = str(tmp_path / "my exports")  # Made absolute: the lines run from any folder.
    assert shlex.split(predict) == ["dcl-predict", f"--model={export_dir}", str(image)]
    assert shlex.split(docker) == [
        *"docker run -p 8501:8501 -v".split(),
        f"{export_dir}:/models/dcl",
        *"-e MODEL_NAME=dcl tensorflow/serving".split(),
    ]
    # The curl line run by bash, with a stand-in curl that prints its arguments instead of reaching the network.
    shown = subprocess.run(
        ["bash", "-c", f"curl() {{ printf '%s\\n' \"$@\"; }}; {curl}"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    args = shown.stdout.split("\n")
    assert args[:4] == ["-X", "POST", "localhost:8501/v1/models/dcl:predict", "-d"]
    body = json.loads(args[4])
    assert body["signature_name"] == "serving_default"
    assert base64.b64decode(body["inputs"]["images"][0]["b64"]) == image.read_bytes()
    assert cli.serving_commands("e")[0] == f"dcl-predict --model={tmp_path / 'e'} IMAGE.jpg"  # The default image.
