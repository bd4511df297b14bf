"""The DCL model: one shared backbone, three heads (Chen et al., CVPR 2019, section 3).

Outputs (a dict, named as the batch contract of `dcl_keras.data.pairing`):

* "classifier": class logits [B, C], a dense layer on the pooled feature.
* "destruction_discriminator": logits [B, 2] (original, destructed), a linear
  map of the pooled feature without bias (the paper's "adversarial learning").
* "region_alignment": [B, N, N, 2], a 1x1 convolution of the last feature map
  to 2 channels, ReLU, adaptive average pooling to N x N (row, column).

A head is built only when its loss is used: `discriminator="none"` and
`alignment=False` give the plain classifier of the ablation's baseline, with no
parameter and no output beyond the classification head. `discriminator="2c"`
is the reference code's variant: 2C logits (class x original/destructed,
target `label + C * destructed`); it is trained like the 2-way head and, like
it, never reaches the classifier that evaluation and export use.

At inference only the classifier runs: `classifier_model` returns the backbone
plus the classification head and nothing else.

Example:

    backbone = build_backbone("resnet50", 448, weights="imagenet")
    model = DCLModel(backbone, num_classes=200, num_regions=7)
    outputs = model(images)  # dict of the three outputs
"""

import copy

import keras
from keras import ops

from dcl_keras import contract
from dcl_keras.contract import ALIGNMENT, CLASSIFIER, DEVICE_IMAGES, DEVICE_KEYS, DISCRIMINATOR, OUTPUTS
from dcl_keras.models.layers import AdaptiveAveragePooling2D

DISCRIMINATORS = (*contract.DISCRIMINATORS, "none")  # "none": no discriminator head (the config's loss.beta=0).


@keras.saving.register_keras_serializable(package="dcl_keras")
class DCLModel(keras.Model):
    """Backbone + classifier, destruction discriminator and region alignment heads.

    Classification metrics (top-1, top-5) count original images only: a
    destructed copy is another view of the same example and must not inflate
    accuracy. The mask comes from the discriminator target (0 = original).

    Args:
        backbone: keras.Model, images [B, S, S, 3] in [0, 255] -> feature map.
        num_classes: int, C.
        num_regions: int, N of the region alignment output.
        dropout: float, dropout on the pooled feature before the classifier.
        class_names: optional list of C names, kept for prediction and export.
        resize_size: optional int, the evaluation resize side that precedes
            the center crop to the input size (kept for prediction and export).
        resampling: "pillow" or "fused", how that resize filters
            (`augment.eval_preprocess`; kept for prediction and export).
        discriminator: "2way" (the paper), "2c" (the reference code's class x
            original/destructed head) or "none" (no destruction head).
        alignment: bool, whether to build the region alignment head.
        destructed_alpha: float >= 0, the classification loss's weight on
            destructed views, relative to originals' 1 (the paper: 1, both
            views classified alike). 0 leaves destructed views to the
            discriminator and alignment heads: each original's term keeps
            its weight (the loss is still divided by all M images of the
            batch), the destructed ones drop out. docs/accuracy.md says when
            it matters (a class cue that depends on the image's layout, such
            as a slant read against the text line under rotation).
    """

    def __init__(
        self,
        backbone,
        num_classes,
        num_regions,
        dropout=0.0,
        class_names=None,
        resize_size=None,
        discriminator="2way",
        alignment=True,
        resampling="pillow",
        destructed_alpha=1.0,
        **kwargs,
    ):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}")
        if discriminator not in DISCRIMINATORS:
            raise ValueError(
                f"`discriminator` must be one of {DISCRIMINATORS}. Received: discriminator={discriminator!r}"
            )
        if not destructed_alpha >= 0:
            raise ValueError(
                f"`destructed_alpha` must be a weight >= 0. Received: destructed_alpha={destructed_alpha!r}"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"`class_names` must have num_classes={num_classes} entries. Received: {len(class_names)} names"
            )
        # Layers.
        pool = keras.layers.GlobalAveragePooling2D(name=contract.POOLED_LAYER)
        drop = keras.layers.Dropout(dropout, name="classifier_dropout")
        # The heads compute in float32 under a mixed precision policy, so that
        # outputs and losses stay float32 (the standard Keras recipe).
        classifier = keras.layers.Dense(num_classes, dtype="float32", name=contract.CLASSIFIER_LAYER)
        discriminator_units = 2 * num_classes if discriminator == "2c" else 2
        discriminator_head = keras.layers.Dense(
            discriminator_units, use_bias=False, dtype="float32", name=contract.DISCRIMINATOR_LAYER
        )
        # Small initial weights: a large random start puts most outputs above
        # their (0, 1) targets, and the first L1 steps can then push every
        # output below zero, where the ReLU stops all gradient for good.
        alignment_conv = keras.layers.Conv2D(
            2,
            1,
            use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
            dtype="float32",
            name=contract.ALIGNMENT_LAYER,
        )
        alignment_relu = keras.layers.ReLU(dtype="float32", name="region_alignment_relu")
        alignment_pool = AdaptiveAveragePooling2D(num_regions, dtype="float32", name=ALIGNMENT)
        # Functional graph.
        inputs = keras.Input(backbone.input_shape[1:], name="images")
        features = backbone(inputs)
        pooled = pool(features)
        outputs = {CLASSIFIER: classifier(drop(pooled))}
        if discriminator != "none":
            outputs[DISCRIMINATOR] = discriminator_head(pooled)
        if alignment:
            outputs[ALIGNMENT] = alignment_pool(alignment_relu(alignment_conv(features)))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # Config.
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_regions = num_regions
        self.dropout = dropout
        self.class_names = list(class_names) if class_names is not None else None
        self.resize_size = resize_size
        self.resampling = resampling
        self.discriminator = discriminator
        self.alignment = bool(alignment)
        self.destructed_alpha = float(destructed_alpha)
        self.heads = tuple(outputs)

    def loss_targets(self, y):
        """The pipeline's targets for this model's heads (2C: `label + C * destructed`)."""
        if not isinstance(y, dict):
            return y
        targets = {name: y[name] for name in self.heads}
        if self.discriminator == "2c":
            labels = ops.reshape(ops.cast(y[CLASSIFIER], "int32"), (-1,))
            destructed = ops.reshape(ops.cast(y[DISCRIMINATOR], "int32"), (-1,))
            targets[DISCRIMINATOR] = labels + self.num_classes * destructed  # 0 = ORIGINAL, 1 = DESTRUCTED.
        return targets

    def loss_weights_of_views(self, y, sample_weight=None):
        """Loss weights with `destructed_alpha` on the destructed views' classification (as given when 1)."""
        return destructed_views_weights(y, self.destructed_alpha, sample_weight, self.heads)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        weights = self.loss_weights_of_views(y, sample_weight)
        return super().compute_loss(x, self.loss_targets(y), y_pred, weights, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        weights = originals_only_weights(y, sample_weight, self.heads)
        return super().compute_metrics(x, self.loss_targets(y), y_pred, weights)

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "num_regions": self.num_regions,
            "dropout": self.dropout,
            "class_names": self.class_names,
            "resize_size": self.resize_size,
            "resampling": self.resampling,
            "discriminator": self.discriminator,
            "alignment": self.alignment,
            "destructed_alpha": self.destructed_alpha,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Keras's deserialization consumes the nested configs.
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def originals_only_weights(y, sample_weight=None, heads=OUTPUTS):
    """Metric weights of `heads` that count classification on original images only (0 = original)."""
    if not (isinstance(y, dict) and DISCRIMINATOR in y):
        return sample_weight
    originals = ops.cast(ops.equal(ops.reshape(y[DISCRIMINATOR], (-1,)), contract.ORIGINAL), "float32")
    ones = ops.ones_like(originals)
    return {name: originals if name == CLASSIFIER else ones for name in heads}


def destructed_views_weights(y, destructed_alpha, sample_weight=None, heads=OUTPUTS):
    """Loss weights of `heads` that weigh the classification of destructed views by `destructed_alpha`.

    Returns `sample_weight` itself when `destructed_alpha` is 1 or `y` has no
    discriminator target (nothing to tell apart), so the paper's loss is
    computed exactly as without weights.
    """
    if destructed_alpha == 1.0 or not (isinstance(y, dict) and DISCRIMINATOR in y):
        return sample_weight
    if isinstance(sample_weight, dict):
        raise ValueError(
            "`destructed_alpha` != 1 takes one sample weight per image, not one per output. "
            f"Received: destructed_alpha={destructed_alpha}, sample_weight keys {sorted(sample_weight)}"
        )
    original = ops.equal(ops.reshape(y[DISCRIMINATOR], (-1,)), contract.ORIGINAL)
    classify = ops.where(original, 1.0, destructed_alpha)
    others = ops.ones_like(classify)
    if sample_weight is not None:
        others = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        classify = classify * others
    return {name: classify if name == CLASSIFIER else others for name in heads}


@keras.saving.register_keras_serializable(package="dcl_keras")
class DeviceRCMTrainer(keras.Model):
    """Trains a DCLModel with the Region Confusion Mechanism inside the train step.

    The input pipeline sends augmented originals with their uint32 example
    keys ({"images", "rcm_keys"}) and labels; `region_confusion` (a
    `RegionConfusion` layer, keras.ops only) builds the destructed views and
    the discriminator and alignment targets on the device, under TF, JAX or
    XLA. The keys are the pipeline's (seed, epoch, position) keys, so the
    device draws exactly the permutations the pipeline RCM would, and a
    resumed run draws what an uninterrupted one would: no random state lives
    outside the data stream. In inference mode (validation) only the
    originals go through.

    Args:
        dcl_model: the DCLModel to train (saved and exported on its own).
        region_confusion: a RegionConfusion layer.
    """

    def __init__(self, dcl_model, region_confusion, **kwargs):
        super().__init__(**kwargs)
        self.dcl_model = dcl_model
        self.region_confusion = region_confusion

    @property
    def num_classes(self):
        return self.dcl_model.num_classes

    def build(self, input_shape):
        # The wrapped DCL model is a built functional model; RCM holds only its seed state.
        self.built = True

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):  # The training stream: images with their example keys.
            images, keys = inputs[DEVICE_IMAGES], inputs[DEVICE_KEYS]
        else:
            images, keys = inputs, None
        batch = ops.shape(images)[0]
        if training:
            views, targets = self.region_confusion(images, ops.arange(batch, dtype="int32"), keys=keys)
        else:
            views, targets = self.region_confusion.originals_only(images, ops.arange(batch, dtype="int32"))
        # The classifier "target" carried here is each view's example index; the labels come in y.
        return {"outputs": self.dcl_model(views, training=training), "targets": targets}

    def _targets(self, y, y_pred):
        targets = dict(y_pred["targets"])
        targets[CLASSIFIER] = ops.take(ops.reshape(y, (-1,)), targets[CLASSIFIER], axis=0)
        return targets

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        targets = self._targets(y, y_pred)
        weights = self.dcl_model.loss_weights_of_views(targets, sample_weight)
        return super().compute_loss(x, self.dcl_model.loss_targets(targets), y_pred["outputs"], weights, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        targets = self._targets(y, y_pred)
        weights = originals_only_weights(targets, sample_weight, self.dcl_model.heads)
        return super().compute_metrics(x, self.dcl_model.loss_targets(targets), y_pred["outputs"], weights)

    def get_config(self):
        return {
            **super().get_config(),
            "dcl_model": keras.saving.serialize_keras_object(self.dcl_model),
            "region_confusion": keras.saving.serialize_keras_object(self.region_confusion),
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)
        for key in ("dcl_model", "region_confusion"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def classifier_model(model):
    """The inference model: backbone + classification head, sharing `model`'s weights."""
    return keras.Model(model.input, model.output[CLASSIFIER], name="dcl_classifier")


def embedding_model(model):
    """The retrieval model: images -> L2-normalised pooled features [B, D] (float32), sharing `model`'s weights.

    The pooled feature is the one the classification head reads; unit length
    makes a dot product a cosine similarity (a gallery of new classes,
    `bin/predict --gallery`). Works for a DCLModel and for its classifier.
    """
    try:
        pooled = model.get_layer(contract.POOLED_LAYER).output
    except ValueError as e:
        raise ValueError(
            f"{model.name!r} has no {contract.POOLED_LAYER!r} layer: expected a DCL model or its classifier"
        ) from e
    features = ops.cast(pooled, "float32")
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(features), axis=-1, keepdims=True), 1e-12))
    return keras.Model(model.input, features / norm, name="dcl_embedding")
