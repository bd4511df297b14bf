"""Several processes: each builds only its slice of every global batch, and the slices make the global batch."""

import threading

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras.data import pipeline, readers, specs, train_stream
from dcl_keras.errors import UserError

ARGS = dict(seed=3, image_size=32, resize_size=40, rotation=10.0, n=4, k=2)
EVAL = specs.EvalSpec(image_size=32, resize_size=40)


@pytest.fixture(scope="module")
def split(demo_root):
    return readers.image_folder(demo_root, "train")  # 4 classes x 6 images.


def _spec(batch_size=4, **fields):
    return specs.TrainSpec(batch_size=batch_size, **ARGS, **fields)


def _stream(split, count, start_step=0, process_index=0, process_count=1, **fields):
    share = dict(start_step=start_step, process_index=process_index, process_count=process_count)
    return list(train_stream.train_batches(split, _spec(**fields), **share).take(count).as_numpy_iterator())


@pytest.mark.parametrize("placement,cache_mb", [("pipeline", 0), ("device", 0), ("pipeline", 16), ("device", 16)])
def test_the_process_slices_are_the_single_process_batches(split, placement, cache_mb, monkeypatch):
    """From the files, or from the decoded images held in memory (a whole batch augmented at a time)."""
    rcm = dict(rcm_in_pipeline=placement == "pipeline", cache_mb=cache_mb)
    held = []
    real = train_stream.decode_in_memory
    monkeypatch.setattr(train_stream, "decode_in_memory", lambda *a, **k: held.append(real(*a, **k)) or held[-1])
    single = _stream(split, 8, **rcm)  # 6 steps an epoch: crosses into the second epoch.
    parts = [_stream(split, 8, process_index=p, process_count=2, **rcm) for p in range(2)]
    for step, whole in enumerate(single):
        joined = tf.nest.map_structure(lambda *xs: np.concatenate(xs), *[part[step] for part in parts])
        tf.nest.map_structure(np.testing.assert_array_equal, joined, whole)
    assert len(held) == 3 and all((images is not None) == bool(cache_mb) for images in held)


def test_resuming_a_process_slice_is_exact(split):
    straight = _stream(split, 9, process_index=1, process_count=2)
    resumed = _stream(split, 5, start_step=4, process_index=1, process_count=2)
    tf.nest.map_structure(np.testing.assert_array_equal, resumed, straight[4:])


class _DecodeCounter:
    """Counts the files `pipeline.read_image` decodes (patched in), per path."""

    def __init__(self):
        self.paths = []
        self._lock = threading.Lock()

    def read_image(self, original):
        def record(path):
            with self._lock:
                self.paths.append(path.numpy().decode())
            return path

        def wrapped(path, **options):
            (path,) = tf.py_function(record, [path], [tf.string])
            return original(tf.ensure_shape(path, []), **options)

        return wrapped


def test_each_of_two_processes_decodes_half_of_the_examples(split, monkeypatch):
    # Validation inside the run is finite, so the count is exact: 24 images, global batches of 8.
    counts = []
    for p in range(2):
        counter = _DecodeCounter()
        monkeypatch.setattr(pipeline, "read_image", counter.read_image(pipeline.read_image))
        batches = list(pipeline.eval_batches(split, EVAL, batch_size=8, process_index=p, process_count=2))
        monkeypatch.undo()
        assert [len(labels) for _, labels in batches] == [4, 4, 4]
        counts.append(sorted(counter.paths))
    assert len(counts[0]) == len(counts[1]) == 12
    assert sorted(counts[0] + counts[1]) == sorted(split.paths)  # Together every image, each once.
    # The endless training stream: the same share of decoding per process (read-ahead blurs the count a little).
    decoded = {}
    for count in (1, 2):
        counter = _DecodeCounter()
        monkeypatch.setattr(pipeline, "read_image", counter.read_image(pipeline.read_image))
        _stream(split, 24, process_count=count, process_index=0)  # Four epochs.
        monkeypatch.undo()
        decoded[count] = len(counter.paths)
    assert decoded[1] >= 96 and 0.4 <= decoded[2] / decoded[1] <= 0.65, decoded  # Unsharded: about 1.


def test_the_global_batch_must_split_over_the_processes(split):
    with pytest.raises(UserError, match="input.batch_size=6 is not a multiple of num_processes=4"):
        train_stream.train_batches(split, _spec(batch_size=6), process_index=0, process_count=4)
    with pytest.raises(UserError, match="do not fill one global batch"):
        pipeline.eval_batches(split, EVAL, batch_size=32, process_index=0, process_count=2)
