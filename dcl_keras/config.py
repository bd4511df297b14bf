"""The experiment config: defaults, validation that fails before any training, config files.

Experiment files in configs/ start from `base_config()` (or `paper_config()`)
and change what their dataset needs; they import nothing but this package, so
they load from any folder. Every field is documented here, once; the choices
of its fields are `dcl_keras.contract`'s. Neither this module nor a config file
imports TensorFlow, Keras or JAX, so loading a config, or planning a sweep of
many, starts none of them.
"""

import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from dcl_keras import contract
from dcl_keras.contract import DISTRIBUTIONS, JIT_COMPILE
from dcl_keras.errors import UserError


def base_config():
    """Defaults: the paper's recipe with ResNet-50 at 448 px (dcl-spec.md section 4)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    for add_section in (_data_defaults, _input_defaults, _model_defaults, _run_defaults):
        add_section(c)
    return c


def _data_defaults(c):
    """The data section."""
    c.data = ml_collections.ConfigDict()
    c.data.source = "cub200"  # One of contract.DATA_SOURCES.
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
    # Curation (dcl_keras.data.curation), training split only, after the studies above. Keys are `split.keys()`:
    # paths relative to data.root (CUB: to images/), TFDS ids, or the source's keys in records.
    c.data.exclude = ""  # Text file of keys to leave out, one a line ('#' comments); "" for none.
    c.data.relabel = ""  # CSV file of `key,class_name` rows giving those examples a new label; "" for none.
    c.data.audit_folds = 0  # K >= 2: cut training into K seeded, stratified folds (seed data.split_seed) ...
    c.data.audit_fold = 0  # ... and train on all but this one (bin/audit predicts it); 0 <= audit_fold < K.
    c.data.demo = ml_collections.ConfigDict(
        dict(num_classes=20, train_per_class=40, test_per_class=20, image_size=96, seed=0, cache_dir="", kind="birds")
    )  # kind: "birds" (fine-grained), "coarse" (a broad set to pretrain a backbone on) or "typefaces" (thin detail).


def _input_defaults(c):
    """The input and rcm sections."""
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


def _model_defaults(c):
    """The model and loss sections."""
    c.model = ml_collections.ConfigDict()
    c.model.backbone = "resnet50"  # One of contract.BACKBONE_NAMES (dcl_keras.models.backbones).
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


def _run_defaults(c):
    """The train, eval and export sections."""
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
    c.train.record_margins = False  # Write each training image's margin per epoch (bin/audit --method=aum).
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


def _choice(field, value, choices):
    if value not in choices:
        _fail(field, f"one of {tuple(choices)}", value)


def _check(validate, fields, *args):
    """Runs a `contract` validator on config values; its ArgumentError becomes a ConfigError naming the fields."""
    try:
        validate(*args)
    except contract.ArgumentError as e:
        received = ", ".join(f"{fields[name]}={value!r}" for name, value in e.received.items())
        raise ConfigError(f"Config field `{fields[e.argument]}`: expected {e.expected}. Received: {received}") from None


def is_label_study(data):
    """Whether a `data` section asks for noisy or long-tailed training labels (studies of robustness)."""
    return bool(data.label_noise) or data.long_tail_ratio > 1


def validate_label_study(data):
    """Raises ConfigError where a label study is asked of a source whose labels cannot be changed (not files)."""
    if is_label_study(data) and data.source not in contract.FILE_SOURCES:
        raise ConfigError(
            "Config fields `data.label_noise` and `data.long_tail_ratio` (studies of noisy and long-tailed labels) "
            f"need a file-based source; the file-based sources are {contract.FILE_SOURCES}. Received: "
            f"data.source={data.source!r}, data.label_noise={data.label_noise}, "
            f"data.long_tail_ratio={data.long_tail_ratio}"
        )


def _validate_source(data):
    _choice("data.source", data.source, contract.DATA_SOURCES)
    if data.source in ("image_folder", "annotation_lists", "cub200", "fgvc_aircraft", "records"):
        if not data.root:
            _fail("data.root", f"the dataset folder for source {data.source!r}", data.root)
        if not os.path.isdir(os.path.expanduser(data.root)):
            _fail("data.root", "an existing directory", data.root)
    if data.source == "annotation_lists" and not (data.train_list and data.test_list):
        _fail("data.train_list/test_list", "both list files for annotation_lists", (data.train_list, data.test_list))
    if data.source == "tfds" and not data.tfds_name:
        _fail("data.tfds_name", "a TFDS builder name", data.tfds_name)
    if data.source == "fgvc_aircraft":
        _choice("data.aircraft_level", data.aircraft_level, contract.AIRCRAFT_LEVELS)
        _choice("data.aircraft_train_split", data.aircraft_train_split, contract.AIRCRAFT_TRAIN_SPLITS)
    if data.source == "demo":
        _choice("data.demo.kind", data.demo.kind, contract.DEMO_KINDS)
    if data.source == "image_folder" and not 0.0 < data.test_fraction < 1.0:
        _fail("data.test_fraction", "a fraction in (0, 1) (used when root has no train/ and test/)", data.test_fraction)


def _validate_data(data):
    _validate_source(data)
    _choice("data.bad_files", data.bad_files, contract.BAD_FILE_POLICIES)
    if data.label_base not in (None, 0, 1):
        _fail("data.label_base", "0, 1 or None (detect)", data.label_base)
    if not 0.0 <= data.val_fraction < 1.0:
        _fail("data.val_fraction", "a fraction in [0, 1) (0: no carved-out validation split)", data.val_fraction)
    if data.tfds_shuffle_buffer < 1:
        _fail("data.tfds_shuffle_buffer", "a positive number of records", data.tfds_shuffle_buffer)
    if not 0.0 <= data.label_noise < 1.0:
        _fail("data.label_noise", "a share in [0, 1)", data.label_noise)
    if data.long_tail_ratio < 1.0:
        _fail("data.long_tail_ratio", "1 (off) or a largest/smallest class size ratio > 1", data.long_tail_ratio)
    validate_label_study(data)
    _validate_curation(data)


def _validate_curation(data):
    """The files of data.exclude and data.relabel exist; the audit fold is one of the folds."""
    for field, expected in (
        ("exclude", "a text file of keys, one a line"),
        ("relabel", "a CSV file of `key,class_name` rows"),
    ):
        path = data[field]
        if not isinstance(path, str):
            _fail(f"data.{field}", f'"" (none) or the path of {expected}', path)
        if path and not os.path.isfile(os.path.expanduser(path)):
            _fail(f"data.{field}", f'"" (none) or an existing file: {expected}', path)
    _check(
        contract.validate_audit_folds,
        {"folds": "data.audit_folds", "fold": "data.audit_fold"},
        data.audit_folds,
        data.audit_fold,
    )


def _validate_input(inputs):
    if not isinstance(inputs.cache_mb, int) or isinstance(inputs.cache_mb, bool) or inputs.cache_mb < 0:
        _fail("input.cache_mb", "an integer >= 0 (MiB; 0 reads every file every epoch)", inputs.cache_mb)
    if inputs.jpeg_reducing_gap and inputs.jpeg_reducing_gap < 1.0:
        _fail("input.jpeg_reducing_gap", "0 (decode every pixel) or a factor >= 1", inputs.jpeg_reducing_gap)
    for field in ("image_size", "resize_size", "batch_size"):
        if inputs[field] < 1:
            _fail(f"input.{field}", "a positive integer", inputs[field])
    _choice("input.resampling", inputs.resampling, contract.RESAMPLING)
    if inputs.resize_size < inputs.image_size:
        _fail("input.resize_size", f">= input.image_size ({inputs.image_size})", inputs.resize_size)


def _validate_rcm(c):
    fields = {"n": "rcm.n", "k": "rcm.k", "image_size": "input.image_size"}
    _check(contract.validate_rcm_args, fields, c.rcm.n, c.rcm.k, c.input.image_size)
    fields = {"originals": "rcm.originals", "destructed": "rcm.destructed"}
    _check(contract.validate_ratio, fields, c.rcm.originals, c.rcm.destructed)
    _choice("rcm.placement", c.rcm.placement, contract.RCM_PLACEMENTS)
    if c.rcm.n == 1 and c.rcm.destructed:
        raise ConfigError(
            "Config field `rcm.n`: N=1 leaves the image whole, so every destructed view would be a copy of its "
            "original (DCL at N=1 is the baseline: rcm.destructed=0, loss.beta=0, loss.gamma=0). "
            f"Received: rcm.n=1, rcm.destructed={c.rcm.destructed}"
        )


def _validate_model(model):
    _choice("model.backbone", model.backbone, contract.BACKBONE_NAMES)
    if model.discriminator not in contract.DISCRIMINATORS:
        _fail(
            "model.discriminator", "'2way' (paper) or '2c' (reference code); loss.beta=0 drops it", model.discriminator
        )
    if not isinstance(model.depth, int) or model.depth < 1:
        _fail("model.depth", "a positive number of convolutions per stage", model.depth)
    _choice("model.norm", model.norm, contract.TINY_NORMS)


def _validate_heads(loss, rcm):
    """The loss weights against the views: a head with nothing to learn is refused."""
    if rcm.destructed == 0 and (loss.beta or loss.gamma):
        raise ConfigError(
            "Config fields `loss.beta`/`loss.gamma`: with rcm.destructed=0 there is no destructed view, so the "
            "discriminator would learn a single class and the alignment head an identity grid. The plain baseline "
            f"is rcm.destructed=0, loss.beta=0, loss.gamma=0. Received: loss.beta={loss.beta}, "
            f"loss.gamma={loss.gamma}"
        )
    if rcm.originals == 0 and loss.beta:
        raise ConfigError(
            "Config field `loss.beta`: with rcm.originals=0 every view is destructed, so the discriminator would "
            f"learn a single class; set loss.beta=0 for the 0:1 ratio. Received: loss.beta={loss.beta}"
        )
    if loss.alpha <= 0:
        _fail("loss.alpha", "a weight > 0 (the classifier is what is evaluated and exported)", loss.alpha)
    if not loss.destructed_alpha >= 0:
        _fail("loss.destructed_alpha", "a weight >= 0 (1 is the paper's DCL)", loss.destructed_alpha)
    if rcm.originals == 0 and loss.destructed_alpha == 0:
        _fail("loss.destructed_alpha", "> 0 with rcm.originals=0 (no view would be classified)", 0.0)
    for field in ("alpha", "beta", "gamma"):
        if loss[field] < 0:
            _fail(f"loss.{field}", "a weight >= 0", loss[field])


def _validate_loss(loss):
    _choice("loss.alignment_reduction", loss.alignment_reduction, contract.ALIGNMENT_REDUCTIONS)
    _choice("loss.classification", loss.classification, contract.CLASSIFICATION_LOSSES)
    if not 0.0 <= loss.label_smoothing < 1.0:
        _fail("loss.label_smoothing", "a share in [0, 1)", loss.label_smoothing)
    if loss.label_smoothing and loss.classification != "cross_entropy":
        _fail("loss.label_smoothing", "0 unless loss.classification='cross_entropy'", loss.label_smoothing)
    if not 0.0 < loss.gce_q <= 1.0:
        _fail("loss.gce_q", "q in (0, 1]", loss.gce_q)
    if not 0.0 <= loss.class_balance_beta < 1.0:
        _fail("loss.class_balance_beta", "0 (off) or beta in (0, 1), e.g. 0.999", loss.class_balance_beta)


def _validate_train(train):
    if train.epochs < 1:
        _fail("train.epochs", "an integer >= 1", train.epochs)
    if not 0.0 <= train.warmup_epochs < train.epochs:
        _fail(
            "train.warmup_epochs",
            f"0 (off) or a number of epochs below train.epochs ({train.epochs})",
            train.warmup_epochs,
        )
    if train.steps_per_epoch < 0:
        _fail("train.steps_per_epoch", "0 (one pass) or a positive integer", train.steps_per_epoch)
    if train.epoch_batch_size < 0:
        _fail("train.epoch_batch_size", "0 (input.batch_size) or a positive number of examples", train.epoch_batch_size)
    if train.checkpoint_every_steps < 0:
        _fail(
            "train.checkpoint_every_steps", "0 (per epoch) or a positive number of steps", train.checkpoint_every_steps
        )
    if not isinstance(train.keep_checkpoints, int) or train.keep_checkpoints < 1:
        _fail(
            "train.keep_checkpoints",
            "an integer >= 1 (2 or more leaves an older checkpoint to resume from if the newest cannot be read)",
            train.keep_checkpoints,
        )
    if str(train.jit_compile).lower() not in JIT_COMPILE:
        _fail("train.jit_compile", f"one of {tuple(JIT_COMPILE)}", train.jit_compile)
    _choice("train.distribution", train.distribution, DISTRIBUTIONS)
    _choice("train.mixed_precision", train.mixed_precision, contract.MIXED_PRECISION)


def validate_config(c):
    """Raises ConfigError naming the field for any setting that cannot work, section by section."""
    _validate_data(c.data)
    _validate_input(c.input)
    _validate_rcm(c)
    _validate_model(c.model)
    _validate_heads(c.loss, c.rcm)
    _validate_loss(c.loss)
    _validate_train(c.train)
    if c.eval.precise_bn_batches < 0:
        _fail("eval.precise_bn_batches", "0 (off) or a positive number of batches", c.eval.precise_bn_batches)
    if c.export.top_k < 1:
        _fail("export.top_k", "an integer >= 1", c.export.top_k)
