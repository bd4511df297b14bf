"""Sharded record files: bin/make_records from any source, data.source=records streaming at any scale."""

import collections
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras.data import pipeline, readers, records, specs, tfds_reader, train_stream
from dcl_keras.errors import UserError

from conftest import write_image
from helpers import run_bin

SPEC = specs.TrainSpec(seed=5, batch_size=4, image_size=32, resize_size=40, rotation=10.0, n=4, k=2)


def _image_folder(root, classes=3, per_class=8):
    for c in range(classes):
        for i in range(per_class):
            write_image(os.path.join(root, "train", f"class_{c}", f"{i}.jpg"), size=(48 + i, 40), seed=c * 100 + i)
        for i in range(2):
            write_image(os.path.join(root, "test", f"class_{c}", f"{i}.png"), size=(44, 44), seed=9000 + c * 10 + i)
    return root


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """An image folder with a corrupt JPEG and a stray text file, written by bin/make_records into 4 shards."""
    root = _image_folder(str(tmp_path_factory.mktemp("folder")))
    corrupt = os.path.join(root, "train", "class_1", "corrupt.jpg")
    with open(corrupt, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    with open(os.path.join(root, "train", "class_2", "notes.txt"), "w") as f:
        f.write("scraped")
    out = str(tmp_path_factory.mktemp("records"))
    done = run_bin(
        "make_records",
        "--config=configs/tiny.py",
        "--config.data.source=image_folder",
        f"--config.data.root={root}",
        f"--out={out}",
        "--num_shards=4",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root, out, corrupt, done


def test_make_records_writes_shards_and_a_manifest_and_leaves_out_undecodable_files(written):
    root, out, corrupt, done = written
    assert "train: 24 examples in 4 shard(s), 1 undecodable left out" in done.stdout
    manifest = json.loads(open(os.path.join(out, records.MANIFEST)).read())
    assert manifest["class_names"] == ["class_0", "class_1", "class_2"]
    train = manifest["splits"]["train"]
    assert train["left_out"] == [corrupt] and train["class_counts"] == [8, 8, 8]
    assert sorted(s["examples"] for s in train["shards"]) == [6, 6, 6, 6]
    assert manifest["splits"]["test"]["examples"] == 6
    # The record bytes are the files' bytes, with their labels: nothing re-encoded, nothing lost.
    folder = readers.image_folder(root, "train")
    expected = {(open(p, "rb").read(), y) for p, y in zip(folder.paths, folder.labels, strict=True) if p != corrupt}
    split = records.records(out, "train")
    stored = {(data, int(y)) for data, y in split.encoded_dataset().as_numpy_iterator()}
    assert stored == expected and split.num_examples == 24
    np.testing.assert_array_equal(np.bincount(split.labels), [8, 8, 8])
    # Every shard mixes the classes (seeded order, dealt round-robin).
    for path, _ in split.shards:
        labels = {int(records._parse(0, r)[1]) for r in tf.data.TFRecordDataset(path)}
        assert len(labels) > 1
    again = run_bin(
        "make_records",
        "--config=configs/tiny.py",
        "--config.data.source=image_folder",
        f"--config.data.root={root}",
        f"--out={out}",
    )
    assert again.returncode == 2 and "already holds a records folder" in again.stderr


def test_a_missing_records_folder_or_shard_is_named(written, tmp_path):
    with pytest.raises(UserError, match="no manifest.json in"):
        records.records(str(tmp_path), "train")
    _, out, _, _ = written
    with pytest.raises(UserError, match=r"has splits \['test', 'train'\]. Received: split='val'"):
        records.records(out, "val")


def _labels_per_epoch(stream, steps):
    return [
        sorted(np.concatenate([t["classifier"][::2] for _, t in stream[e * steps : (e + 1) * steps]]).tolist())
        for e in range(len(stream) // steps)
    ]


def test_the_records_stream_is_seeded_covers_each_example_per_epoch_and_resumes_exactly(written):
    split = records.records(written[1], "train")
    stream = list(train_stream.train_batches(split, SPEC).take(12).as_numpy_iterator())  # Two epochs of 6 steps.
    again = list(train_stream.train_batches(split, SPEC).take(12).as_numpy_iterator())
    tf.nest.map_structure(np.testing.assert_array_equal, stream, again)
    other = next(iter(train_stream.train_batches(split, dataclasses.replace(SPEC, seed=6))))
    assert not np.array_equal(other[0], stream[0][0])
    assert _labels_per_epoch(stream, 6) == [[0] * 8 + [1] * 8 + [2] * 8] * 2
    first, second = (np.concatenate([t["classifier"][::2] for _, t in stream[a:b]]) for a, b in ((0, 6), (6, 12)))
    assert not np.array_equal(first, second)  # A new order each epoch.
    resumed = list(train_stream.train_batches(split, SPEC, start_step=8).take(4).as_numpy_iterator())
    tf.nest.map_structure(np.testing.assert_array_equal, resumed, stream[8:])
    # Decoded records are the decoded files.
    image, label = next(iter(pipeline.examples(split)))
    assert image.dtype == tf.uint8 and image.shape[2] == 3


def _record_numbers(split, process_index, process_count):
    """The record numbers (places in the shards, in manifest order) that a process reads."""
    number_of = {}
    for path, _ in split.shards:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            number_of[tf.io.parse_single_example(record, records.FEATURES)[records.IMAGE].numpy()] = len(number_of)
    return [
        number_of[data] for data, _ in split.encoded_dataset(None, process_index, process_count).as_numpy_iterator()
    ]


def test_each_process_reads_only_its_own_records_and_resumes_exactly(written):
    split = records.records(written[1], "train")
    seen = [{data for data, _ in split.encoded_dataset(None, p, 2).as_numpy_iterator()} for p in range(2)]
    assert len(seen[0]) == len(seen[1]) == 12 and not seen[0] & seen[1]
    parts = [
        list(train_stream.train_batches(split, SPEC, process_index=p, process_count=2).take(9).as_numpy_iterator())
        for p in range(2)
    ]
    assert all(len(labels) == 4 for batch in parts[0] for labels in [batch[1]["classifier"]])  # 2 examples x 2 views.
    assert not np.array_equal(parts[0][0][0], parts[1][0][0])
    resumed = list(
        train_stream.train_batches(split, SPEC, start_step=4, process_index=1, process_count=2)
        .take(5)
        .as_numpy_iterator()
    )
    tf.nest.map_structure(np.testing.assert_array_equal, resumed, parts[1][4:])


def test_more_processes_than_shards_share_the_records_evenly(written):
    split = records.records(written[1], "train")  # 4 shards of 6.
    numbers = [_record_numbers(split, p, 8) for p in range(8)]  # Runs of 3 records, some inside one shard.
    assert [len(n) for n in numbers] == [3] * 8 and sorted(sum(numbers, [])) == list(range(24))
    assert train_stream.steps_per_epoch(split, 8, process_count=8) == 3
    last = next(
        iter(
            train_stream.train_batches(split, dataclasses.replace(SPEC, batch_size=8), process_index=7, process_count=8)
        )
    )
    assert last[1]["classifier"].shape == (2,)  # 1 example x 2 views per process.
    # A share smaller than the process's slice of a global batch is named, with the process and the counts.
    with pytest.raises(UserError, match="process 0 of 8 reads 3 of the 24 training example.s., fewer than its 8"):
        train_stream.steps_per_epoch(split, 64, process_count=8)
    with pytest.raises(UserError, match="batch_size=6 is not a multiple of num_processes=4"):
        train_stream.steps_per_epoch(split, 6, process_count=4)


def test_two_thousand_classes_train_evaluate_and_export_with_their_names(tmp_path, tiny_config):
    from dcl_keras import evaluation, training
    from dcl_keras.predict import Predictor

    classes = [f"sku_{i:04d}" for i in range(2000)]
    rng = np.random.default_rng(0)

    def split(name, every):
        paths, labels = [], []
        for c in range(0, len(classes), every):
            for i in range(1):
                path = str(tmp_path / "images" / name / f"{c}_{i}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tf.io.write_file(path, tf.io.encode_png(rng.integers(0, 256, (24, 24, 3), np.uint8)))
                paths.append(path)
                labels.append(c)
        return readers.FileSplit(paths, labels, classes, name=name)

    out = str(tmp_path / "records")
    # One training image of every class; test images of every tenth class (the evaluation still has 2000 classes).
    records.write_records({"train": split("train", 1), "test": split("test", 10)}, out, num_shards=8)
    config = tiny_config.copy_and_resolve_references()
    config.data.source = "records"
    config.data.root = out
    config.train.epochs = 1
    config.train.steps_per_epoch = 2
    result = training.train_and_evaluate(config, str(tmp_path / "run"))
    report = result["evaluation"]
    assert report["num_examples"] == 200 and len(report["class_names"]) == 2000
    # Only the non-zero cells of the 2000 x 2000 confusion matrix are written (dense, it was 36 MB of JSON).
    assert os.path.getsize(report["report_path"]) < 1_000_000 and "confusion_matrix" not in report
    confusion = evaluation.confusion_matrix(json.loads(open(report["report_path"]).read()))
    assert confusion.shape == (2000, 2000) and confusion.sum() == 200
    assert np.trace(confusion) / 200 == pytest.approx(report["top1"])
    ((key, top),) = Predictor.from_export(os.path.dirname(result["export"]), top_k=3).predict(
        [rng.integers(0, 256, (30, 30, 3), np.uint8)]
    )
    assert len(top) == 3 and all(name in classes for name, _ in top)
    counts = collections.Counter(name for name, _ in top)
    assert max(counts.values()) == 1


def test_tfds_and_cub_sources_are_written_with_their_boxes(tmp_path):
    import toy_tfds
    from test_readers import _write_cub

    name = toy_tfds.prepare(str(tmp_path / "tfds"))
    tfds_split = tfds_reader.tfds(name, "train", data_dir=str(tmp_path / "tfds"))
    entry = records.write_split(tfds_split, str(tmp_path / "from_tfds"), "train", num_shards=2)
    assert entry["examples"] == 12 and entry["class_counts"] == [4, 4, 4] and not entry["left_out"]
    expected = sorted((data, int(y)) for data, y in tfds_split.encoded_dataset().as_numpy_iterator())
    written = [(p, n) for p, n in ((str(tmp_path / "from_tfds" / s["file"]), s["examples"]) for s in entry["shards"])]
    split = records.RecordsSplit(str(tmp_path / "from_tfds"), "train", tfds_split.class_names, written)
    assert sorted((data, int(y)) for data, y in split.encoded_dataset().as_numpy_iterator()) == expected
    # CUB: each record keeps its box (x, y, width, height in file pixels).
    (tmp_path / "cub").mkdir()
    _write_cub(tmp_path / "cub")
    cub = readers.cub200(str(tmp_path / "cub"), "train")
    entry = records.write_split(cub, str(tmp_path / "from_cub"), "train", num_shards=1)
    (shard,) = entry["shards"]
    boxes = [
        tf.io.parse_single_example(r, {records.BOX: records.FEATURES[records.BOX]})[records.BOX].numpy().tolist()
        for r in tf.data.TFRecordDataset(str(tmp_path / "from_cub" / shard["file"]))
    ]
    assert boxes == [[1.0, 2.0, 10.0, 20.0]] * 4


def test_shard_counts_that_do_not_divide_over_the_processes_still_give_equal_shares(written):
    full = records.records(written[1], "train")  # 4 shards of 6.
    three = records.RecordsSplit(full.root, "train", full.class_names, full.shards[:3])  # 18 records, 2 processes.
    assert [three.process_examples(p, 2) for p in range(2)] == [9, 9]
    numbers = [_record_numbers(three, p, 2) for p in range(2)]
    assert sorted(numbers[0]) == list(range(9)) and sorted(numbers[1]) == list(range(9, 18))  # Shard 1 is split.
    # Batches of 4 (2 per process): 9 // 2 = 4 steps, as many as one process reading all 18 (18 // 4).
    assert train_stream.steps_per_epoch(three, 4, process_count=2) == train_stream.steps_per_epoch(three, 4) == 4
    subset = three.subset(range(0, 18, 2))  # Record numbers 0, 2, ..., 16: 9 kept, shared 4 and 5.
    assert [subset.process_examples(p, 2) for p in range(2)] == [4, 5] and subset.class_counts is None
    kept = [_record_numbers(subset, p, 2) for p in range(2)]
    assert sorted(kept[0] + kept[1]) == list(range(0, 18, 2)) and len(kept[0]) == 4
    parts = [
        list(train_stream.train_batches(three, SPEC, process_index=p, process_count=2).take(4).as_numpy_iterator())
        for p in range(2)
    ]
    assert [len(part) for part in parts] == [4, 4]


def test_make_records_lists_a_vanished_file_and_leaves_no_partial_shard(tmp_path):
    good = write_image(str(tmp_path / "a" / "1.jpg"))
    split = readers.FileSplit([good, str(tmp_path / "a" / "gone.jpg")], [0, 1], ["a", "b"], name="stale list")
    entry = records.write_split(split, str(tmp_path / "out"), "train", num_shards=2)
    assert entry["examples"] == 1 and entry["left_out"] == [str(tmp_path / "a" / "gone.jpg")]
    assert not [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp") or ".tmp." in f]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / records.MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="cannot be read as JSON"):
        records.records(str(tmp_path / "bad"), "train")


def test_a_resume_on_rewritten_records_or_another_shuffle_buffer_is_a_new_stream(written, tiny_config):
    from dcl_keras import training

    split = records.records(written[1], "train")
    assert split.seed == 0  # bin/make_records' default --seed, kept in the manifest.
    base = training.stream_fingerprint(tiny_config, split)
    reseeded = training.stream_fingerprint(tiny_config, dataclasses.replace(split, seed=1))
    resharded = training.stream_fingerprint(
        tiny_config, dataclasses.replace(split, shards=split.shards[::-1])
    )  # Same count.
    buffered = tiny_config.copy_and_resolve_references()
    buffered.data.tfds_shuffle_buffer = 64
    changed = [
        sorted(k for k in base if other[k] != base[k])
        for other in (reseeded, resharded, training.stream_fingerprint(buffered, split))
    ]
    assert changed[0] == changed[1] == ["record shards (digest of seed, names and counts)"], changed
    assert changed[2] == ["data.tfds_shuffle_buffer"]


def _stored_images(split):
    """The image bytes of every record of the split's shards, in record-number order."""
    return [records._parse(0, r)[0].numpy() for path, _ in split.shards for r in tf.data.TFRecordDataset(path)]


def test_records_keep_their_source_keys_so_one_exclude_list_serves_both(written):
    root, out, corrupt, _ = written
    folder = readers.image_folder(root, "train")
    split = records.records(out, "train")
    label_of = {k: y for k, y, p in zip(folder.keys(), folder.labels, folder.paths, strict=True) if p != corrupt}
    assert sorted(split.keys()) == sorted(label_of) and split.keys()[0].startswith("train/class_")
    assert [label_of[k] for k in split.keys()] == split.labels  # In record-number order, as the labels.
    assert split.subset([9, 2, 5]).keys() == [split.keys()[i] for i in (2, 5, 9)]


def test_relabelled_records_stream_and_list_their_new_labels(written):
    split = records.records(written[1], "train")
    part = split.subset(range(0, 24, 2))
    relabelled = part.relabel([0, 3], [(part.labels[0] + 1) % 3, part.labels[3]])
    assert relabelled.labels == [(part.labels[0] + 1) % 3] + part.labels[1:]
    images = _stored_images(split)
    expected = {images[n]: y for n, y in zip(part.indices, relabelled.labels, strict=True)}
    assert {data: int(y) for data, y in relabelled.encoded_dataset().as_numpy_iterator()} == expected
    assert relabelled.subset([0]).labels == relabelled.labels[:1]  # A subset keeps the new labels.
