"""TFDS builders by name: failing fast when not prepared, encoded records decoded after shuffling, carve-outs."""

import time

import numpy as np
import pytest

from dcl_keras.data import datasets, pipeline, specs, tfds_reader, train_stream

TRAIN_SPEC = specs.TrainSpec(seed=0, batch_size=2, image_size=32, resize_size=40, n=4, k=2)


def test_tfds_not_prepared_fails_within_seconds(tmp_path):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="not prepared.*tfds build cars196"):
        tfds_reader.tfds("cars196", "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 30


def test_tfds_unknown_name():
    with pytest.raises(ValueError, match="name='no_such_birds'"):
        tfds_reader.tfds("no_such_birds")


@pytest.fixture(scope="module")
def toy_tfds(tmp_path_factory):
    import toy_tfds

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return toy_tfds.prepare(data_dir), data_dir


def test_tfds_records_are_shuffled_encoded_and_decoded_after(toy_tfds):
    name, data_dir = toy_tfds
    split = tfds_reader.tfds(name, "train", data_dir=data_dir)
    assert split.num_examples == 12 and split.class_names == ["bird_0", "bird_1", "bird_2"]
    encoded, _ = next(iter(split.encoded_dataset()))
    assert encoded.dtype.name == "string"  # Bytes: nothing is decoded before shuffling.
    stored = [int(y) for _, y in split.encoded_dataset()]
    assert split.labels == stored
    np.testing.assert_array_equal(np.bincount(stored), [4, 4, 4])
    import tensorflow as tf

    key = tf.constant(5, tf.uint32)
    first = [int(y) for _, y in pipeline.examples(split, key, shuffle_buffer=4)]
    assert first == [int(y) for _, y in pipeline.examples(split, key, shuffle_buffer=4)]  # Seeded.
    assert sorted(first) == sorted(stored) and first != stored
    images = list(pipeline.examples(split).take(3).as_numpy_iterator())
    assert all(img.shape == (30, 40, 3) and img.dtype == np.uint8 for img, _ in images)
    batches = train_stream.train_batches(split, TRAIN_SPEC)
    images, targets = next(iter(batches))
    assert images.shape == (4, 32, 32, 3) and 0 <= int(targets["classifier"].numpy().max()) < 3


def test_training_from_tfds_with_seed_0_and_a_validation_carve_out(toy_tfds, tiny_config, tmp_path):
    """keras.utils.set_random_seed(0) sets TF's global seed to 0, which once broke the keyed shuffle."""
    from dcl_keras import training

    name, data_dir = toy_tfds
    config = tiny_config.copy_and_resolve_references()
    config.seed = 0
    config.data.source, config.data.tfds_name, config.data.tfds_data_dir = "tfds", name, data_dir
    config.data.val_fraction = 0.25
    config.train.validation_freq = 1
    config.train.epochs = 1
    config.input.batch_size = 3
    config.export.enabled = False
    result = training.train_and_evaluate(config, str(tmp_path))
    assert result["evaluation"]["num_examples"] == 6 and result["evaluation"]["split"] == "test"


def test_tfds_validation_carve_out_is_stratified_and_streams_only_its_records(toy_tfds):
    name, data_dir = toy_tfds
    split = tfds_reader.tfds(name, "train", data_dir=data_dir)
    train, val = datasets.carve_validation(split, 0.25, seed=3)
    assert (train.num_examples, val.num_examples) == (9, 3)
    np.testing.assert_array_equal(np.bincount(val.labels), [1, 1, 1])
    assert not set(train.indices) & set(val.indices)
    streamed = sorted(int(y) for _, y in pipeline.examples(val))
    assert streamed == sorted(val.labels) and len(streamed) == 3
    again = datasets.carve_validation(split, 0.25, seed=3)[1]
    np.testing.assert_array_equal(again.indices, val.indices)
