"""Helpers shared by the absl mains in dcl_keras/commands: backend choice, user-facing errors, how to run a tool."""

import importlib.util
import logging
import os
import shlex
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


def exit_on_failures(tool_name, failures, summary):
    """Names each (key, reason) of `failures` on stderr, then `summary`, and exits with status 1; no-op if none.

    The commands that read many image files (bin/predict, bin/gallery) skip
    the unreadable ones and still do the rest; the exit status says so.
    """
    for _, reason in failures:
        print(f"{tool_name}: error: {reason}", file=sys.stderr)
    if failures:
        print(f"{tool_name}: {summary}", file=sys.stderr)
        sys.exit(1)
