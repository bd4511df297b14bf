"""The head learning-rate multiplier and the step decay."""

import keras
import numpy as np
import pytest

from dcl_keras import optim

pytestmark = pytest.mark.backend_agnostic  # Also run under KERAS_BACKEND=jax.


def _toy_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, use_bias=False, name="backbone_dense")(inputs)
    outputs = keras.layers.Dense(1, use_bias=False, name="classifier")(hidden)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_heads_move_ten_times_faster(momentum):
    model = _toy_model()
    for layer in model.layers[1:]:
        layer.set_weights([np.full_like(w, 0.5) for w in layer.get_weights()])
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    # The same gradients with and without the multiplier: compare the steps.
    optimizer = optim.MultiplierSGD({"classifier": 10.0}, learning_rate=0.01, momentum=momentum)
    model.compile(optimizer=optimizer, loss="mse")
    x = np.ones((8, 4), "float32")
    y = np.zeros((8, 1), "float32")
    plain = _toy_model()
    plain.set_weights(model.get_weights())
    plain.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=momentum), loss="mse")
    model.train_on_batch(x, y)
    plain.train_on_batch(x, y)
    for v, p in zip(model.trainable_variables, plain.trainable_variables, strict=True):
        step = keras.ops.convert_to_numpy(v) - before[v.path]
        plain_step = keras.ops.convert_to_numpy(p) - before[v.path]
        factor = 10.0 if v.path.startswith("classifier") else 1.0
        np.testing.assert_allclose(step, factor * plain_step, rtol=1e-5)
        assert np.abs(step).max() > 0


def test_step_decay_divides_by_ten_every_60_epochs():
    schedule = optim.step_decay(0.1, steps_per_epoch=10, total_epochs=180)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(599)) == pytest.approx(0.1)
    assert float(schedule(601)) == pytest.approx(0.01)
    assert float(schedule(1201)) == pytest.approx(0.001)


def test_linear_warmup_ramps_to_the_step_decay_then_follows_it():
    schedule = optim.learning_rate_schedule(0.1, steps_per_epoch=10, warmup_epochs=0.5, total_epochs=180)
    rates = [float(schedule(step)) for step in (0, 1, 4, 5, 599, 601)]
    assert rates == pytest.approx([0.02, 0.04, 0.1, 0.1, 0.1, 0.01])
    assert not isinstance(optim.learning_rate_schedule(0.1, steps_per_epoch=10), optim.LinearWarmup)
    tiny = optim.learning_rate_schedule(0.1, steps_per_epoch=10, warmup_epochs=0.01)  # Under a step: still one.
    assert float(tiny(0)) == pytest.approx(0.1) and tiny.warmup_steps == 1


@pytest.mark.parametrize("after", [0.05, optim.step_decay(0.05, steps_per_epoch=2, decay_epochs=1, total_epochs=3)])
def test_linear_warmup_survives_serialization_mid_ramp(after):
    schedule = optim.LinearWarmup(after, warmup_steps=4)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    restored.build([keras.Variable(0.0)])
    for step in range(6):  # The restored optimizer's current rate follows its step, as in a resumed run.
        restored.iterations.assign(step)
        assert float(restored.learning_rate) == pytest.approx(float(schedule(step)))
    assert float(schedule(1)) == pytest.approx(0.025)
