"""Helpers shared by the absl mains in dcl_keras/commands: backend choice, user-facing errors."""

import importlib.util
import json
import logging
import os
import sys

BACKENDS = ("tensorflow", "jax")


def select_backend(argv=None):
    """Sets KERAS_BACKEND from a --backend=NAME argument before Keras is imported."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        value = None
        if arg.startswith("--backend="):
            value = arg.split("=", 1)[1]
        elif arg == "--backend" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            if value not in BACKENDS:
                sys.exit(f"error: --backend must be one of {BACKENDS}. Received: --backend={value}")
            if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") != value:
                sys.exit("error: --backend was given after Keras was imported; set KERAS_BACKEND instead.")
            os.environ["KERAS_BACKEND"] = value
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if importlib.util.find_spec("tensorflow") is None:
        sys.exit(
            "error: dcl_keras needs TensorFlow for its input pipeline and export, under every Keras backend: "
            "pip install 'dcl-keras[cpu]' (or [gpu]), or install a TensorFlow build first."
        )


def run_main(main, argv):
    """Runs `main(argv)`, turning errors about the user's input into one clear line (exit 2).

    Those are `UserError`s (config, dataset, workdir, divergence) and missing or
    existing paths. Anything else, a bug here, in Keras or in TensorFlow, keeps
    its traceback.
    """
    from dcl_keras.errors import UserError

    try:
        return main(argv)
    except (UserError, FileNotFoundError, FileExistsError) as e:
        logging.debug("Full traceback:", exc_info=True)
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)


def run_command(main, module_name):
    """Runs the absl `main` of the command module `module_name`: user errors are one line (see run_main).

    --help shows that module's docstring and flags, whether it was started as a
    console command, a bin/ script or `python -m`.
    """
    from absl import app, flags

    sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__  # absl prints it as the usage.
    for flag in flags.FLAGS.get_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(lambda argv: run_main(main, argv))


def load_workdir_config(workdir):
    """The resolved config that bin/train wrote into a workdir, over today's defaults.

    Fields added since the run was started take their default values.
    """
    from dcl_keras.config import base_config

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No config.json in the workdir: expected {path} (written by bin/train)")
    with open(path) as f:
        saved = json.load(f)
    config = base_config()
    with config.unlocked():
        config.update(saved)
    return config


def model_path(workdir, model):
    """The .keras file to use: --model if given, else <workdir>/model.keras."""
    path = model or os.path.join(workdir or "", "model.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file not found: expected a .keras file at {path!r} (set --model or --workdir)")
    return path
