"""Decoded images held in memory (`input.cache_mb`): the same batches as reading the files, or no cache at all."""

import logging
import os

import numpy as np
import pytest

from dcl_keras.data import pipeline, readers, specs, train_stream

from conftest import write_image

STREAM = dict(seed=3, batch_size=4, image_size=32, resize_size=40, rotation=12.0, n=4, k=2)


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
