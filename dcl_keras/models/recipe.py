"""The DCL task's recipe: its dtype policy, the model of a config, and its compile (losses, weights, metrics, optimizer).

As a keras-hub task owns its compile, the model side owns what training,
the benchmarks and a notebook all need to get the paper's model ready to fit:

    from dcl_keras.config import base_config
    from dcl_keras.models import recipe
    model = recipe.build_model(base_config(), num_classes=200, steps=375)   # Compiled.

Only Keras here (and the light config): no TensorFlow, so it runs where JAX
alone is installed (benchmarks/gpu_check.py).
"""

import contextlib

import keras

from dcl_keras import contract, losses, optim
from dcl_keras.contract import JIT_COMPILE
from dcl_keras.models import dcl
from dcl_keras.models.backbones import build_backbone, get_spec


@contextlib.contextmanager
def dtype_policy(name):
    """Builds layers under a Keras dtype policy ("none" keeps float32), then restores the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if name == "none" else name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(config, num_classes, class_names=None, steps=1, compile=True):
    """The DCL model of a config, compiled (unless `compile=False`) with its losses, metrics and optimizer."""
    with dtype_policy(config.train.mixed_precision):
        backbone = build_backbone(
            config.model.backbone,
            config.input.image_size,
            config.model.weights,
            **{option: config.model[option] for option in get_spec(config.model.backbone).options},
        )
        model = dcl.DCLModel(
            backbone,
            num_classes,
            config.rcm.n,
            dropout=config.model.dropout,
            class_names=class_names,
            resize_size=config.input.resize_size,
            resampling=config.input.resampling,
            discriminator=config.model.discriminator if config.loss.beta > 0 else "none",
            alignment=config.loss.gamma > 0,
            destructed_alpha=config.loss.destructed_alpha,
        )
    if compile:
        compile_model(model, config, steps)
    return model


def classification_loss(config, class_counts=None):
    """The classification loss of a config: None (plain cross entropy) or a losses.ClassificationLoss.

    `class_counts` (training examples per class) is needed when
    loss.class_balance_beta > 0.
    """
    loss = config.loss
    if loss.classification == "cross_entropy" and not loss.label_smoothing and not loss.class_balance_beta:
        return None
    weights = None
    if loss.class_balance_beta:
        if class_counts is None:
            raise ValueError("loss.class_balance_beta needs the training split's class counts.")
        weights = losses.class_balanced_weights(class_counts, loss.class_balance_beta)
    return losses.ClassificationLoss(
        loss.classification, loss.label_smoothing, loss.gce_q, class_weights=weights, name="classification_loss"
    )


def compile_model(model, config, steps, class_counts=None):
    heads = (model.dcl_model if isinstance(model, dcl.DeviceRCMTrainer) else model).heads
    optimizer = optim.make_optimizer(
        config.train.learning_rate,
        steps,
        head_multiplier=config.train.head_multiplier,
        momentum=config.train.momentum,
        weight_decay=config.train.weight_decay,
        decay_epochs=config.train.decay_epochs,
        decay_factor=config.train.decay_factor,
        total_epochs=config.train.epochs,
        head_layers=contract.HEAD_LAYERS,
        warmup_epochs=config.train.warmup_epochs,
    )
    model.compile(
        optimizer=optimizer,
        loss=_only(
            heads, losses.dcl_losses(config.loss.alignment_reduction, classification_loss(config, class_counts))
        ),
        loss_weights=_only(heads, losses.loss_weights(config.loss.alpha, config.loss.beta, config.loss.gamma)),
        weighted_metrics=_only(heads, losses.dcl_metrics(model.num_classes)),
        jit_compile=JIT_COMPILE[str(config.train.jit_compile).lower()],
    )


def _only(heads, per_output):
    return {name: value for name, value in per_output.items() if name in heads}
