"""Shared test helpers: the repository root (defined once here), config files, the bin/ tools run as a user would."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_file(name, arg=None):
    """The ConfigDict of configs/<name>.py[:arg], loaded as bin/train loads it."""
    from dcl_keras.config import load_config_file

    return load_config_file(os.path.join(ROOT, "configs", f"{name}.py") + (f":{arg}" if arg is not None else ""))


def run_bin(tool, *args, env=None, timeout=600, cwd=ROOT):
    """Runs bin/<tool> with this interpreter (in `cwd`, default the repository); returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", tool), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
