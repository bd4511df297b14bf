"""The paper's experiments as named grids of config overrides (run them with bin/sweep).

A grid is a list of points; a point is a name and the config overrides that
make it, computed from the base config so that every command spells out its
values (`--config.rcm.n=3 --config.input.image_size=96 ...`).

Ablation arms (dcl-spec.md section 5, the paper's Table 3):

* `baseline`: a plain classifier. No destructed views, no discriminator, no
  alignment head (rcm.destructed = 0, loss.beta = loss.gamma = 0), so it sees
  `batch_size` images a step where DCL sees `batch_size * (originals + destructed)`.
* `baseline_equal_compute`: the same classifier fed as many images a step as
  DCL (that many more examples a step), and the same steps per epoch as DCL
  (`train.epoch_batch_size`), so both arms cost the same.
* `destruction`: RCM views, classification loss only.
* `destruction_discriminator`: + the destruction discriminator (gamma = 0).
* `destruction_construction`: + the region alignment loss, no discriminator.
* `dcl`: the base config (all three losses).

Noisy and long-tailed catalogues (issue 12): `noise` flips 20% and 40% of the
training labels and compares plain cross entropy, label smoothing and
generalized cross entropy; `long_tail` subsamples the training classes to an
exponential profile (largest / smallest = 10) and compares class re-weighting
by effective number (beta 0, 0.99, 0.999). Both are crossed with whatever arm
the base config is (`--set` an arm's overrides, or run the baseline config).
"""

from dcl_keras.errors import UserError

ARMS = (
    "baseline",
    "baseline_equal_compute",
    "destruction",
    "destruction_discriminator",
    "destruction_construction",
    "dcl",
)
N_VALUES = (1, 2, 3, 5, 7, 9)
RATIOS = ((1, 0), (3, 1), (1, 1), (1, 3), (0, 1))
K_VALUES = (1, 2, 3)
GRIDS = ("ablation", "n", "ratio", "k", "reference_variants", "gamma", "noise", "long_tail", "table1", "single")
NOISE_LEVELS = (0.2, 0.4)
# Classification losses compared under label noise: plain cross entropy, label smoothing, generalized CE.
NOISE_LOSSES = (
    ("cross_entropy", {}),
    ("label_smoothing=0.1", {"loss.label_smoothing": 0.1}),
    ("gce", {"loss.classification": "gce", "loss.gce_q": 0.7}),
)
LONG_TAIL_RATIO = 10.0
CLASS_BALANCE_BETAS = (0.0, 0.99, 0.999)
# Table 1: (dataset, config file, the config argument that takes the dataset's folder).
TABLE1 = (
    ("cub", "configs/cub_resnet50.py", "root"),  # The extracted CUB_200_2011 folder.
    ("cars", "configs/cars_resnet50.py", "data_dir"),  # The TFDS data_dir holding cars196.
    ("aircraft", "configs/aircraft_resnet50.py", "root"),  # The extracted fgvc-aircraft-2013b folder.
)
TABLE1_BACKBONES = ("resnet50", "vgg16")


def arm_overrides(config, arm):
    """The overrides that turn `config` (a DCL config) into an ablation arm."""
    if arm not in ARMS:
        raise UserError(f"Unknown ablation arm: expected one of {ARMS}. Received: arm={arm!r}")
    if arm in ("baseline", "baseline_equal_compute"):
        overrides = {"rcm.originals": 1, "rcm.destructed": 0, "loss.beta": 0.0, "loss.gamma": 0.0}
        if arm == "baseline_equal_compute":
            batch = config.input.batch_size
            overrides["input.batch_size"] = batch * (config.rcm.originals + config.rcm.destructed)
            overrides["train.epoch_batch_size"] = config.train.epoch_batch_size or batch
        return overrides
    return {
        "destruction": {"loss.beta": 0.0, "loss.gamma": 0.0},
        "destruction_discriminator": {"loss.gamma": 0.0},
        "destruction_construction": {"loss.beta": 0.0},
        "dcl": {},
    }[arm]


def _n_point(config, n):
    if n == 1:  # N = 1 leaves the image whole: DCL is the baseline.
        return arm_overrides(config, "baseline")
    overrides = {"rcm.n": n, "rcm.k": min(config.rcm.k, n - 1)}
    if config.input.image_size % n:
        overrides["input.image_size"] = config.input.image_size // n * n
    return overrides


def _ratio_point(config, originals, destructed):
    if destructed == 0:
        return arm_overrides(config, "baseline")
    if originals == 0:  # Only destructed views: nothing for the discriminator to tell apart.
        return {"rcm.originals": 0, "rcm.destructed": destructed, "loss.beta": 0.0}
    return {"rcm.originals": originals, "rcm.destructed": destructed}


def grid_points(name, config, *, data_roots=None):
    """[(point name, config path or "" for the base, overrides dict)] of a named grid.

    Args:
        name: one of GRIDS.
        config: the base config (a ConfigDict), for the values overrides start from.
        data_roots: Table 1 only: {"cub": root, "cars": root, "aircraft": root}.
    """
    if name == "single":
        return [("base", "", {})]
    if name == "ablation":
        return [(f"arm={arm}", "", arm_overrides(config, arm)) for arm in ARMS]
    if name == "n":
        return [(f"n={n}", "", _n_point(config, n)) for n in N_VALUES]
    if name == "ratio":
        return [(f"ratio={o}:{d}", "", _ratio_point(config, o, d)) for o, d in RATIOS]
    if name == "k":
        if config.rcm.n <= max(K_VALUES):
            raise UserError(f"The k grid needs rcm.n > {max(K_VALUES)} (k < N). Received: rcm.n={config.rcm.n}")
        return [(f"k={k}", "", {"rcm.k": k}) for k in K_VALUES]
    if name == "gamma":
        return [(f"gamma={g}", "", {"loss.gamma": g}) for g in (0.01, 0.1, 1.0, 10.0)]
    if name == "noise":
        return [
            (f"noise={level}/{loss}", "", {"data.label_noise": level, **overrides})
            for level in NOISE_LEVELS
            for loss, overrides in NOISE_LOSSES
        ]
    if name == "long_tail":
        return [
            (
                f"long_tail={LONG_TAIL_RATIO:g}/class_balance={beta:g}",
                "",
                {"data.long_tail_ratio": LONG_TAIL_RATIO, "loss.class_balance_beta": beta},
            )
            for beta in CLASS_BALANCE_BETAS
        ]
    if name == "reference_variants":
        return [
            ("paper", "", {}),
            ("discriminator=2c", "", {"model.discriminator": "2c"}),
            ("alignment=sum", "", {"loss.alignment_reduction": "sum"}),
        ]
    if name == "table1":
        roots = data_roots or {}
        missing = [dataset for dataset, _, _ in TABLE1 if not roots.get(dataset)]
        if missing:
            raise UserError(
                f"The table1 grid needs each dataset's folder: missing {missing}. Expected "
                "--data_roots=cub=/data/CUB_200_2011,cars=/data/tfds,aircraft=/data/fgvc-aircraft-2013b "
                "(cars: the TFDS data_dir holding cars196)"
            )
        return [
            (f"{dataset}/{backbone}", f"{path}:{arg}={roots[dataset]},backbone={backbone}", {})
            for dataset, path, arg in TABLE1
            for backbone in TABLE1_BACKBONES
        ]
    raise UserError(f"Unknown grid: expected one of {GRIDS}. Received: grid={name!r}")
