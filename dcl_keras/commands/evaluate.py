"""Evaluates a trained model on its test split: top-1/top-5, per-class accuracy, confusions.

    bin/evaluate --workdir=workdirs/demo
    bin/evaluate --workdir=workdirs/demo --model=workdirs/demo/checkpoints/latest.keras
    bin/evaluate --workdir=workdirs/demo --split=val   # the validation split, when the run has one
    bin/evaluate --workdir=workdirs/demo --split=train # its training images, evaluation preprocessing

    bin/evaluate --workdir=workdirs/demo --flip    # horizontal-flip test-time averaging
    bin/evaluate --workdir=workdirs/demo --precise_bn_batches=50 --out_dir=/tmp/pbn   # BN re-estimated first

Writes evaluation.json, confusion_matrix.png and confused_pairs.png into
--out_dir (default: the workdir for the run's own test evaluation, else
<workdir>/evaluation_<variant> for --split=val or train, --model, a --flip setting other
than the run's, or --precise_bn_batches, so the run's report is never replaced).
"""

import os

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402

from dcl_keras import workdir as run_folder  # noqa: E402
from dcl_keras.errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "The bin/train workdir (config.json, model.keras).")
_MODEL = flags.DEFINE_string("model", None, "A .keras model; default <workdir>/model.keras.")
_OUT = flags.DEFINE_string("out_dir", None, "Where to write the report; default the workdir.")
_FLIP = flags.DEFINE_bool("flip", None, "Average each image with its mirror (default: the run's eval.flip).")
_PRECISE_BN = flags.DEFINE_integer(
    "precise_bn_batches", 0, "Re-estimate BatchNorm statistics on this many training batches first (not saved)."
)
_SPLIT = flags.DEFINE_enum(
    "split",
    "test",
    ["test", "val", "train"],
    "Which split of the run's data to evaluate; train: its training images with evaluation preprocessing "
    "(no augmentation, no RCM), to see how much of them a model fits (with the run's labels: noisy or "
    "subsampled where data.label_noise or data.long_tail_ratio made them so).",
)
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    from dcl_keras import evaluation, saving
    from dcl_keras.data import datasets
    from dcl_keras.models import dcl

    config = run_folder.load_config(_WORKDIR.value)
    model = saving.load_model(run_folder.model_file(_WORKDIR.value, _MODEL.value))
    splits = datasets.load_splits(config.data)
    split = getattr(splits, _SPLIT.value)
    if split is None:
        raise UserError("This run has no validation split (set data.val_fraction when training). Received: --split=val")
    if _PRECISE_BN.value < 0:
        raise UserError(f"--precise_bn_batches: expected 0 (off) or more. Received: {_PRECISE_BN.value}")
    evaluate = evaluation.evaluator(
        config,
        model.class_names,
        split_role=_SPLIT.value,
        flip=config.eval.flip if _FLIP.value is None else _FLIP.value,
    )
    classifier = dcl.classifier_model(model)
    extra = None
    if _PRECISE_BN.value:
        before = evaluation.headline(evaluate(classifier, split))
        before["batchnorm_layers"] = evaluation.precise_bn_for_config(
            classifier, splits.train, config, _PRECISE_BN.value
        )
        extra = {"before_precise_bn": before}
    out_dir = _OUT.value
    if not out_dir:  # Anything but the run's own test evaluation goes next to its report, never over it.
        flip = config.eval.flip if _FLIP.value is None else _FLIP.value
        variant = "_".join(
            name
            for name, on in (
                (_SPLIT.value, _SPLIT.value != "test"),
                (os.path.basename(_MODEL.value or "").replace(".keras", ""), bool(_MODEL.value)),
                ("flip" if flip else "noflip", flip != config.eval.flip),
                ("precise_bn", bool(_PRECISE_BN.value)),
            )
            if on
        )
        out_dir = os.path.join(_WORKDIR.value, f"evaluation_{variant}") if variant else _WORKDIR.value
    report = evaluate(classifier, split, out_dir=out_dir, extra=extra)
    topk = [k for k in report if k.startswith("top") and k != "top1"]
    print(f"{_SPLIT.value} split ({split.name})")
    print(
        f"top-1: {report['top1']:.4f}  {topk[0]}: {report[topk[0]]:.4f}  "
        f"mean per-class: {report['mean_class_accuracy']:.4f}  images: {report['num_examples']}"
        + ("  (flip averaged)" if report["flip"] else "")
    )
    print(f"report: {report['report_path']}\nconfusion matrix: {report['confusion_matrix_png']}")
    print(f"most-confused pairs: {report['confused_pairs_png']}")
    if extra:
        print(f"before precise BN: top-1 {extra['before_precise_bn']['top1']:.4f}")


def run():
    """The `dcl-evaluate` console command (bin/evaluate)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
