"""Optimizer of the reference recipe: SGD, momentum 0.9, heads at 10x, step decay (and an optional warm-up)."""

import math

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


@keras.saving.register_keras_serializable(package="dcl_keras")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A rate (or schedule) ramped up linearly over the first `warmup_steps` steps (Goyal et al., 2017).

    Step s < warmup_steps runs at (s + 1) / warmup_steps of `after(s)`; from
    then on, `after(s)` itself. The ramp is a function of the step only, so
    a resumed run continues it where the checkpoint left off.
    """

    def __init__(self, after, warmup_steps):
        if int(warmup_steps) < 1:
            raise ValueError(f"LinearWarmup needs warmup_steps >= 1. Received: warmup_steps={warmup_steps!r}")
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        rate = self.after(step) if callable(self.after) else self.after
        ramp = ops.minimum(1.0, (ops.cast(step, "float32") + 1.0) / float(self.warmup_steps))
        return ops.multiply(ops.cast(rate, "float32"), ramp)

    def get_config(self):
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.saving.serialize_keras_object(after)
        return {"after": after, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        if isinstance(after, dict):
            after = keras.saving.deserialize_keras_object(after)
        return cls(after, config["warmup_steps"])


def learning_rate_schedule(
    base_lr, steps_per_epoch, decay_epochs=60, decay_factor=0.1, total_epochs=180, warmup_epochs=0.0
):
    """The step decay, ramped up linearly over the first `warmup_epochs` epochs when that is > 0."""
    schedule = step_decay(base_lr, steps_per_epoch, decay_epochs, decay_factor, total_epochs)
    if warmup_epochs <= 0:
        return schedule
    return LinearWarmup(schedule, max(1, math.ceil(warmup_epochs * steps_per_epoch)))  # Never silently off.


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
    warmup_epochs=0.0,
):
    """The reference recipe's optimizer (dcl-spec.md section 4); `warmup_epochs` > 0 adds a linear warm-up."""
    schedule = learning_rate_schedule(
        learning_rate, steps_per_epoch, decay_epochs, decay_factor, total_epochs, warmup_epochs
    )
    return MultiplierSGD(
        lr_multipliers={name: head_multiplier for name in head_layers},
        learning_rate=schedule,
        momentum=momentum,
        weight_decay=weight_decay or None,
    )
