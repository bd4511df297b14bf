"""New products without retraining: the demo trained on 15 of its 20 classes, the other 5 added by a gallery.

    python benchmarks/new_products.py                          # seeds 0, 1, 2: 6 demo trainings, 15-20 min
    python benchmarks/new_products.py --seeds=0 --epochs=1     # a quick check that it runs (not a measurement)

The measurement of issue 35: configs/demo.py's recipe trains on 15 of the
demo's 20 classes (an image folder of their train/ and test/ images); a
gallery (dcl_keras/gallery.py, as bin/gallery builds it) holds the 15 known
classes from that training split and the 5 held-out classes from 5 training
images each; top-1 is then counted on the held-out classes' test images and
on all 20 test sets together, ranked by cosine similarity to the prototypes
(as bin/predict --gallery ranks). The closed-set classifier is configs/demo.py
on all 20 classes (data.source=demo), same seeds, counted on the same images.

Held out: 5 classes drawn once (`random.Random(0).sample` of the sorted
class names, printed first), the same for every seed, so that seeds vary the
training only. The draw holds out three spike-crested birds (two differ in
the tail alone), a double-crested and a tufted one; each crest, wing and tail
they show is also seen in training, in other combinations, as a new product
shares its parts with known ones. The gallery's images are the first 5 training images
(file-name order) of each. The runs go through bin/sweep's machinery (one
bin/train a run, resumable: run again with the same --work_dir to resume).
"""

import argparse
import functools
import os
import random
import shlex
import shutil
import sys
import tempfile

from dcl_keras import gallery, sweep
from dcl_keras import workdir as run_folder
from dcl_keras.config import load_config_file
from dcl_keras.data import datasets, demo, readers
from dcl_keras.predict import Predictor

from common import ROOT, machine

CONFIG = os.path.join(ROOT, "configs", "demo.py")
HELD_OUT_DRAW = 0  # The seed of the one draw of held-out classes.
COLUMNS = (
    ("held_out_gallery", "held-out 5, gallery"),
    ("all_gallery", "all 20, gallery"),
    ("known_gallery", "known 15, gallery"),
    ("known_classifier", "known 15, its classifier"),
    ("held_out_closed", "held-out 5, closed-set"),
    ("all_closed", "all 20, closed-set"),
)


def write_folders(demo_root, work_dir, held_out, shots):
    """(known image folder with train/ and test/, gallery folder of the held-out classes' first `shots` images)."""
    known_root, new_root = os.path.join(work_dir, "data_known"), os.path.join(work_dir, f"gallery_images_{shots}")
    os.makedirs(work_dir, exist_ok=True)
    names = readers.image_folder(demo_root, "train").class_names
    for target, wanted in ((known_root, [n for n in names if n not in held_out]), (new_root, held_out)):
        if os.path.isdir(target):
            continue  # Written by an earlier start (atomically): the same files.
        with run_folder.atomic_path(target, tmp=tempfile.mkdtemp(prefix=".tmp-", dir=work_dir)) as tmp:
            for name in wanted:
                if target == known_root:
                    for split in ("train", "test"):
                        shutil.copytree(os.path.join(demo_root, split, name), os.path.join(tmp, split, name))
                    continue
                files = sorted(os.listdir(os.path.join(demo_root, "train", name)))[:shots]
                os.makedirs(os.path.join(tmp, name))
                for f in files:
                    shutil.copy(os.path.join(demo_root, "train", name, f), os.path.join(tmp, name, f))
    return known_root, new_root


def run_sweep(name, overrides, seeds, work_dir, log):
    """{seed: run} of configs/demo.py with `overrides`, trained (or resumed) through bin/sweep's runner."""
    sweep_dir = os.path.join(work_dir, name)
    runs = sweep.plan(CONFIG, "single", seeds, sweep_dir, overrides=overrides)
    sweep.save_plan(runs, sweep_dir, " ".join(sys.argv))
    failed = sweep.run_all(runs, log=log)
    if failed:
        sys.exit(f"{len(failed)} run(s) failed: see {failed[0]['workdir']}/train.log")
    return {run["seed"]: run for run in runs}


def top1(ranked, truth):
    """The share of images whose first class is the true one."""
    return sum(top[0][0] == name for (_, top), name in zip(ranked, truth, strict=True)) / len(truth)


def measure_seed(known_dir, closed_dir, new_root, test, held_out, output, batch_size=64):
    """One seed's row: top-1 of the gallery (written to `output`) and of both classifiers on the demo's test images."""
    paths, truth = test.paths, [test.class_names[label] for label in test.labels]
    predictor = Predictor(os.path.join(known_dir, run_folder.FINAL_MODEL))
    split = datasets.load_splits(run_folder.load_config(known_dir).data).train
    built, _ = gallery.build(predictor, [new_root], split, batch_size=batch_size)
    built.save(output)
    ranked = []
    for start in range(0, len(paths), batch_size):
        ranked += built.predict(predictor, paths[start : start + batch_size])
    closed = Predictor(os.path.join(closed_dir, run_folder.FINAL_MODEL), top_k=1)
    held = [i for i, name in enumerate(truth) if name in held_out]
    known = [i for i, name in enumerate(truth) if name not in held_out]
    closed_ranked = closed.predict([paths[i] for i in held])

    def part(indices, rows=ranked):
        return top1([rows[i] for i in indices], [truth[i] for i in indices])

    return {
        "held_out_gallery": part(held),
        "all_gallery": top1(ranked, truth),
        "known_gallery": part(known),
        "known_classifier": run_folder.read_evaluation(known_dir, "rerun bin/train")["top1"],
        "held_out_closed": top1(closed_ranked, [truth[i] for i in held]),
        "all_closed": run_folder.read_evaluation(closed_dir, "rerun bin/train")["top1"],
    }


def print_table(rows, seeds):
    print(f"\nTest top-1 per seed; mean +- sample std (machine: {machine()}):")
    print("| seed | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for seed in seeds:
        print(f"| {seed} | " + " | ".join(f"{rows[seed][key]:.4f}" for key, _ in COLUMNS) + " |")
    summary = []
    for key, _ in COLUMNS:
        mean, std = sweep.mean_std([rows[seed][key] for seed in seeds])
        summary.append(f"{mean:.4f} +- {std:.4f}" if std is not None else f"{mean:.4f}")
    print("| mean | " + " | ".join(summary) + " |")


def print_commands(known, closed, known_root, new_root, demo_root, output):
    """The commands of one seed: both trainings, then bin/gallery and bin/predict --gallery as measured here."""
    model = os.path.join(known["workdir"], run_folder.FINAL_MODEL)
    data = f"--config.data.source=image_folder --config.data.root={known_root}"
    print("\nCommands (the first seed; the others differ in --config.seed, the workdir and the gallery file):")
    for run in (known, closed):
        print(f"  {shlex.join(run['command'])}")
    print(f"  {ROOT}/bin/gallery --model={model} --images={new_root} --config={CONFIG} {data} --output={output}")
    print(f"  {ROOT}/bin/predict --model={model} --gallery={output} --top_k=1 {os.path.join(demo_root, 'test')}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated integer seeds.")
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "workdirs", "bench_new_products"))
    parser.add_argument("--epochs", type=int, default=None, help="Override configs/demo.py's train.epochs.")
    parser.add_argument("--shots", type=int, default=5, help="Gallery images of each held-out class.")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers. Received: {args.seeds!r}")
    work_dir = os.path.abspath(args.work_dir)
    print(f"machine: {machine()}\nruns: {work_dir}", flush=True)
    demo_root = demo.dataset_root(load_config_file(CONFIG).data.demo)
    test = readers.image_folder(demo_root, "test")
    held_out = sorted(random.Random(HELD_OUT_DRAW).sample(test.class_names, 5))
    print(f"held out: {', '.join(held_out)}", flush=True)
    known_root, new_root = write_folders(demo_root, work_dir, held_out, args.shots)
    common = {"export.enabled": False, **({"train.epochs": args.epochs} if args.epochs else {})}
    log = functools.partial(print, flush=True)
    known_runs = run_sweep(
        "known_15", {**common, "data.source": "image_folder", "data.root": known_root}, seeds, work_dir, log
    )
    closed_runs = run_sweep("closed_20", common, seeds, work_dir, log)
    rows, outputs = {}, {seed: os.path.join(work_dir, f"gallery_seed_{seed}.npz") for seed in seeds}
    for seed in seeds:
        known, closed = known_runs[seed]["workdir"], closed_runs[seed]["workdir"]
        rows[seed] = measure_seed(known, closed, new_root, test, held_out, outputs[seed])
    print_table(rows, seeds)
    first = seeds[0]
    print_commands(known_runs[first], closed_runs[first], known_root, new_root, demo_root, outputs[first])
    return 0


if __name__ == "__main__":
    sys.exit(main())
