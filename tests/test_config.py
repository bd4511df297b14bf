"""Config validation: every setting that cannot work fails before training, naming the field."""

import os
import subprocess
import sys

import pytest

from dcl_keras import config as config_lib
from dcl_keras import sweep
from dcl_keras.config import ConfigError, validate_config
from dcl_keras.errors import UserError

from helpers import ROOT, config_file


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("model.backbone", "resnet51", "model.backbone"),
        ("rcm.n", 5, "input.image_size"),
        ("rcm.k", 4, "rcm.k"),
        ("data.source", "imagenet", "data.source"),
        ("input.resize_size", 16, "input.resize_size"),
        ("loss.gamma", -1.0, "loss.gamma"),
        ("model.depth", 0, "model.depth"),
        ("model.depth", -1, "model.depth"),
        ("train.warmup_epochs", -1.0, "train.warmup_epochs"),
        ("train.warmup_epochs", 2.0, "train.warmup_epochs"),  # Not below train.epochs (tiny config: 2).
        ("input.resampling", "bicubic", "input.resampling"),
        ("input.cache_mb", -1, "input.cache_mb"),
        ("loss.destructed_alpha", -0.5, "loss.destructed_alpha"),
        ("data.exclude", "/no/such/exclude.txt", "data.exclude"),
        ("data.relabel", "/no/such/relabel.csv", "data.relabel"),
        ("data.audit_folds", 1, "data.audit_folds"),
        ("data.audit_fold", 1, "data.audit_fold"),  # With data.audit_folds = 0 (no audit).
    ],
)
def test_config_errors_name_the_field(tiny_config, field, value, expected):
    config = tiny_config.copy_and_resolve_references()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        validate_config(config)


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"rcm.destructed": 0}, "loss.beta"),  # A discriminator with one class, an alignment to identity.
        ({"rcm.destructed": 0, "loss.beta": 0.0}, "loss.gamma"),
        ({"rcm.n": 1, "rcm.k": 1}, "rcm.n"),  # N = 1: destructed views would be copies.
        ({"model.discriminator": "3way"}, "model.discriminator"),
        ({"loss.alpha": 0.0}, "loss.alpha"),
        ({"rcm.originals": 0}, "loss.beta"),  # 0:1: a discriminator with one class.
        ({"rcm.originals": 0, "loss.beta": 0.0, "loss.destructed_alpha": 0.0}, "loss.destructed_alpha"),
    ],
)
def test_ablations_that_would_not_mean_what_they_say_are_refused(tiny_config, overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate_config(sweep.apply_overrides(tiny_config, overrides))


def test_paper_defaults_alignment_mean_and_aircraft_k():
    assert config_lib.base_config().loss.alignment_reduction == "mean"
    assert config_file("cub_resnet50", "root=/x").loss.alignment_reduction == "mean"
    assert config_file("aircraft_resnet50", "root=/x").rcm.k == 1  # N = 2 allows only k = 1.
    assert config_file("aircraft_resnet50", "root=/x,n=7").rcm.k == 2  # The paper's k.
    assert config_file("aircraft_resnet50", "root=/x,n=7,k=3").rcm.k == 3


def test_the_base_config_validates_and_every_seed_can_be_set():
    c = config_lib.base_config()
    c.data.root = ROOT  # cub200 needs an existing folder; the layout is checked when the data is read.
    validate_config(c)
    assert c.seed == 0 and c.data.split_seed == 0 and c.data.demo.seed == 0  # Each settable from the command line.


def test_config_files_fail_with_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(UserError, match=r"Config file not found: .*nothing\.py"):
        config_lib.load_config_file(str(tmp_path / "nothing.py"))
    (tmp_path / "no_function.py").write_text("x = 1\n")
    with pytest.raises(UserError, match="expected a get_config"):
        config_lib.load_config_file(str(tmp_path / "no_function.py"))
    (tmp_path / "broken.py").write_text("def get_config(:\n")
    with pytest.raises(UserError, match="broken.py cannot be loaded"):
        config_lib.load_config_file(str(tmp_path / "broken.py"))
    with pytest.raises(UserError, match=r"Config argument 'colour=red': expected key=value with key in"):
        config_file("cub_resnet50", "root=/x,colour=red")
    spec = os.path.join(ROOT, "configs", "cub_resnet50.py") + ":root=/data/cub,n=3"
    assert config_lib.split_spec(spec) == (spec.split(":")[0], "root=/data/cub,n=3")
    assert config_lib.load_config_file(spec).input.image_size == 447  # 448 rounded down to a multiple of N = 3.


def test_parse_arg_types_values_by_their_defaults():
    values = config_lib.parse_arg("n=3,flag=yes,name=x", n=7, flag=False, name="", rate=0.5)
    assert values == {"n": 3, "flag": True, "name": "x", "rate": 0.5}
    with pytest.raises(ValueError, match="n=seven"):
        config_lib.parse_arg("n=seven", n=7)


def test_loading_and_validating_every_config_file_starts_neither_tensorflow_nor_keras_nor_jax():
    probe = (
        "import glob, os, sys\n"
        "from dcl_keras import config\n"
        "root = sys.argv[1]\n"
        "for path in sorted(glob.glob(os.path.join(root, 'configs', '*.py'))):\n"
        "    c = config.load_config_file(path)\n"
        "    c.data.root = root  # An existing folder: the layout is checked when the data is read.\n"
        "    config.validate_config(c)\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, ROOT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"rcm.k": 0},
            "Config field `rcm.k`: expected an integer with 1 <= k < n (RCM neighbourhood size; n=4). "
            "Received: rcm.k=0",
        ),
        ({"rcm.n": 0}, "Config field `rcm.n`: expected an integer >= 1 (RCM regions per side). Received: rcm.n=0"),
        (
            {"input.image_size": 30, "input.resize_size": 40},
            "Config field `input.image_size`: expected a multiple "
            "of n=4, so that the RCM regions are equal. Received: input.image_size=30",
        ),
        (
            {"rcm.originals": -1},
            "Config field `rcm.originals`: expected an integer >= 0 (views per example). Received: rcm.originals=-1",
        ),
        (
            {"rcm.originals": 0, "rcm.destructed": 0},
            "Config field `rcm.destructed`: expected at least one view per "
            "example. Received: rcm.originals=0, rcm.destructed=0",
        ),
        (
            {"data.audit_folds": 5, "data.audit_fold": 5},
            "Config field `data.audit_fold`: expected a fold in [0, 5) (the one held out). "
            "Received: data.audit_folds=5, data.audit_fold=5",
        ),
        (
            {"model.norm": "layer"},
            "Config field `model.norm`: expected one of ('batch', 'group'). Received: model.norm='layer'",
        ),
    ],
)
def test_checks_shared_with_the_modules_name_the_config_field_what_was_expected_and_received(
    tiny_config, overrides, message
):
    with pytest.raises(ConfigError) as error:
        validate_config(sweep.apply_overrides(tiny_config, overrides))
    assert str(error.value) == message


def test_the_label_study_rule_is_one_for_the_config_and_the_splits(tiny_config):
    from dcl_keras.data import datasets

    config = tiny_config.copy_and_resolve_references()
    config.data.source, config.data.root, config.data.long_tail_ratio = "records", ROOT, 4.0
    assert config_lib.is_label_study(config.data)
    with pytest.raises(ConfigError, match=r"data.long_tail_ratio.*Received: data.source='records'") as checked:
        validate_config(config)
    with pytest.raises(ConfigError) as loaded:
        datasets.load_splits(config.data)
    assert str(loaded.value) == str(checked.value)
    assert not config_lib.is_label_study(tiny_config.data)


def test_the_study_options_are_checked_and_refused_where_they_cannot_apply(tiny_config):
    from dcl_keras.data import datasets

    config = tiny_config.copy_and_resolve_references()
    config.data.label_noise = 1.0
    with pytest.raises(ConfigError, match="data.label_noise"):
        validate_config(config)
    config = tiny_config.copy_and_resolve_references()
    config.loss.classification = "gce"
    config.loss.label_smoothing = 0.1
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        validate_config(config)
    config = tiny_config.copy_and_resolve_references()
    config.data.source, config.data.tfds_name, config.data.label_noise = "tfds", "cars196", 0.2
    with pytest.raises(ConfigError, match="need a file-based source"):
        validate_config(config)
    with pytest.raises(UserError, match="file-based sources"):  # Also when the splits are loaded directly.
        datasets.load_splits(config.data)


@pytest.mark.backend_agnostic
def test_unknown_policy_is_named(tiny_config):
    config = tiny_config.copy_and_resolve_references()
    config.train.mixed_precision = "float8"
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        validate_config(config)
