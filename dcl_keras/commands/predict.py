"""Top-5 class names with probabilities for images, from a .keras model or a TF Serving export.

A file that cannot be read or decoded is named on stderr and skipped; the
others are still predicted, and the exit status is then 1.

bin/predict --model=workdirs/demo/model.keras path/to/bird.jpg
bin/predict --model=workdirs/demo/export some/folder/of/images
"""

import os
import sys

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402

from dcl_keras.errors import UserError  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "A .keras file, or an export folder (<dir> or <dir>/<version>).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "How many classes to print per image.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")
flags.mark_flags_as_required(["model"])


def main(argv):
    from dcl_keras.predict import Predictor, list_images

    if len(argv) < 2:
        raise UserError("Give one or more image files or folders after the flags. Received: none")
    paths = list_images(argv[1:])
    predictor = Predictor(_MODEL.value, top_k=_TOP_K.value)
    failures = []
    for start in range(0, len(paths), _BATCH.value):
        for path, top in predictor.predict(paths[start : start + _BATCH.value], failures):
            print(path)
            for name, prob in top:
                print(f"  {prob:.4f}  {name}")
    for _, reason in failures:
        print(f"predict: error: {reason}", file=sys.stderr)
    if failures:
        print(f"predict: {len(failures)} of {len(paths)} file(s) could not be predicted.", file=sys.stderr)
        sys.exit(1)


def run():
    """The `dcl-predict` console command (bin/predict)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
