"""Builds a gallery of class prototypes, so that classes added after training are recognised without retraining.

    bin/gallery --model=workdirs/demo/model.keras --images=new_products --output=gallery.npz
    bin/gallery --model=workdirs/demo/export --images=week_1,week_2 --config=configs/demo.py --output=gallery.npz
    bin/predict --model=workdirs/demo/model.keras --gallery=gallery.npz photo.jpg

Each class's prototype is the normalised mean embedding of its images
(dcl_keras/gallery.py); bin/predict --gallery ranks an image against every
prototype by cosine similarity. --images: folders of class sub-folders
(<folder>/<class>/*.jpg, as bin/train's image folder). --config: the training
config, whose training split adds the known classes, so that known and new
classes are ranked together. A class name found in several sources is one
class, its prototype averaged over all its images. An image file that cannot
be read or decoded is named on stderr and skipped; the gallery is still
written, and the exit status is then 1.
"""

import os

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_MODEL = flags.DEFINE_string(
    "model", None, "A .keras file, or an export folder (<dir> or <dir>/<version>) with the serve_embeddings signature."
)
_IMAGES = flags.DEFINE_list("images", [], "Folders of class sub-folders (<folder>/<class>/*.jpg), comma-separated.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional training config file[:arg]: its training split adds the known classes.", lock_config=True
)
_OUTPUT = flags.DEFINE_string("output", None, "The gallery file to write (.npz).")
_MIN_IMAGES = flags.DEFINE_integer("min_images", 2, "The fewest usable images a class needs.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")
flags.mark_flags_as_required(["model", "output"])


def main(argv):
    from dcl_keras import gallery
    from dcl_keras.data import datasets
    from dcl_keras.errors import UserError
    from dcl_keras.predict import Predictor

    if len(argv) > 1:
        raise UserError(f"bin/gallery takes its folders with --images=. Received: arguments {argv[1:]}")
    if not _IMAGES.value and _CONFIG.value is None:
        raise UserError("Give --images=<folder>[,<folder>...] and/or --config=<training config>. Received: neither")
    if _BATCH.value < 1:
        raise UserError(f"--batch_size: expected an integer >= 1. Received: --batch_size={_BATCH.value}")
    # Listing the folders first: a missing or empty one is reported before the model and the data load.
    for root in _IMAGES.value:
        gallery.class_folders(root)
    split = datasets.load_splits(_CONFIG.value.data).train if _CONFIG.value is not None else None
    predictor = Predictor(_MODEL.value)
    failures = []
    built, summary = gallery.build(
        predictor, _IMAGES.value, split, min_images=_MIN_IMAGES.value, batch_size=_BATCH.value, failures=failures
    )
    built.save(_OUTPUT.value)
    new = summary["new"]
    print(
        f"gallery: {summary['classes']} classes ({summary['known']} known, {len(new)} new), "
        f"{summary['images']} images, embeddings of size {built.embedding_size}, model {built.model}"
    )
    for source in summary["sources"]:
        print(f"  from {source}")
    if new:
        print(f"  new: {', '.join(new[:20])}{f' ... and {len(new) - 20} more' if len(new) > 20 else ''}")
    if summary["merged"]:
        print(f"  merged (one class from several sources): {', '.join(summary['merged'])}")
    if summary["skipped"]:
        print(f"  skipped {summary['skipped']} training example(s) that did not decode")
    print(f"wrote {os.path.abspath(_OUTPUT.value)}")
    cli.exit_on_failures("gallery", failures, f"{len(failures)} image file(s) could not be read and were left out.")


def run():
    """The `dcl-gallery` console command (bin/gallery)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
