"""The training stream (dcl_keras/data/train_stream.py).

Decoded images held in memory (`input.cache_mb`): the same batches as reading
the files, or no cache at all. Several processes: each builds only its slice
of every global batch, and the slices make the global batch. Resumed at any
step, the stream is the uninterrupted one, and a bad or vanished file neither
shortens an epoch nor hangs it.
"""

import logging
import os
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras.data import pipeline, readers, specs, train_stream
from dcl_keras.errors import UserError

from conftest import write_image

STREAM = dict(seed=3, batch_size=4, image_size=32, resize_size=40, rotation=12.0, n=4, k=2)
ARGS = dict(seed=3, image_size=32, resize_size=40, rotation=10.0, n=4, k=2)
EVAL = specs.EvalSpec(image_size=32, resize_size=40)
BATCH = 5  # 24 demo examples: 4 batches an epoch and 4 examples left over, as CUB at batch 16.


@pytest.fixture(scope="module")
def mixed_split(tmp_path_factory):
    """Images smaller and larger than the resize side (one axis or both), JPEG and PNG, with a cropped banner."""
    root = tmp_path_factory.mktemp("mixed")
    sizes = [(30, 24), (40, 40), (90, 35), (33, 120), (160, 100), (52, 44), (64, 64), (120, 90), (21, 57)]
    paths, labels = [], []
    for i, size in enumerate(sizes):
        ext = "png" if i % 3 == 0 else "jpg"
        paths.append(write_image(os.path.join(str(root), f"class_{i % 2}", f"{i}.{ext}"), size=size, seed=i))
        labels.append(i % 2)
    return readers.FileSplit(paths, labels, ["a", "b"], name="mixed", crop_bottom=3)


def _take(split, count, start_step=0, **fields):
    spec = specs.TrainSpec(**{**STREAM, **fields})
    return list(train_stream.train_batches(split, spec, start_step=start_step).take(count).as_numpy_iterator())


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for (images_a, targets_a), (images_b, targets_b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(images_a, images_b)
        for name in targets_a:
            np.testing.assert_array_equal(targets_a[name], targets_b[name])


def test_the_decoded_images_are_what_the_stream_reads_shrunk_to_the_resize_side(mixed_split):
    decoded = train_stream.decode_in_memory(mixed_split, resize_size=40, limit_mb=16)
    assert decoded is not None
    for i, path in enumerate(mixed_split.paths):
        start, end = decoded.offsets.numpy()[i : i + 2]
        image = decoded.pixels.numpy()[start:end].reshape(*decoded.shapes.numpy()[i], 3)
        full = pipeline.read_image(path, crop_bottom=3).numpy()
        assert image.shape == (min(full.shape[0], 40), min(full.shape[1], 40), 3), path
        if full.shape[0] <= 40 and full.shape[1] <= 40:
            np.testing.assert_array_equal(image, full)


@pytest.mark.parametrize("start_step", [0, 5])
def test_held_in_memory_the_stream_gives_the_same_batches(mixed_split, start_step):
    """Over two epochs (the second pass of an epoch and a resumed start included), pixel for pixel."""
    from_files = _take(mixed_split, 4, start_step=start_step)
    _assert_same_batches(from_files, _take(mixed_split, 4, start_step=start_step, cache_mb=16))


def test_same_batches_without_rcm_in_the_pipeline_and_with_draft_decoding(mixed_split):
    for kwargs in (dict(rcm_in_pipeline=False), dict(reducing_gap=1.0)):
        from_files, cached = _take(mixed_split, 3, **kwargs), _take(mixed_split, 3, **kwargs, cache_mb=16)
        for (a, label_a), (b, label_b) in zip(from_files, cached, strict=True):
            if isinstance(a, dict):
                for name in a:
                    np.testing.assert_array_equal(a[name], b[name])
                np.testing.assert_array_equal(label_a, label_b)
            else:
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "options",
    [dict(n=1, k=1, originals=0, destructed=2), dict(originals=2, destructed=1, rotation=0.0), dict(batch_size=2)],
    ids=["n1_destructed_only", "two_originals_no_rotation", "batch_2"],
)
def test_same_batches_for_other_views_and_batch_sizes(mixed_split, options):
    """Held images go through a whole batch at a time (one warp, RCM and pairing per batch)."""
    _assert_same_batches(
        _take(mixed_split, 3, start_step=1, **options), _take(mixed_split, 3, start_step=1, cache_mb=16, **options)
    )


def test_images_that_may_not_fit_are_read_from_their_files(mixed_split, caplog):
    # 9 images of at most 40 x 40 x 3 bytes: 43,200 bytes, over a budget of 0.04 MiB (41,943 bytes).
    with caplog.at_level(logging.INFO):
        assert train_stream.decode_in_memory(mixed_split, resize_size=40, limit_mb=0.04) is None
    assert "could take" in caplog.text and "input.cache_mb=0.04" in caplog.text
    assert train_stream.decode_in_memory(mixed_split, resize_size=40, limit_mb=0) is None


def test_a_split_with_an_undecodable_file_is_read_from_its_files(mixed_split, tmp_path, caplog):
    broken = str(tmp_path / "broken.jpg")
    with open(broken, "w") as f:
        f.write("not an image")
    split = readers.FileSplit(mixed_split.paths + [broken], mixed_split.labels + [0], ["a", "b"], name="broken")
    with caplog.at_level(logging.INFO):
        assert train_stream.decode_in_memory(split, resize_size=40, limit_mb=16) is None
    assert "1 file(s) failed to decode" in caplog.text
    # The stream still runs, dropping the bad file as it does without a cache.
    _assert_same_batches(_take(split, 2), _take(split, 2, cache_mb=16))


def test_only_the_pillow_resampling_of_file_splits_is_held(mixed_split, monkeypatch):
    calls = []
    real = train_stream.decode_in_memory
    monkeypatch.setattr(train_stream, "decode_in_memory", lambda *a, **k: calls.append(k) or real(*a, **k))
    _take(mixed_split, 1, resampling="fused", cache_mb=16)
    assert not calls  # The fused resampling keeps full-size images: nothing bounds their memory.
    _take(mixed_split, 1, cache_mb=16)
    assert calls and calls[0]["limit_mb"] == 16


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


def _uneven_stream(split, count, start_step=0, **fields):
    spec = specs.TrainSpec(
        **{**dict(seed=3, batch_size=BATCH, image_size=32, resize_size=40, rotation=10.0, n=4, k=2), **fields}
    )
    return list(train_stream.train_batches(split, spec, start_step=start_step).take(count).as_numpy_iterator())


@pytest.mark.parametrize("in_pipeline,ratio", [(True, (1, 1)), (False, (1, 1)), (True, (1, 2))])
def test_the_stream_resumed_at_any_step_is_the_uninterrupted_stream(split, in_pipeline, ratio):
    assert split.num_examples % BATCH and train_stream.steps_per_epoch(split, BATCH) == 4
    kwargs = dict(rcm_in_pipeline=in_pipeline, originals=ratio[0], destructed=ratio[1])
    full = _uneven_stream(split, 11, **kwargs)
    for start in (1, 4, 6):
        resumed = _uneven_stream(split, 11 - start, start_step=start, **kwargs)
        for a, b in zip(full[start:], resumed, strict=True):
            tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    # One epoch of the stream is one Keras epoch: every example at most once, 4 left out.
    views = sum(ratio)
    labels = np.concatenate([b[1]["classifier"][::views] if in_pipeline else b[1] for b in full[:4]])
    assert len(labels) == 20 and np.all(np.bincount(labels, minlength=4) <= 6)


def test_device_keys_are_the_pipeline_keys_so_both_placements_destroy_alike(split):
    from dcl_keras.models.region_confusion import RegionConfusion

    host = _uneven_stream(split, 1)[0]
    device_inputs, labels = _uneven_stream(split, 1, rcm_in_pipeline=False)[0]
    views, targets = RegionConfusion(4, 2)(device_inputs["images"], labels, keys=device_inputs["rcm_keys"])
    np.testing.assert_allclose(np.asarray(views), host[0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(targets["region_alignment"]), host[1]["region_alignment"])


def test_epochs_keep_their_length_when_more_files_fail_than_the_remainder(split, tmp_path):
    broken = []
    for i in range(6):  # 6 unreadable files, more than the 4 examples an epoch leaves out.
        broken.append(str(tmp_path / f"broken_{i}.jpg"))
        open(broken[-1], "wb").write(os.urandom(300))
    noisy = readers.FileSplit(split.paths + broken, split.labels + [0] * 6, split.class_names, name="noisy")
    assert train_stream.steps_per_epoch(noisy, BATCH) == 6  # 30 listed, 24 decodable: 4.8 batches' worth.
    full = _uneven_stream(noisy, 14)
    assert len(full) == 14  # Epochs are filled from a second pass over their order, never short.
    resumed = _uneven_stream(noisy, 2, start_step=12)  # From the third epoch on.
    for a, b in zip(full[12:], resumed, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def test_an_epoch_with_no_readable_file_stops_the_stream_instead_of_hanging(split, tmp_path):
    files = []
    for i, path in enumerate(split.paths[:6]):
        files.append(str(tmp_path / f"{i}.png"))
        shutil.copy(path, files[-1])
    gone = readers.FileSplit(files, split.labels[:6], split.class_names, name="vanishing")
    spec = specs.TrainSpec(seed=0, batch_size=2, image_size=32, resize_size=40, n=4, k=2)
    stream = iter(train_stream.train_batches(gone, spec))
    next(stream)
    for path in files:
        os.remove(path)  # Deleted after the start, as by a lost mount.
    outcome = []

    def drain():
        try:
            for _ in range(10):
                next(stream)
        except tf.errors.InvalidArgumentError as e:
            outcome.append(str(e))

    worker = threading.Thread(target=drain, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the stream hangs on an epoch without a readable file"
    assert outcome and train_stream.EMPTY_EPOCH_MESSAGE in outcome[0]
