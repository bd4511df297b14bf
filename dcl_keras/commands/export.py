"""Exports the classifier branch of a trained DCL model as a SavedModel for TF Serving.

    bin/export --workdir=workdirs/demo --export_dir=exports/demo
    bin/export --model=runs/cub/model.keras --export_dir=/models/cub --version=3

Writes <export_dir>/<version>/ (default version: the next free integer).
"""

import os

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402

from dcl_keras.errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "The bin/train workdir (its model.keras is exported).")
_MODEL = flags.DEFINE_string("model", None, "A .keras model; default <workdir>/model.keras.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Base folder; default <workdir>/export.")
_VERSION = flags.DEFINE_integer("version", None, "Integer version folder; default the next free one.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "How many top classes the signatures return.")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")


def main(argv):
    del argv
    from dcl_keras import export

    if not (_WORKDIR.value or _MODEL.value):
        raise UserError("Give --workdir or --model. Received: neither")
    export_dir = _EXPORT_DIR.value or os.path.join(_WORKDIR.value or ".", "export")
    path = export.export_model_file(
        cli.model_path(_WORKDIR.value, _MODEL.value), export_dir, top_k=_TOP_K.value, version=_VERSION.value
    )
    print(f"export: {path}")


def run():
    """The `dcl-export` console command (bin/export)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
