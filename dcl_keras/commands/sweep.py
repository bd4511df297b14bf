"""Runs a grid of experiments over seeds, resumably, and tables mean +- std per grid point.

    bin/sweep --config=configs/demo.py --grid=ablation --seeds=0,1,2,3,4 --sweep_dir=sweeps/ablation
    bin/sweep --config=configs/demo.py --grid=ablation --vary=train.learning_rate=0.05,0.1,0.2 ...
    bin/sweep --config=configs/cub_resnet50.py:root=/data/CUB_200_2011 --grid=n --mode=slurm ...
    bin/sweep --sweep_dir=sweeps/ablation --mode=collect

Modes: `run` trains the unfinished runs here, one after another; `commands`
writes one shell line per run (`xargs -d '\\n' -P 4 -n 1 sh -c < commands.txt`
or `parallel -j 4 < commands.txt`); `slurm` writes an array job over those
lines (`sbatch sweep.sbatch`); `collect` tables what has finished. Every mode
but `collect` writes the plan (sweep.json); `run` and `collect` write
results.csv, results.md and report.html (one plot per metric, each seed a
point, links to each run's report.html). Grids: see dcl_keras/experiments.py.
"""

import os
import shlex
import sys

from dcl_keras import cli, commands

cli.select_backend()

from absl import flags  # noqa: E402

from dcl_keras import experiments  # noqa: E402

_CONFIG = flags.DEFINE_string("config", None, "Base config file[:arg], as bin/train takes it.")
_GRID = flags.DEFINE_enum("grid", "single", experiments.GRIDS, "Named grid of overrides.")
_POINTS = flags.DEFINE_list("points", [], "Only these points of the grid, e.g. arm=baseline,arm=dcl.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds of every grid point.")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Folder for the plan, the runs' workdirs and the results.")
_MODE = flags.DEFINE_enum("mode", "run", ["run", "commands", "slurm", "collect"], "What to do (see above).")
_VARY = flags.DEFINE_multi_string("vary", [], "field=v1,v2,...: crossed with the grid (repeatable).")
_SET = flags.DEFINE_multi_string("set", [], "field=value for every run (repeatable), e.g. train.epochs=30.")
_DATA_ROOTS = flags.DEFINE_list("data_roots", [], "table1 grid: cub=DIR,cars=TFDS_DATA_DIR,aircraft=DIR.")
_SBATCH = flags.DEFINE_multi_string("sbatch", [], "slurm mode: extra #SBATCH options, e.g. --gres=gpu:1.")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")
flags.mark_flags_as_required(["sweep_dir"])


def main(argv):
    del argv
    from dcl_keras import sweep
    from dcl_keras.errors import UserError

    sweep_dir = os.path.abspath(_SWEEP_DIR.value)
    if _MODE.value != "collect":
        if not _CONFIG.value:
            raise UserError(f"--config is required in mode {_MODE.value!r}. Received: --config=None")
        try:
            seeds = [int(s) for s in _SEEDS.value]
        except ValueError:
            raise UserError(f"--seeds: expected integers. Received: --seeds={','.join(_SEEDS.value)}") from None
        vary = {k: v.split(",") for k, v in sweep.parse_assignments(_VARY.value, "--vary").items()}
        roots = {
            name: os.path.abspath(os.path.expanduser(root))
            for name, root in sweep.parse_assignments(_DATA_ROOTS.value, "--data_roots").items()
        }
        runs = sweep.plan(
            _CONFIG.value,
            _GRID.value,
            seeds,
            sweep_dir,
            vary=vary,
            overrides=sweep.parse_assignments(_SET.value, "--set"),
            data_roots=roots,
            points=_POINTS.value,
        )
        sweep.save_plan(runs, sweep_dir, shlex.join(["bin/sweep", *sys.argv[1:]]))
        print(f"{len(runs)} runs planned in {sweep_dir}")
        # The files list every run planned in this folder: earlier plans keep their line numbers, so array
        # tasks of an earlier submission still read their own line.
        everything = sweep.load_plan(sweep_dir)["runs"]
        if _MODE.value == "commands":
            print(f"commands ({len(everything)} runs): {sweep.write_commands(everything, sweep_dir)}")
            return
        if _MODE.value == "slurm":
            print(
                f"slurm array job ({len(everything)} runs): {sweep.write_slurm(everything, sweep_dir, _SBATCH.value)}"
            )
            warning = sweep.slurm_signal_warning(_SBATCH.value)
            if warning:
                print(warning)
            return
        failed = sweep.run_all(runs)
    else:
        failed = []
    _, _, page = commands.collect_sweep(sweep_dir)
    print(open(os.path.join(sweep_dir, sweep.RESULTS_MD)).read())
    print(f"results: {os.path.join(sweep_dir, sweep.RESULTS_CSV)}")
    print(f"report: {page}")
    if failed:
        print(f"{len(failed)} run(s) failed: " + ", ".join(f"{r['point']} seed {r['seed']}" for r in failed))
        sys.exit(1)


def run():
    """The `dcl-sweep` console command (bin/sweep)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
