"""The DCL contract, defined once: names, labels, targets and the keyed hash's constants.

Everything that the input pipeline (TensorFlow), the device RCM and the model
(keras.ops), the losses, the optimizer and the evaluation must agree on lives
here, as plain Python and NumPy, so that every side imports one definition:

* the model's output names, which are also the keys of the targets;
* the head layers (the new layers: their own learning rate);
* the discriminator's labels and the alignment target's normalisation;
* the counter hash's constants and the salts that separate its key streams;
* the choices of the config's fields and the checks of RCM and pairing
  arguments, which the config, the input pipeline and the model share, so
  that loading a config imports neither TensorFlow nor Keras.

The two RCM implementations (`dcl_keras.data.rcm` in tf.data, and
`dcl_keras.models.region_confusion` inside the train step) stay two, because
tf.data must run TensorFlow under every Keras backend; `MIRRORS` says which
function mirrors which, and tests/models/test_region_confusion.py checks each
pair bit for bit.
"""

import numpy as np


class ArgumentError(ValueError):
    """An argument that cannot work: its name, what was expected, and the values received ({name: value}).

    The config re-raises it naming its own fields (`dcl_keras.config`).
    """

    def __init__(self, argument, expected, received):
        self.argument = argument
        self.expected = expected
        self.received = received
        values = ", ".join(f"{name}={value!r}" for name, value in received.items())
        super().__init__(f"`{argument}`: expected {expected}. Received: {values}")


# Model outputs, and the keys of every target dict (dcl_keras.data.pairing describes the batch).
CLASSIFIER = "classifier"
DISCRIMINATOR = "destruction_discriminator"
ALIGNMENT = "region_alignment"
OUTPUTS = (CLASSIFIER, DISCRIMINATOR, ALIGNMENT)

# The new layers of the heads, which learn `train.head_multiplier` times faster than the backbone.
CLASSIFIER_LAYER = CLASSIFIER
POOLED_LAYER = "pooled_features"  # The global average pool the heads read; its output is the embedding.
DISCRIMINATOR_LAYER = DISCRIMINATOR
ALIGNMENT_LAYER = "region_alignment_conv"
HEAD_LAYERS = (CLASSIFIER_LAYER, DISCRIMINATOR_LAYER, ALIGNMENT_LAYER)

# The two inputs of the device-RCM stream (dcl_keras.data.pipeline yields them, the DeviceRCMTrainer reads them).
DEVICE_IMAGES = "images"
DEVICE_KEYS = "rcm_keys"

# Destruction discriminator labels (the 2-way head; the 2C variant's target is label + C * DESTRUCTED).
ORIGINAL = 0
DESTRUCTED = 1


def view_labels(originals, destructed):
    """The discriminator label of each view of an example: originals first, then destructed copies."""
    return [ORIGINAL] * originals + [DESTRUCTED] * destructed


# Region alignment target: the centre of each destination cell's source cell, (index + 0.5) / N, in (0, 1).
ALIGNMENT_CELL_OFFSET = 0.5


def alignment_target(source, n):
    """(source + 0.5) / N for a float source map [..., N, N, 2] (TF, keras.ops or NumPy; cast first)."""
    return (source + ALIGNMENT_CELL_OFFSET) / float(n)


def identity_source(n):
    """The source map of an undestructed image, int32 [N, N, 2]: every cell comes from itself."""
    grid = np.arange(n, dtype=np.int32)
    return np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1)


# The keyed counter hash (lowbias32 finalizer, C. Wellons): xor, shift and multiply only, so TF, keras.ops
# and XLA give bit-identical uint32 streams (dcl_keras.data.keyed_hash; the device mirror in region_confusion).
HASH_SHIFTS = (16, 15, 16)  # x ^= x >> s1; x *= MUL_1; x ^= x >> s2; x *= MUL_2; x ^= x >> s3.
HASH_MUL_1 = 0x7FEB352D
HASH_MUL_2 = 0x846CA68B
GOLDEN = 0x9E3779B9  # Spreads counters and folds keys.
KEY_INIT = 0x2545F491  # The state combine_keys starts from.
UNIFORM_BITS = 24  # Uniform draws keep the 24 high bits: exactly representable in float32.

# Salts: each key stream of a (seed, epoch, position) key is combine_keys(key, salt).
DESTRUCTED_COPY_SALT = 1000  # + copy index: the RCM draw of each destructed copy.
CROP_TOP_SALT = 11
CROP_LEFT_SALT = 13
ROTATION_SALT = 23
FLIP_SALT = 37
SHUFFLE_SEED_SALT = 7  # The second word of an epoch's shuffle seed.
ORDER_POSITION = -1  # combine_keys(seed, epoch, ORDER_POSITION): an epoch's order key (positions are >= 0).
PRECISE_BN_EPOCH = -2  # The epoch slot of precise BN's sample order (training epochs are >= 0).
ANALYSIS_EPOCH = -3  # The epoch slot of the destructions drawn by bin/analyze.

# Which device function (dcl_keras.models.region_confusion) mirrors which pipeline function (TF).
MIRRORS = {
    "dcl_keras.data.keyed_hash.hash_uint32": "dcl_keras.models.region_confusion.hash_uint32",
    "dcl_keras.data.keyed_hash.combine_keys": "dcl_keras.models.region_confusion.combine_keys",
    "dcl_keras.data.keyed_hash.hash_uniform": "dcl_keras.models.region_confusion.hash_uniform",
    "dcl_keras.data.rcm.draw_region_permutation": "dcl_keras.models.region_confusion.draw_region_permutations",
    "dcl_keras.data.rcm.apply_region_permutation": "dcl_keras.models.region_confusion.apply_region_permutations",
    "dcl_keras.data.pairing.make_views": "dcl_keras.models.region_confusion.RegionConfusion.call",
}


# The choices of the config's fields (dcl_keras.config documents each field).
DATA_SOURCES = ("demo", "image_folder", "annotation_lists", "cub200", "fgvc_aircraft", "tfds", "records")
FILE_SOURCES = ("demo", "image_folder", "annotation_lists", "cub200", "fgvc_aircraft")  # Image files, one a path.
DEMO_KINDS = ("birds", "coarse", "typefaces", "pretrain")  # dcl_keras.data.demo's generators.
AIRCRAFT_LEVELS = ("variant", "family", "manufacturer")
AIRCRAFT_TRAIN_SPLITS = ("train", "trainval")
BAD_FILE_POLICIES = ("skip", "strict")
RESAMPLING = ("pillow", "fused")  # dcl_keras.data.augment describes both.
RCM_PLACEMENTS = ("pipeline", "device")
BACKBONE_NAMES = ("tiny", "resnet50", "vgg16", "efficientnetv2_s", "convnext_tiny")  # Keys of backbones.BACKBONES.
TINY_NORMS = ("batch", "group")
DISCRIMINATORS = ("2way", "2c")  # The model also takes "none", which loss.beta=0 selects.
ALIGNMENT_REDUCTIONS = ("mean", "sum")
CLASSIFICATION_LOSSES = ("cross_entropy", "gce")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}
DISTRIBUTIONS = ("none", "mirrored", "tpu", "data_parallel", "multi_worker_mirrored")


def validate_rcm_args(n, k, image_size=None):
    """Raises ArgumentError for an RCM (N, k, image size) that cannot work; image_size may be (height, width)."""
    if not isinstance(n, int) or n < 1:
        raise ArgumentError("n", "an integer >= 1 (RCM regions per side)", {"n": n})
    if not isinstance(k, int) or k < 1 or (n > 1 and k >= n):
        raise ArgumentError("k", f"an integer with 1 <= k < n (RCM neighbourhood size; n={n})", {"k": k})
    sides = image_size if isinstance(image_size, (tuple, list)) else (image_size,)
    if image_size is not None and any(side % n for side in sides):
        raise ArgumentError(
            "image_size", f"a multiple of n={n}, so that the RCM regions are equal", {"image_size": image_size}
        )


def validate_audit_folds(folds, fold):
    """Raises ArgumentError for audit folds that cannot work: K = 0 (off) or K >= 2 folds, fold in [0, K)."""
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 0 or folds == 1:
        raise ArgumentError("folds", "0 (no audit) or a number of folds >= 2", {"folds": folds})
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < max(folds, 1):
        expected = f"a fold in [0, {folds}) (the one held out)" if folds else "0 unless audit folds are set (>= 2)"
        raise ArgumentError("fold", expected, {"folds": folds, "fold": fold})


def validate_ratio(originals, destructed):
    """Raises ArgumentError for a pairing ratio (original and destructed views per example) that cannot work."""
    for name, value in (("originals", originals), ("destructed", destructed)):
        if not isinstance(value, int) or value < 0:
            raise ArgumentError(name, "an integer >= 0 (views per example)", {name: value})
    if originals + destructed == 0:
        raise ArgumentError(
            "destructed", "at least one view per example", {"originals": originals, "destructed": destructed}
        )
