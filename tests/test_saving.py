"""Every serializable object of the package: config round trip, and the `.keras` file round trip where it is a model.

The list below must name every class that dcl_keras registers with Keras, so
that a new layer, loss, optimizer or model cannot skip these checks.
"""

import keras
import numpy as np
import pytest

from dcl_keras import losses, optim
from dcl_keras.models import dcl, layers
from dcl_keras.models.region_confusion import RegionConfusion

from helpers import assert_config_round_trip, assert_keras_file_round_trip, tiny_dcl_model

pytestmark = pytest.mark.backend_agnostic

IMAGES = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


def _in_a_model(layer, shape=(32, 32, 3)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs), name=f"with_{layer.name}")


FACTORIES = {
    "AdaptiveAveragePooling2D": lambda: layers.AdaptiveAveragePooling2D(3, name="pool"),
    "PixelNormalization": lambda: layers.PixelNormalization("torch", name="norm"),
    "RegionConfusion": lambda: RegionConfusion(n=4, k=2, originals=1, destructed=2, seed=3, name="rcm"),
    "RegionAlignmentLoss": lambda: losses.RegionAlignmentLoss("sum"),
    "ClassificationLoss": lambda: losses.ClassificationLoss("gce", q=0.5, class_weights=[1.0, 2.0, 0.5]),
    "MultiplierSGD": lambda: optim.make_optimizer(0.01, 5, weight_decay=1e-4, warmup_epochs=1),
    "LinearWarmup": lambda: optim.learning_rate_schedule(0.1, 10, decay_epochs=1, total_epochs=3, warmup_epochs=0.5),
    "DCLModel": lambda: tiny_dcl_model(
        class_names=["a", "b", "c"], resize_size=40, discriminator="2c", resampling="fused"
    ),
    "DeviceRCMTrainer": lambda: dcl.DeviceRCMTrainer(tiny_dcl_model(), RegionConfusion(n=4, k=2, seed=0)),
}


def test_every_registered_object_of_the_package_is_listed():
    import importlib
    import pkgutil

    import dcl_keras

    for module in pkgutil.walk_packages(dcl_keras.__path__, "dcl_keras."):
        if not module.name.startswith("dcl_keras.commands"):  # Command modules define process-wide flags.
            importlib.import_module(module.name)
    registered = {name.split(">", 1)[1] for name in keras.saving.get_custom_objects() if name.startswith("dcl_keras>")}
    assert registered == set(FACTORIES)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_config_round_trip(name):
    obj = FACTORIES[name]()
    revived = assert_config_round_trip(obj)
    if name == "MultiplierSGD":
        assert revived.lr_multipliers == obj.lr_multipliers
    if name == "RegionConfusion":
        assert (revived.n, revived.k, revived.destructed) == (4, 2, 2)
    if name == "ClassificationLoss":
        assert (revived.kind, revived.q, revived.class_weights) == ("gce", 0.5, [1.0, 2.0, 0.5])


@pytest.mark.parametrize("name", ["AdaptiveAveragePooling2D", "PixelNormalization", "DCLModel"])
def test_keras_file_round_trip(name, tmp_path):
    obj = FACTORIES[name]()
    model = obj if isinstance(obj, keras.Model) else _in_a_model(obj)
    loaded = assert_keras_file_round_trip(model, IMAGES, tmp_path)
    if name == "DCLModel":
        assert loaded.class_names == ["a", "b", "c"] and loaded.resize_size == 40 and loaded.discriminator == "2c"
        assert loaded.resampling == "fused"


def test_device_rcm_trainer_file_round_trip_keeps_its_layer(tmp_path):
    trainer = FACTORIES["DeviceRCMTrainer"]()
    trainer(IMAGES)
    loaded = assert_keras_file_round_trip(trainer, IMAGES, tmp_path)  # Inference: the originals only.
    assert loaded.region_confusion.get_config() == trainer.region_confusion.get_config()


def test_loss_and_optimizer_survive_a_compiled_model_file(tmp_path):
    model = tiny_dcl_model()
    classification = FACTORIES["ClassificationLoss"]()
    model.compile(optimizer=FACTORIES["MultiplierSGD"](), loss=losses.dcl_losses("sum", classification))
    targets = {
        "classifier": np.array([0, 1]),
        "destruction_discriminator": np.array([0, 1]),
        "region_alignment": np.full((2, 4, 4, 2), 0.5, "float32"),
    }
    model.train_on_batch(IMAGES, targets)  # Builds the optimizer's slots, which the file then carries.
    loaded = assert_keras_file_round_trip(model, IMAGES, tmp_path)
    assert isinstance(loaded.optimizer, optim.MultiplierSGD) and int(loaded.optimizer.iterations) == 1
    assert loaded.optimizer.lr_multipliers == model.optimizer.lr_multipliers
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.004)  # Step 1 of its 5-step warm-up to 0.01.
    revived = loaded.loss["classifier"]
    assert isinstance(revived, losses.ClassificationLoss) and revived.class_weights == [1.0, 2.0, 0.5]
