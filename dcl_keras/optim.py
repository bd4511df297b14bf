"""Optimizer of the reference recipe: SGD, momentum 0.9, heads at 10x, step decay."""

import keras
from keras import ops

from dcl_keras import contract


@keras.saving.register_keras_serializable(package="dcl_keras")
class MultiplierSGD(keras.optimizers.SGD):
    """SGD whose learning rate is multiplied per layer.

    Keras has no per-variable learning rate: this scales the rate inside
    `update_step`, which every backend calls, for each variable whose path
    starts with a key of `lr_multipliers` (the layer name at the top of the
    model, e.g. "classifier").

    Args:
        lr_multipliers: dict {top-level layer name: factor}.
        **kwargs: keras.optimizers.SGD arguments.
    """

    def __init__(self, lr_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._factors = [self.lr_multipliers.get(v.path.split("/")[0], 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers}


def step_decay(base_lr, steps_per_epoch, decay_epochs=60, decay_factor=0.1, total_epochs=180):
    """Learning rate divided by 1/decay_factor every `decay_epochs` epochs."""
    boundaries = [e * steps_per_epoch for e in range(decay_epochs, total_epochs, decay_epochs)]
    if not boundaries:
        return float(base_lr)
    values = [float(base_lr) * decay_factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(
    learning_rate,
    steps_per_epoch,
    head_multiplier=10.0,
    momentum=0.9,
    weight_decay=0.0,
    decay_epochs=60,
    decay_factor=0.1,
    total_epochs=180,
    head_layers=contract.HEAD_LAYERS,
):
    """The reference recipe's optimizer (dcl-spec.md section 4)."""
    schedule = step_decay(learning_rate, steps_per_epoch, decay_epochs, decay_factor, total_epochs)
    return MultiplierSGD(
        lr_multipliers={name: head_multiplier for name in head_layers},
        learning_rate=schedule,
        momentum=momentum,
        weight_decay=weight_decay or None,
    )
