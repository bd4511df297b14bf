"""The input specs: built from a config or read off a model, checked when built, and light to import."""

import subprocess
import sys

import keras
import pytest

from dcl_keras.data import specs

from helpers import config_file, tiny_dcl_model


@pytest.mark.backend_agnostic
def test_an_eval_spec_from_a_config_and_from_the_model_trained_on_it_agree():
    config = config_file("tiny")
    config.input.resampling = "fused"
    from_config = specs.EvalSpec.from_config(config)
    assert from_config == specs.EvalSpec(config.input.image_size, config.input.resize_size, "fused")
    model = tiny_dcl_model(image_size=config.input.image_size, resize_size=config.input.resize_size, resampling="fused")
    assert specs.EvalSpec.from_model(model) == from_config
    assert specs.EvalSpec.from_model(model, resize_size=99).resize_size == 99
    assert specs.TrainSpec.from_config(config).eval_spec == from_config


@pytest.mark.backend_agnostic
def test_a_plain_classifier_resizes_to_its_input_side_with_pillow():
    inputs = keras.Input((24, 24, 3))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
    assert specs.EvalSpec.from_model(plain) == specs.EvalSpec(24, 24, "pillow")


def test_a_train_spec_from_a_config_is_the_stream_it_asks_for():
    config = config_file("tiny")
    spec = specs.TrainSpec.from_config(config)
    assert (spec.seed, spec.batch_size, spec.n, spec.k) == (
        config.seed,
        config.input.batch_size,
        config.rcm.n,
        config.rcm.k,
    )
    assert spec.rcm_in_pipeline == (config.rcm.placement == "pipeline")
    assert spec.shuffle_buffer == config.data.tfds_shuffle_buffer and spec.cache_mb == config.input.cache_mb


def test_bad_fields_fail_when_built():
    with pytest.raises(ValueError, match="resampling='nearest'"):
        specs.EvalSpec(32, 40, "nearest")
    fields = dict(seed=0, batch_size=2, image_size=32, resize_size=40, n=4, k=2)
    with pytest.raises(ValueError, match="resize_size=30"):
        specs.TrainSpec(**dict(fields, resize_size=30))
    with pytest.raises(ValueError, match="image_size=30"):
        specs.TrainSpec(**dict(fields, image_size=30))
    with pytest.raises(ValueError, match="originals=0, destructed=0"):
        specs.TrainSpec(**fields, originals=0, destructed=0)
    with pytest.raises(ValueError, match="bad_files='lenient'"):
        specs.TrainSpec(**fields, bad_files="lenient")
    with pytest.raises(ValueError, match="resampling='nearest'"):
        specs.TrainSpec(**fields, resampling="nearest")


def test_the_specs_import_neither_tensorflow_nor_keras():
    probe = "import sys, dcl_keras.data.specs; print(sorted({'tensorflow', 'keras', 'jax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
