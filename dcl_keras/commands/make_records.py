"""Writes a dataset as sharded TFRecord files for `data.source=records`.

    bin/make_records --config=configs/cub_resnet50.py:root=/data/CUB_200_2011 --out=/data/cub_records
    bin/make_records --config=configs/demo.py --out=/tmp/demo_records --num_shards=8 \
        --config.data.val_fraction=0.1
    bin/train --config=configs/cub_resnet50.py --config.data.source=records \
        --config.data.root=/data/cub_records --workdir=runs/cub

The `data` section of the config says what to read (image folder, annotation
lists, CUB-200-2011, FGVC-Aircraft, TFDS, the demo, or another records
folder); its train, validation (the source's own, or data.val_fraction carved
out) and test splits are written to --out with a manifest.json of class names
and counts. Image bytes are copied, not re-encoded; undecodable files are
reported and left out (listed in the manifest).
"""

from dcl_keras import cli

cli.select_backend()

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:arg] whose `data` section is read.")
_OUT = flags.DEFINE_string("out", None, "The records folder to write (created; must not hold a manifest yet).")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 16, "Shards of the training split (any count suits any host count; more mix the read order better)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the order in which examples are dealt to the shards.")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
    del argv
    import os

    from dcl_keras import config
    from dcl_keras.data import datasets, records
    from dcl_keras.errors import UserError

    logging.set_verbosity(logging.INFO)
    out = os.path.abspath(os.path.expanduser(_OUT.value))
    if os.path.exists(os.path.join(out, records.MANIFEST)):
        raise FileExistsError(f"--out already holds a records folder ({records.MANIFEST}): {out}")
    data = _CONFIG.value.data
    if config.is_label_study(data):
        raise UserError(
            "bin/make_records writes the dataset as it is: drop --config.data.label_noise and "
            "--config.data.long_tail_ratio (set them when training from a file-based source). Received: "
            f"data.label_noise={data.label_noise}, data.long_tail_ratio={data.long_tail_ratio}"
        )
    if data.audit_folds:
        raise UserError(
            "bin/make_records writes the whole training split; an audit fold would leave one fold out. Drop "
            f"--config.data.audit_folds. Received: data.audit_folds={data.audit_folds}"
        )
    data.check_files = False  # The writer decodes every image once and lists the ones it leaves out.
    splits = datasets.load_splits(data)
    chosen = {"train": splits.train, "test": splits.test}
    if splits.val is not None:
        chosen["val"] = splits.val
    manifest = records.write_records(chosen, out, _NUM_SHARDS.value, _SEED.value)
    for name, entry in manifest["splits"].items():
        left = f", {len(entry['left_out'])} undecodable left out" if entry["left_out"] else ""
        print(f"{name}: {entry['examples']} examples in {len(entry['shards'])} shard(s){left}")
    print(f"records: {out} ({len(manifest['class_names'])} classes)")


def run():
    """The `dcl-make-records` console command (bin/make_records)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
