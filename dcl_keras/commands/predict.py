"""Top-5 class names with probabilities for images, from a .keras model or a TF Serving export.

A file that cannot be read or decoded is named on stderr and skipped; the
others are still predicted, and the exit status is then 1.

bin/predict --model=workdirs/demo/model.keras path/to/bird.jpg
bin/predict --model=workdirs/demo/export some/folder/of/images
bin/predict --model=workdirs/demo/model.keras --gallery=gallery.npz photo.jpg

With --gallery (a file from bin/gallery), the classes are the gallery's,
known and added after training together, and each score is the COSINE
SIMILARITY of the image's embedding to the class prototype (in [-1, 1]), not
a probability; a first line starting with "#" says so.
"""

import functools
import os

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402

from dcl_keras.errors import UserError  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "A .keras file, or an export folder (<dir> or <dir>/<version>).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "How many classes to print per image.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
_GALLERY = flags.DEFINE_string(
    "gallery", None, "A bin/gallery file: rank its classes by cosine similarity (printed instead of probability)."
)
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")
flags.mark_flags_as_required(["model"])


def main(argv):
    from dcl_keras.predict import Predictor, list_images

    if len(argv) < 2:
        raise UserError("Give one or more image files or folders after the flags. Received: none")
    paths = list_images(argv[1:])
    predictor = Predictor(_MODEL.value, top_k=_TOP_K.value)
    predict = predictor.predict
    if _GALLERY.value:
        from dcl_keras.gallery import Gallery

        gallery = Gallery.load(_GALLERY.value)
        gallery.check_model(predictor)
        print(f"# score: cosine similarity to the class prototypes of {_GALLERY.value} ({gallery.num_classes} classes)")
        predict = functools.partial(gallery.predict, predictor)
    failures = []
    for start in range(0, len(paths), _BATCH.value):
        for path, top in predict(paths[start : start + _BATCH.value], failures):
            print(path)
            for name, prob in top:
                print(f"  {prob:.4f}  {name}")
    cli.exit_on_failures("predict", failures, f"{len(failures)} of {len(paths)} file(s) could not be predicted.")


def run():
    """The `dcl-predict` console command (bin/predict)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
