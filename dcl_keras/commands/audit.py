"""Finds the training images whose label is likely wrong: a ranked list, an exclude list and a page of thumbnails.

    bin/audit --config=configs/demo.py --audit_dir=audits/demo                 # K-fold (5), run here
    bin/audit --config=configs/demo.py --audit_dir=audits/demo --mode=slurm    # the folds as a SLURM array
    bin/audit --audit_dir=audits/demo --mode=collect                           # rank once the runs have finished
    bin/audit --config=configs/demo.py --audit_dir=audits/demo_aum --method=aum

`kfold` trains K runs, each on all folds but one, and ranks every training
image by the probability the model that did not train on it gives its label
(cleanlab's confident learning flags the suspects). `aum` trains one run and
ranks by the image's mean margin over the epochs (area under the margin):
K times cheaper, less precise (docs/noisy-catalogue.md). Modes are bin/sweep's:
`run` trains the unfinished runs here, `commands` and `slurm` write them out,
`collect` ranks. Then train on the cleaned set:

    bin/train --config=configs/demo.py --config.data.exclude=audits/demo/exclude.txt --workdir=...
"""

import os
import shlex
import sys

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402

_CONFIG = flags.DEFINE_string("config", None, "Config file[:arg], as bin/train takes it (not needed to collect).")
_AUDIT_DIR = flags.DEFINE_string("audit_dir", None, "Folder for the audit's runs and its results.")
_METHOD = flags.DEFINE_enum("method", "kfold", ["kfold", "aum"], "Out-of-fold probabilities, or one run's margins.")
_FOLDS = flags.DEFINE_integer("folds", 5, "kfold: how many folds (runs).")
_SEED = flags.DEFINE_integer("seed", 0, "The runs' seed (the folds themselves follow data.split_seed).")
_MODE = flags.DEFINE_enum("mode", "run", ["run", "commands", "slurm", "collect"], "What to do (see above).")
_SET = flags.DEFINE_multi_string("set", [], "field=value for every run (repeatable), e.g. train.epochs=30.")
_SBATCH = flags.DEFINE_multi_string("sbatch", [], "slurm mode: extra #SBATCH options, e.g. --gres=gpu:1.")
_THUMBNAILS = flags.DEFINE_integer("thumbnails", 60, "How many of the top suspects audit.html shows.")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")
flags.mark_flags_as_required(["audit_dir"])


def main(argv):
    del argv
    from dcl_keras import audit, sweep
    from dcl_keras.errors import UserError
    from dcl_keras.report import audit_page

    audit_dir = os.path.abspath(_AUDIT_DIR.value)
    failed = []
    if _MODE.value != "collect":
        if not _CONFIG.value:
            raise UserError(f"--config is required in mode {_MODE.value!r}. Received: --config=None")
        overrides = sweep.parse_assignments(_SET.value, "--set")
        runs = audit.plan(
            _CONFIG.value, audit_dir, method=_METHOD.value, folds=_FOLDS.value, seed=_SEED.value, overrides=overrides
        )
        sweep.save_plan(runs, audit_dir, shlex.join(["bin/audit", *sys.argv[1:]]))
        print(f"{len(runs)} run(s) planned in {audit_dir}")
        if _MODE.value == "commands":
            print(f"commands: {sweep.write_commands(runs, audit_dir)}; then --mode=collect")
            return
        if _MODE.value == "slurm":
            print(f"slurm array job: {sweep.write_slurm(runs, audit_dir, _SBATCH.value)}; then --mode=collect")
            return
        failed = sweep.run_all(runs)
        if failed:
            print(f"{len(failed)} run(s) failed, first: {failed[0]['workdir']}/train.log", file=sys.stderr)
            sys.exit(1)
    rows, flagged, summary, config, split = audit.collect(audit_dir)
    paths = audit.write(audit_dir, rows, summary)
    page = audit_page.write_audit_page(
        audit_dir, rows, summary, audit.thumbnails(config, split, rows, _THUMBNAILS.value)
    )
    print(f"{flagged} of {len(rows)} training images flagged ({summary['method']}).")
    for row in rows[:10]:
        print(f"  {row['score']:9.4f}  {row['key']}  given {row['label']}, suggested {row['suggested']}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"page: {page}")


def run():
    """The `dcl-audit` console command (bin/audit)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
