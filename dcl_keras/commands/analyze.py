"""Where trained models look: CAM grids, per-filter responses, the pointing game (paper Figs. 5, 6).

    bin/analyze cam --workdir=runs/dcl --compare=runs/baseline     # cam_grid.png: image, baseline, DCL
    bin/analyze responses --workdir=runs/dcl                       # responses.png and responses.json
    bin/analyze pointing --workdir=runs/dcl --workdir=runs/base    # pointing.json in each workdir
    bin/analyze seams --workdir=runs/dcl --num_images=200          # seams.json: what the discriminator reads

Each workdir is a bin/train workdir (its config.json and model.keras). The
images are its test split with the evaluation preprocessing. Pointing needs
object boxes (demo, cub200, fgvc_aircraft); its figures also go into the
results table of a sweep (bin/sweep --mode=collect). PNGs and JSON go to
--out_dir (default: the first workdir).
"""

import os

from dcl_keras import cli

cli.select_backend()

from absl import flags  # noqa: E402

from dcl_keras import workdir as run_folder  # noqa: E402

COMMANDS = ("cam", "responses", "pointing", "seams")
_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "bin/train workdir(s) to analyze.")
_COMPARE = flags.DEFINE_string("compare", None, "cam: a second workdir (e.g. the baseline) drawn before --workdir.")
_NUM = flags.DEFINE_integer("num_images", 8, "cam, responses: test images to show; seams: test images to probe.")
_OUT = flags.DEFINE_string("out_dir", None, "Where to write; default the first --workdir.")
flags.DEFINE_enum("backend", os.environ.get("KERAS_BACKEND", "tensorflow"), cli.BACKENDS, "Keras backend.")
flags.mark_flags_as_required(["workdir"])


def _load(workdir):
    from dcl_keras import saving
    from dcl_keras.data import datasets
    from dcl_keras.errors import UserError
    from dcl_keras.models import dcl

    config = run_folder.load_config(workdir)
    model = saving.load_model(run_folder.model_file(workdir))
    if not isinstance(model, dcl.DCLModel):
        raise UserError(f"{workdir}/{run_folder.FINAL_MODEL}: expected a DCLModel (written by bin/train)")
    return config, model, datasets.load_splits(config.data).test


def _run_name(workdir):
    """A short name of a run: its folder, with the point's folder for a sweep's seed_<S> workdirs."""
    parts = os.path.normpath(os.path.abspath(workdir)).split(os.sep)
    return "/".join(parts[-2:]) if parts[-1].startswith("seed_") else parts[-1]


def _chosen(split, config, count):
    """`count` test images spread evenly over the (class-ordered) split: (images, labels)."""
    from dcl_keras.data import datasets, specs

    return datasets.spread_crops(split, specs.EvalSpec.from_config(config), count)


def _cam(out_dir):
    import numpy as np

    from dcl_keras import analysis
    from dcl_keras.viz.attention import plot_cam_grid

    runs = ([_COMPARE.value] if _COMPARE.value else []) + _WORKDIRS.value
    loaded = [_load(w) for w in runs]
    config, _, split = loaded[-1]
    images, labels = _chosen(split, config, _NUM.value)
    names = split.class_names
    cams = {}
    for workdir, (_, model, _) in zip(runs, loaded, strict=True):
        maps = analysis.upsample(analysis.class_activation_maps(model, images, labels), images.shape[1])
        _, logits = analysis.features_and_logits(model, images)
        captions = [f"pred {names[int(np.argmax(p))]}"[:28] for p in logits]
        name = _run_name(workdir)
        cams[name if name not in cams else f"{name} ({len(cams) + 1})"] = (maps, captions)
    path = os.path.join(out_dir, "cam_grid.png")
    plot_cam_grid(np.clip(images, 0, 255).astype(np.uint8), [names[int(i)][:28] for i in labels], cams, path)
    print(f"cam grid: {path}")


def _responses(out_dir):
    import json

    import numpy as np

    from dcl_keras import analysis, contract
    from dcl_keras.data import keyed_hash
    from dcl_keras.viz.attention import plot_responses

    config, model, split = _load(_WORKDIRS.value[0])
    images, labels = _chosen(split, config, min(_NUM.value, 4))
    n, k = config.rcm.n, max(min(config.rcm.k, config.rcm.n - 1), 1)
    if n == 1:  # A baseline run: destruct with the smallest grid that divides the crop.
        n = next(d for d in range(2, config.input.image_size + 1) if config.input.image_size % d == 0)
    responses, summary = [], []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        r = analysis.filter_responses(
            model, image, label, n=n, k=k, key=keyed_hash.combine_keys(config.seed, contract.ANALYSIS_EPOCH, i)
        )
        responses.append(r)
        summary.append(
            {
                "class": split.class_names[int(label)],
                "correlation": float(np.corrcoef(r["r_original"], r["r_destructed"])[0, 1]),
                "logit_contribution_original": float(r["r_original"].sum()),
                "logit_contribution_destructed": float(r["r_destructed"].sum()),
                "share_of_filters_with_positive_delta": None if r["delta"] is None else float(np.mean(r["delta"] > 0)),
            }
        )
    png, report = os.path.join(out_dir, "responses.png"), os.path.join(out_dir, "responses.json")
    plot_responses(responses, [s["class"][:32] for s in summary], png)
    with open(report, "w") as f:
        json.dump({"n": n, "k": k, "images": summary}, f, indent=2)
    print(f"responses: {png}\nfigures: {report}")


def _pointing():
    from dcl_keras import analysis
    from dcl_keras.data import demo, specs

    for workdir in _WORKDIRS.value:
        config, model, split = _load(workdir)
        parts = {}
        if config.data.source == "demo" and config.data.demo.kind == "birds":  # The generator knows the parts.
            parts = dict(parts=demo.part_boxes(split, demo.dataset_root(config.data.demo)), part_names=demo.PARTS)
        report = analysis.pointing_game(
            model, split, specs.EvalSpec.from_config(config), batch_size=config.eval.batch_size, **parts
        )
        folder = _OUT.value or workdir
        if _OUT.value and len(_WORKDIRS.value) > 1:  # One report per run, not one overwritten.
            folder = os.path.join(_OUT.value, _run_name(workdir).replace("/", "_"))
        path = os.path.join(folder, run_folder.POINTING)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run_folder.write_json(path, report, sort_keys=False)
        print(
            f"{workdir}: pointing hit rate {report['hit_rate']:.4f} over {report['num_images']} images "
            f"(always the centre: {report['centre_hit_rate']:.4f}) -> {path}"
        )
        if "part_hit_rate" in report:
            by_part = ", ".join(f"{k} {v:.3f}" for k, v in report["part_hit_rate_by_part"].items())
            print(
                f"  peak on a discriminative part: {report['part_hit_rate']:.4f} ({by_part}); "
                f"the parts cover {report['mean_part_area_fraction']:.3f} of the crop"
            )


def _seams():
    import json

    from dcl_keras import analysis, contract
    from dcl_keras.data import keyed_hash

    for workdir in _WORKDIRS.value:
        config, model, split = _load(workdir)
        images, _ = _chosen(split, config, _NUM.value)
        keys = [keyed_hash.combine_keys(config.seed, contract.ANALYSIS_EPOCH, i) for i in range(len(images))]
        report = analysis.seam_probe(model, images, n=config.rcm.n, k=config.rcm.k, keys=keys, seed=config.seed)
        folder = _OUT.value or workdir
        if _OUT.value and len(_WORKDIRS.value) > 1:
            folder = os.path.join(_OUT.value, _run_name(workdir).replace("/", "_"))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "seams.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        rates = ", ".join(f"{name} {report[name]['called_destructed']:.3f}" for name in analysis.SEAM_CONDITIONS)
        print(f"{workdir}: called destructed: {rates}; banded pair accuracy {report['banded_pair_accuracy']:.3f}")
        print(f"  -> {path}")


def main(argv):
    from dcl_keras.errors import UserError

    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise UserError(f"Expected one command, one of {COMMANDS}. Received: {argv[1:]}")
    out_dir = _OUT.value or _WORKDIRS.value[0]
    os.makedirs(out_dir, exist_ok=True)
    commands = {"cam": lambda: _cam(out_dir), "responses": lambda: _responses(out_dir), "pointing": _pointing}
    commands["seams"] = _seams
    commands[argv[1]]()


def run():
    """The `dcl-analyze` console command (bin/analyze)."""
    cli.run_command(main, __name__)


if __name__ == "__main__":
    run()
