"""The label audit on the demo with known truth: does it find the wrong labels, and does cleaning win back accuracy?

    python benchmarks/noisy_catalogue.py                           # both settings, seeds 0-2, 5 folds
    python benchmarks/noisy_catalogue.py --folds=3 --kfold_seeds=0 # what docs/noisy-catalogue.md reports
    python benchmarks/noisy_catalogue.py --settings=flips --seeds=0 --folds=3 --epochs=5   # a quick look

Two catalogues with known truth, both at configs/demo.py's full recipe:

  flips    the demo with 20% of its training labels moved to another class
           (data.label_noise=0.2, the noise grid's flips: the same images in
           every seed);
  foreign  the clean demo plus 10% foreign images: typeface pages (the
           typefaces testbed's fonts) filed under bird classes, in an image
           folder written here (train/<class>/, test/<class>/).

Per seed it runs `bin/audit`'s two methods (K-fold with cleanlab, at the
--kfold_seeds; one run's area under the margin, which is also the run trained
on the noisy set), retrains on one method's exclude list (--clean_with), and
trains the clean demo once. It
prints, per setting and seed, the precision and recall of the flagged images
against the truth, the test top-1 of training on the noisy, cleaned and clean
sets, and the share of the loss that cleaning wins back; then mean +- std.
Runs resume (they are bin/sweep runs under --work_dir).
"""

import argparse
import os
import shutil
import sys

import numpy as np

from dcl_keras import audit, label_audit, sweep
from dcl_keras import workdir as run_folder
from dcl_keras.config import load_config_file
from dcl_keras.data import datasets, demo, typefaces

from common import ROOT, machine

CONFIG = os.path.join(ROOT, "configs", "demo.py")
NOISE = 0.2
FOREIGN = 0.1


def foreign_folder(out, share=FOREIGN, seed=0):
    """An image folder of the clean demo plus round(share x training images) typeface pages; returns the junk keys."""
    config = load_config_file(CONFIG)
    source = demo.dataset_root(config.data.demo)
    marker = os.path.join(out, "junk.txt")
    if os.path.isfile(marker):
        return [line.strip() for line in open(marker) if line.strip()]
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for split in ("train", "test"):
        shutil.copytree(os.path.join(source, split), os.path.join(tmp, split))
    classes = sorted(os.listdir(os.path.join(tmp, "train")))
    count = int(round(share * sum(len(os.listdir(os.path.join(tmp, "train", c))) for c in classes)))
    rng = np.random.default_rng([seed, 0xF0E1])
    junk = []
    for i in range(count):
        attributes = typefaces.ATTRIBUTES[rng.integers(len(typefaces.ATTRIBUTES))]
        image, _ = typefaces.render_with_box(rng, attributes, config.data.demo.image_size)
        key = f"train/{classes[i % len(classes)]}/page_{i:04d}.jpg"  # Keys name the split folder (split.keys()).
        image.convert("RGB").save(os.path.join(tmp, key), quality=90)
        junk.append(key)
    run_folder.write_text(os.path.join(tmp, "junk.txt"), "".join(k + "\n" for k in junk))
    os.replace(tmp, out)
    return junk


def flipped_keys():
    """The keys whose label data.label_noise=0.2 changes (the truth of the flips setting)."""
    config = load_config_file(CONFIG)
    clean = datasets.load_splits(config.data).train
    with config.data.unlocked():
        config.data.label_noise = NOISE
    noisy = datasets.load_splits(config.data).train
    return [k for k, a, b in zip(clean.keys(), clean.labels, noisy.labels, strict=True) if a != b]


def setting(name, work_dir):
    """(overrides, truth keys) of a setting; the foreign setting's folder is written on first use."""
    if name == "flips":
        return {"data.label_noise": str(NOISE)}, flipped_keys()
    root = os.path.join(work_dir, "foreign_data")
    return {"data.source": "image_folder", "data.root": root, "data.check_files": "True"}, foreign_folder(root)


def run_or_exit(runs):
    failed = sweep.run_all(runs, log=lambda m: print(m, flush=True))
    if failed:
        sys.exit(f"{len(failed)} run(s) failed: see {failed[0]['workdir']}/train.log")
    return runs


def top1(run):
    return run_folder.read_evaluation(run["workdir"], "rerun this script")["top1"]


def one_seed(name, overrides, truth, seed, args):
    """{precision, recall, ..., top-1s} of one setting at one seed."""
    base = os.path.join(args.work_dir, name, f"seed_{seed}")
    common = {**overrides, **args.set}
    result = {}
    methods = ("kfold", "aum") if seed in args.kfold_seeds else ("aum",)
    for method in methods:
        folder = os.path.join(base, f"audit_{method}")
        runs = run_or_exit(audit.plan(CONFIG, folder, method=method, folds=args.folds, seed=seed, overrides=common))
        sweep.save_plan(runs, folder, f"benchmarks/noisy_catalogue.py {name} seed {seed}")
        rows, flagged, summary, _, _ = audit.collect(folder)
        audit.write(folder, rows, summary)
        keys = [row["key"] for row in rows if row["flagged"]]
        result[f"{method}_precision"], result[f"{method}_recall"] = label_audit.precision_recall(keys, truth)
        result[f"{method}_flagged"] = len(keys)
        if method == "aum":
            result["noisy"] = top1(runs[0])  # Margins are read after each epoch: training is the plain noisy run.
    exclude = os.path.join(base, f"audit_{args.clean_with}", audit.EXCLUDE)
    cleaned = sweep.plan(
        CONFIG,
        "single",
        [seed],
        os.path.join(base, f"cleaned_{args.clean_with}"),
        overrides={**common, "data.exclude": exclude},
    )
    result["cleaned"] = top1(run_or_exit(cleaned)[0])
    return result


def clean_top1(seed, args):
    runs = sweep.plan(CONFIG, "single", [seed], os.path.join(args.work_dir, "clean"), overrides=dict(args.set))
    return top1(run_or_exit(runs)[0])


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean, std = sweep.mean_std(values)
    return "n/a" if mean is None else f"{mean:.3f}" + (f" +- {std:.3f}" if std is not None else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="flips,foreign", help="Comma-separated, of flips, foreign.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--kfold_seeds", default="0,1,2", help="The seeds at which the K-fold audit runs too.")
    parser.add_argument("--clean_with", default="aum", choices=["aum", "kfold"], help="Whose exclude list.")
    parser.add_argument("--epochs", type=int, default=0, help="Override train.epochs (a quick look; not the recipe).")
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "workdirs", "noisy_catalogue"))
    args = parser.parse_args()
    args.work_dir = os.path.abspath(args.work_dir)
    args.set = {"export.enabled": "False", "train.verbose": "2"}
    if args.epochs:
        args.set.update({"train.epochs": str(args.epochs), "train.decay_epochs": str(max(1, args.epochs * 3 // 4))})
    seeds = [int(s) for s in args.seeds.split(",")]
    args.kfold_seeds = [int(s) for s in args.kfold_seeds.split(",") if s]
    print(f"machine: {machine()}\nwork_dir: {args.work_dir}\nconfig: {CONFIG} {args.set}", flush=True)
    table = {}
    chosen = {name: setting(name, args.work_dir) for name in args.settings.split(",")}
    for seed in seeds:
        clean = clean_top1(seed, args)
        for name in args.settings.split(","):
            overrides, truth = chosen[name]
            row = {"kfold_flagged": None, "kfold_precision": None, "kfold_recall": None}
            row.update({**one_seed(name, overrides, truth, seed, args), "clean": clean, "truth": len(truth)})
            lost = row["clean"] - row["noisy"]
            row["recovered"] = (row["cleaned"] - row["noisy"]) / lost if lost > 0 else None
            table.setdefault(name, []).append(row)
            print(f"{name} seed {seed}: {row}", flush=True)
    columns = ["truth", "kfold_flagged", "kfold_precision", "kfold_recall", "aum_flagged", "aum_precision"]
    columns += ["aum_recall", "noisy", "cleaned", "clean", "recovered"]
    print("\n| setting | " + " | ".join(columns) + " |\n|" + " --- |" * (len(columns) + 1))
    for name, rows in table.items():
        print(f"| {name} | " + " | ".join(stats([r[c] for r in rows]) for c in columns) + " |")


if __name__ == "__main__":
    main()
