"""The experiment config: defaults, validation that fails before any training, config files.

Experiment files in configs/ start from `base_config()` (or `paper_config()`)
and change what their dataset needs; they import nothing but this package, so
they load from any folder. Every field is documented here, once.
"""

import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from dcl_keras.data import augment, demo, pairing, pipeline, readers
from dcl_keras.errors import UserError
from dcl_keras.losses import ALIGNMENT_REDUCTIONS, CLASSIFICATION_LOSSES
from dcl_keras.models import backbones

DISTRIBUTIONS = ("none", "mirrored", "tpu", "data_parallel", "multi_worker_mirrored")
RCM_PLACEMENTS = ("pipeline", "device")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}
DATA_SOURCES = ("demo", "image_folder", "annotation_lists", "cub200", "fgvc_aircraft", "tfds", "records")


def base_config():
    """Defaults: the paper's recipe with ResNet-50 at 448 px (dcl-spec.md section 4)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "cub200"  # One of DATA_SOURCES.
    c.data.root = ""  # Dataset folder (layout depends on the source; for "records", a bin/make_records folder).
    c.data.train_list = ""  # annotation_lists: train list, relative to root or absolute.
    c.data.test_list = ""  # annotation_lists: test list.
    c.data.label_base = config_dict.placeholder(int)  # annotation_lists: 0, 1 or None (detect).
    c.data.num_classes = config_dict.placeholder(int)  # annotation_lists: None infers it.
    c.data.test_fraction = 0.2  # image_folder without train/ and test/: held-out share.
    c.data.split_seed = 0  # Seed of the test_fraction split and of the val_fraction carve-out.
    c.data.val_fraction = 0.0  # Validation carved out of training (seeded, stratified) where the source has none.
    c.data.aircraft_train_split = "trainval"  # fgvc_aircraft: training split ("train" validates on "val").
    c.data.aircraft_level = "variant"  # fgvc_aircraft: variant, family or manufacturer.
    c.data.aircraft_remove_banner = True  # fgvc_aircraft: drop the 20-pixel copyright banner (dataset README).
    c.data.tfds_name = ""  # tfds: builder name, e.g. caltech_birds2011.
    c.data.tfds_data_dir = ""  # tfds: data_dir ("" = TFDS default).
    c.data.tfds_manual_dir = ""  # tfds: manual_dir for builders that need archives.
    c.data.tfds_train_split = "train"
    c.data.tfds_val_split = ""  # tfds: the builder's own validation split ("" = carve out val_fraction).
    c.data.tfds_test_split = "test"
    c.data.tfds_shuffle_buffer = 4096  # tfds: encoded records in the shuffle buffer (memory flat in dataset size).
    c.data.tfds_prepare = False  # tfds: build the dataset when missing (needs network or archives).
    c.data.bad_files = "skip"  # "skip" (log and drop undecodable files) or "strict" (raise).
    c.data.check_files = True  # Decode every file once before training, reporting bad ones.
    c.data.label_noise = 0.0  # Studies: this share of training labels flipped to another class (seeded).
    c.data.long_tail_ratio = 1.0  # Studies: > 1 subsamples training classes exponentially, largest/smallest = ratio.
    c.data.demo = ml_collections.ConfigDict(
        dict(num_classes=20, train_per_class=40, test_per_class=20, image_size=96, seed=0, cache_dir="", kind="birds")
    )  # kind: "birds" (fine-grained), "coarse" (a broad set to pretrain a backbone on) or "typefaces" (thin detail).

    c.input = ml_collections.ConfigDict()
    c.input.image_size = 448  # Crop side; must be divisible by rcm.n.
    c.input.resize_size = 512  # Resize side before the crop.
    c.input.rotation = 15.0  # Max rotation in degrees (reference code); 0 disables.
    # "pillow": the reference's Pillow resize (antialiased), then nearest-neighbour rotation, crop and flip, and the
    # same resize at evaluation; "fused": one bilinear resampling for training, no antialiasing anywhere.
    c.input.resampling = "pillow"
    c.input.batch_size = 16  # Examples per step; images per step = batch_size * (originals + destructed).
    c.input.jpeg_reducing_gap = 2.0  # Training: JPEG DCT-scaled decode while sides stay >= gap x resize_size; 0 off.
    # Training, file splits, pillow resampling: decode each image once and hold it in memory when the split's
    # images fit in this many MiB (at most resize_size^2 x 3 bytes each); same batches, less work. 0: read every epoch.
    c.input.cache_mb = 1024

    c.rcm = ml_collections.ConfigDict()
    c.rcm.n = 7  # Regions per side (N).
    c.rcm.k = 2  # Neighbourhood size, 1 <= k < N.
    c.rcm.originals = 1  # Original views per example.
    c.rcm.destructed = 1  # Destructed views per example (1:1 in the paper).
    c.rcm.placement = "pipeline"  # Where destruction runs: "pipeline" (tf.data) or "device" (in the train step).

    c.model = ml_collections.ConfigDict()
    c.model.backbone = "resnet50"  # A key of dcl_keras.models.backbones.BACKBONES.
    c.model.weights = "imagenet"  # "imagenet", "none" or a weights file path.
    c.model.width = 32  # tiny backbone only: channels of its first block.
    c.model.depth = 1  # tiny backbone only: 3x3 convolutions per stage.
    c.model.norm = "batch"  # tiny backbone only: "batch" or "group" (per-sample, exact under data parallelism).
    c.model.dropout = 0.0  # Dropout before the classifier.
    c.model.discriminator = "2way"  # "2way" (paper) or "2c" (reference code: class x original/destructed).

    # A head exists only while its weight is > 0: beta = gamma = 0 with rcm.destructed = 0 is the plain
    # classifier (the ablation's baseline), beta = gamma = 0 with destructed views is "destruction only".
    c.loss = ml_collections.ConfigDict()
    c.loss.alpha = 1.0  # Classification.
    # Classification's weight on destructed views, relative to originals (paper: 1); 0 leaves them to the
    # discriminator and alignment heads (docs/accuracy.md: when a class cue depends on the layout RCM breaks).
    c.loss.destructed_alpha = 1.0
    c.loss.beta = 1.0  # Destruction discriminator (adversarial); 0 builds no discriminator.
    c.loss.gamma = 1.0  # Region alignment (construction); 0.01 for rigid objects; 0 builds no alignment head.
    c.loss.alignment_reduction = "mean"  # "mean" over cells (reference code, published numbers) or "sum" (2N^2 x).
    c.loss.classification = "cross_entropy"  # Or "gce" (generalized cross entropy, robust to label noise).
    c.loss.label_smoothing = 0.0  # cross_entropy: share of the target spread over all classes.
    c.loss.gce_q = 0.7  # gce: q in (0, 1]; -> 0 is cross entropy, 1 is mean absolute error.
    c.loss.class_balance_beta = 0.0  # > 0: re-weight classes by effective number (0.999, 0.9999 for long tails).

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 180
    c.train.steps_per_epoch = 0  # 0: one pass over the training examples (at epoch_batch_size a step).
    c.train.epoch_batch_size = 0  # Examples per step that define an epoch (0: input.batch_size); equal compute.
    c.train.learning_rate = 0.0008  # Backbone learning rate (reference code).
    c.train.head_multiplier = 10.0  # New heads learn this much faster.
    c.train.momentum = 0.9
    c.train.weight_decay = 0.0
    c.train.decay_epochs = 60  # Learning rate x decay_factor every decay_epochs.
    c.train.decay_factor = 0.1
    c.train.warmup_epochs = 0.0  # > 0: ramp the learning rate up linearly over this many epochs (not in the paper).
    c.train.jit_compile = (
        "auto"  # XLA: "true", "false" or "auto" (Keras: off for TF on CPU-only hosts and tf.distribute).
    )
    c.train.mixed_precision = "none"  # "none", "mixed_float16" or "mixed_bfloat16" (heads and losses stay float32).
    c.train.distribution = "none"  # none, mirrored, tpu (TF backend) or data_parallel (JAX); see dcl_keras.distribute.
    c.train.tpu = ""  # train.distribution=tpu: TPU name or grpc:// address ("" = from the environment).
    c.train.checkpoint_every_steps = 0  # Also checkpoint every this many steps (0: after each epoch only).
    c.train.keep_checkpoints = 2  # Checkpoints kept (newest first); resume falls back to an older one if unreadable.
    c.train.validation_freq = 0  # Evaluate on the validation split every this many epochs (0: never).
    c.train.verbose = 1  # Keras progress bars: 0 silent, 1 bar, 2 one line per epoch.

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 32
    c.eval.enabled = True  # Evaluate after training.
    c.eval.flip = False  # Average each test image's logits with its horizontal mirror's.
    c.eval.precise_bn_batches = 0  # >0: re-estimate BatchNorm statistics on this many eval-preprocessed train batches.

    c.export = ml_collections.ConfigDict()
    c.export.enabled = True  # Export the classifier after training.
    c.export.dir = ""  # "" means <workdir>/export.
    c.export.top_k = 5
    c.export.backbone_weights = False  # Also write <workdir>/backbone.weights.h5 (for model.weights=<path>).
    return c


def parse_arg(arg, **defaults):
    """Parses a config file's "key=value,key=value" argument over typed defaults.

    Example: parse_arg("backbone=vgg16,n=7", backbone="resnet50", n=7).
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in values:
            raise ValueError(
                f"Config argument {item!r}: expected key=value with key in {sorted(values)}. Received: arg={arg!r}"
            )
        kind = type(values[key])
        try:
            values[key] = (
                value if kind is str else (value.lower() in ("1", "true", "yes") if kind is bool else kind(value))
            )
        except ValueError:
            raise ValueError(
                f"Config argument {item!r}: expected {key} to be a {kind.__name__}. Received: arg={arg!r}"
            ) from None
    return values


def paper_config(source, gamma, n, backbone, root):
    """The paper's recipe (dcl-spec.md section 4) for one dataset and backbone."""
    c = base_config()
    c.data.source = source
    c.data.root = root
    c.rcm.n = n
    c.loss.gamma = gamma
    c.model.backbone = backbone
    c.model.weights = "imagenet"
    if n != 7 and c.input.image_size % n:
        c.input.image_size = 448 // n * n
    if n == 1:  # N = 1 leaves the image whole: DCL is the plain baseline (dcl-spec.md section 5).
        c.rcm.destructed = 0
        c.loss.beta = c.loss.gamma = 0.0
    return c


def split_spec(spec):
    """Splits a config spec "path.py[:arg]" (what bin/train's --config takes) into (path, arg or None)."""
    path, sep, arg = spec.partition(".py:")
    return (path + ".py", arg) if sep else (spec, None)


def load_config_file(spec):
    """The ConfigDict of a config file spec "path/to/config.py[:arg]", as bin/train loads it."""
    path, arg = split_spec(spec)
    if not os.path.isfile(path):
        raise UserError(f"Config file not found: {path}. Received: --config={spec}")
    name = "_dcl_config_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except (SyntaxError, ImportError) as e:
        raise UserError(f"Config file {path} cannot be loaded: {e}") from None
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"Config file {path}: expected a get_config(arg=None) function. Received: --config={spec}")
    try:
        return module.get_config(arg) if arg is not None else module.get_config()
    except ValueError as e:
        raise UserError(f"Config {spec}: {e}") from None


class ConfigError(UserError):
    """A config field that cannot work; the message names the field."""


def _fail(field, expected, value):
    raise ConfigError(f"Config field `{field}`: expected {expected}. Received: {field}={value!r}")


def validate_config(c):
    """Raises ConfigError naming the field for any setting that cannot work."""
    if c.data.source not in DATA_SOURCES:
        _fail("data.source", f"one of {DATA_SOURCES}", c.data.source)
    if c.data.source in ("image_folder", "annotation_lists", "cub200", "fgvc_aircraft", "records"):
        if not c.data.root:
            _fail("data.root", f"the dataset folder for source {c.data.source!r}", c.data.root)
        if not os.path.isdir(os.path.expanduser(c.data.root)):
            _fail("data.root", "an existing directory", c.data.root)
    if c.data.source == "annotation_lists" and not (c.data.train_list and c.data.test_list):
        _fail(
            "data.train_list/test_list", "both list files for annotation_lists", (c.data.train_list, c.data.test_list)
        )
    if c.data.source == "tfds" and not c.data.tfds_name:
        _fail("data.tfds_name", "a TFDS builder name", c.data.tfds_name)
    if c.data.source == "fgvc_aircraft":
        if c.data.aircraft_level not in readers.AIRCRAFT_LEVELS:
            _fail("data.aircraft_level", f"one of {readers.AIRCRAFT_LEVELS}", c.data.aircraft_level)
        if c.data.aircraft_train_split not in ("train", "trainval"):
            _fail("data.aircraft_train_split", "'train' or 'trainval'", c.data.aircraft_train_split)
    if c.data.source == "demo" and c.data.demo.kind not in demo.KINDS:
        _fail("data.demo.kind", f"one of {demo.KINDS}", c.data.demo.kind)
    if c.data.bad_files not in pipeline.BAD_FILE_POLICIES:
        _fail("data.bad_files", f"one of {pipeline.BAD_FILE_POLICIES}", c.data.bad_files)
    if c.model.backbone not in backbones.BACKBONES:
        _fail("model.backbone", f"one of {sorted(backbones.BACKBONES)}", c.model.backbone)
    if c.data.source == "image_folder" and not 0.0 < c.data.test_fraction < 1.0:
        _fail(
            "data.test_fraction", "a fraction in (0, 1) (used when root has no train/ and test/)", c.data.test_fraction
        )
    if c.data.label_base not in (None, 0, 1):
        _fail("data.label_base", "0, 1 or None (detect)", c.data.label_base)
    if not 0.0 <= c.data.val_fraction < 1.0:
        _fail("data.val_fraction", "a fraction in [0, 1) (0: no carved-out validation split)", c.data.val_fraction)
    if c.data.tfds_shuffle_buffer < 1:
        _fail("data.tfds_shuffle_buffer", "a positive number of records", c.data.tfds_shuffle_buffer)
    if not isinstance(c.input.cache_mb, int) or isinstance(c.input.cache_mb, bool) or c.input.cache_mb < 0:
        _fail("input.cache_mb", "an integer >= 0 (MiB; 0 reads every file every epoch)", c.input.cache_mb)
    if c.input.jpeg_reducing_gap and c.input.jpeg_reducing_gap < 1.0:
        _fail("input.jpeg_reducing_gap", "0 (decode every pixel) or a factor >= 1", c.input.jpeg_reducing_gap)
    for field in ("image_size", "resize_size", "batch_size"):
        if c.input[field] < 1:
            _fail(f"input.{field}", "a positive integer", c.input[field])
    if c.input.resampling not in augment.RESAMPLING:
        _fail("input.resampling", f"one of {augment.RESAMPLING}", c.input.resampling)
    if c.input.resize_size < c.input.image_size:
        _fail("input.resize_size", f">= input.image_size ({c.input.image_size})", c.input.resize_size)
    n, k = c.rcm.n, c.rcm.k
    if not isinstance(n, int) or n < 1:
        _fail("rcm.n", "an integer >= 1 (regions per side)", n)
    if not isinstance(k, int) or k < 1 or (n > 1 and k >= n):
        _fail("rcm.k", f"an integer with 1 <= k < rcm.n ({n})", k)
    if c.input.image_size % n:
        _fail("input.image_size", f"a multiple of rcm.n={n}, so that the regions are equal", c.input.image_size)
    try:
        pairing.validate_ratio(c.rcm.originals, c.rcm.destructed)
    except ValueError as e:
        raise ConfigError(f"Config field `rcm.originals/rcm.destructed`: {e}") from None
    if c.rcm.placement not in RCM_PLACEMENTS:
        _fail("rcm.placement", f"one of {RCM_PLACEMENTS}", c.rcm.placement)
    if c.model.discriminator not in ("2way", "2c"):
        _fail(
            "model.discriminator",
            "'2way' (paper) or '2c' (reference code); loss.beta=0 drops it",
            c.model.discriminator,
        )
    if c.rcm.destructed == 0 and (c.loss.beta or c.loss.gamma):
        raise ConfigError(
            "Config fields `loss.beta`/`loss.gamma`: with rcm.destructed=0 there is no destructed view, so the "
            "discriminator would learn a single class and the alignment head an identity grid. The plain baseline "
            f"is rcm.destructed=0, loss.beta=0, loss.gamma=0. Received: loss.beta={c.loss.beta}, "
            f"loss.gamma={c.loss.gamma}"
        )
    if c.rcm.originals == 0 and c.loss.beta:
        raise ConfigError(
            "Config field `loss.beta`: with rcm.originals=0 every view is destructed, so the discriminator would "
            f"learn a single class; set loss.beta=0 for the 0:1 ratio. Received: loss.beta={c.loss.beta}"
        )
    if c.rcm.n == 1 and c.rcm.destructed:
        raise ConfigError(
            "Config field `rcm.n`: N=1 leaves the image whole, so every destructed view would be a copy of its "
            "original (DCL at N=1 is the baseline: rcm.destructed=0, loss.beta=0, loss.gamma=0). "
            f"Received: rcm.n=1, rcm.destructed={c.rcm.destructed}"
        )
    if c.loss.alpha <= 0:
        _fail("loss.alpha", "a weight > 0 (the classifier is what is evaluated and exported)", c.loss.alpha)
    if not c.loss.destructed_alpha >= 0:
        _fail("loss.destructed_alpha", "a weight >= 0 (1 is the paper's DCL)", c.loss.destructed_alpha)
    if c.rcm.originals == 0 and c.loss.destructed_alpha == 0:
        _fail("loss.destructed_alpha", "> 0 with rcm.originals=0 (no view would be classified)", 0.0)
    if c.train.epoch_batch_size < 0:
        _fail(
            "train.epoch_batch_size", "0 (input.batch_size) or a positive number of examples", c.train.epoch_batch_size
        )
    if c.loss.alignment_reduction not in ALIGNMENT_REDUCTIONS:
        _fail("loss.alignment_reduction", f"one of {ALIGNMENT_REDUCTIONS}", c.loss.alignment_reduction)
    for field in ("alpha", "beta", "gamma"):
        if c.loss[field] < 0:
            _fail(f"loss.{field}", "a weight >= 0", c.loss[field])
    if c.loss.classification not in CLASSIFICATION_LOSSES:
        _fail("loss.classification", f"one of {CLASSIFICATION_LOSSES}", c.loss.classification)
    if not 0.0 <= c.loss.label_smoothing < 1.0:
        _fail("loss.label_smoothing", "a share in [0, 1)", c.loss.label_smoothing)
    if c.loss.label_smoothing and c.loss.classification != "cross_entropy":
        _fail("loss.label_smoothing", "0 unless loss.classification='cross_entropy'", c.loss.label_smoothing)
    if not 0.0 < c.loss.gce_q <= 1.0:
        _fail("loss.gce_q", "q in (0, 1]", c.loss.gce_q)
    if not 0.0 <= c.loss.class_balance_beta < 1.0:
        _fail("loss.class_balance_beta", "0 (off) or beta in (0, 1), e.g. 0.999", c.loss.class_balance_beta)
    if not 0.0 <= c.data.label_noise < 1.0:
        _fail("data.label_noise", "a share in [0, 1)", c.data.label_noise)
    if c.data.long_tail_ratio < 1.0:
        _fail("data.long_tail_ratio", "1 (off) or a largest/smallest class size ratio > 1", c.data.long_tail_ratio)
    if (c.data.label_noise or c.data.long_tail_ratio > 1) and c.data.source in ("tfds", "records"):
        raise ConfigError(
            "Config fields `data.label_noise` and `data.long_tail_ratio` (studies of noisy and long-tailed labels) "
            "need a file-based source (demo, image_folder, annotation_lists, cub200, fgvc_aircraft). Received: "
            f"data.source={c.data.source!r}, data.label_noise={c.data.label_noise}, "
            f"data.long_tail_ratio={c.data.long_tail_ratio}"
        )
    if c.train.epochs < 1:
        _fail("train.epochs", "an integer >= 1", c.train.epochs)
    if not 0.0 <= c.train.warmup_epochs < c.train.epochs:
        _fail(
            "train.warmup_epochs",
            f"0 (off) or a number of epochs below train.epochs ({c.train.epochs})",
            c.train.warmup_epochs,
        )
    if c.train.steps_per_epoch < 0:
        _fail("train.steps_per_epoch", "0 (one pass) or a positive integer", c.train.steps_per_epoch)
    if c.train.checkpoint_every_steps < 0:
        _fail(
            "train.checkpoint_every_steps",
            "0 (per epoch) or a positive number of steps",
            c.train.checkpoint_every_steps,
        )
    if not isinstance(c.train.keep_checkpoints, int) or c.train.keep_checkpoints < 1:
        _fail(
            "train.keep_checkpoints",
            "an integer >= 1 (2 or more leaves an older checkpoint to resume from if the newest cannot be read)",
            c.train.keep_checkpoints,
        )
    if str(c.train.jit_compile).lower() not in JIT_COMPILE:
        _fail("train.jit_compile", f"one of {tuple(JIT_COMPILE)}", c.train.jit_compile)
    if c.train.distribution not in DISTRIBUTIONS:
        _fail("train.distribution", f"one of {DISTRIBUTIONS}", c.train.distribution)
    if not isinstance(c.model.depth, int) or c.model.depth < 1:
        _fail("model.depth", "a positive number of convolutions per stage", c.model.depth)
    if c.model.norm not in ("batch", "group"):
        _fail("model.norm", "'batch' or 'group'", c.model.norm)
    if c.train.mixed_precision not in MIXED_PRECISION:
        _fail("train.mixed_precision", f"one of {MIXED_PRECISION}", c.train.mixed_precision)
    if c.eval.precise_bn_batches < 0:
        _fail("eval.precise_bn_batches", "0 (off) or a positive number of batches", c.eval.precise_bn_batches)
    if c.export.top_k < 1:
        _fail("export.top_k", "an integer >= 1", c.export.top_k)
