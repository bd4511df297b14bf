"""Classes added after training: class prototypes (dcl_keras/gallery.py), Predictor embeddings, bin/gallery.

The model is the tiny backbone with random weights: the new classes are
patterns that any convolution tells apart (two colours, stripes, a checker
board), so a test of recognition does not wait for training. Nothing here
reaches the network.
"""

import os
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from dcl_keras import gallery
from dcl_keras.data import datasets
from dcl_keras.errors import UserError
from dcl_keras.predict import Predictor

from helpers import run_bin, tiny_dcl_model

PATTERNS = ("red", "blue", "stripes", "checker")
PER_CLASS = 4


def pattern(name, rng, side=36):
    """uint8 [side, side, 3]: the class's pattern with a little noise of its own (no two images alike)."""
    y, x = np.mgrid[0:side, 0:side]
    base = {
        "red": np.broadcast_to(np.array([210, 40, 40]), (side, side, 3)),
        "blue": np.broadcast_to(np.array([40, 60, 210]), (side, side, 3)),
        "stripes": np.repeat(((x // 3) % 2 * 255)[..., None], 3, -1),
        "checker": np.repeat((((x // 6) + (y // 6)) % 2 * 255)[..., None], 3, -1),
    }[name]
    return np.clip(base + rng.normal(0, 12, (side, side, 3)), 0, 255).astype(np.uint8)


def write_classes(root, names=PATTERNS, per_class=PER_CLASS, seed=0):
    """root/<name>/<i>.png for each pattern; returns root."""
    rng = np.random.default_rng(seed)
    for name in names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            Image.fromarray(pattern(name, rng)).save(os.path.join(root, name, f"{i}.png"))
    return str(root)


def save_model(path, seed=0, width=8):
    keras.utils.set_random_seed(seed)
    tiny_dcl_model(width=width, resize_size=40).save(path)
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(model file, reference folder, query folder): 4 new classes, 4 images each, and 4 other images each."""
    root = tmp_path_factory.mktemp("gallery")
    model = save_model(root / "model.keras")
    return model, write_classes(root / "reference", seed=0), write_classes(root / "query", seed=1)


def paths_of(root, name):
    return sorted(os.path.join(root, name, f) for f in os.listdir(os.path.join(root, name)))


@pytest.mark.backend_agnostic
def test_prototypes_are_unit_length_means_of_unit_embeddings_and_the_file_holds_plain_arrays(folders, tmp_path):
    model, reference, _ = folders
    predictor = Predictor(model)
    built, summary = gallery.build(predictor, [reference])
    assert built.class_names == sorted(PATTERNS) and list(built.counts) == [PER_CLASS] * 4
    assert summary["new"] == sorted(PATTERNS) and summary["known"] == 0 and summary["merged"] == []
    for name, prototype in zip(built.class_names, built.prototypes, strict=True):
        embedded = predictor.embeddings(paths_of(reference, name))
        np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1.0, rtol=1e-5)
        mean = embedded.mean(0)
        np.testing.assert_allclose(prototype, mean / np.linalg.norm(mean), atol=1e-6)
    assert built.embedding_size == predictor.embedding_size == 32  # 4 x the tiny backbone's width.
    path = built.save(str(tmp_path / "gallery.npz"))
    assert sorted(os.listdir(tmp_path)) == ["gallery.npz"]  # Written through a temporary file, renamed.
    with np.load(path, allow_pickle=False) as data:  # Plain arrays: no pickled object.
        assert data["prototypes"].dtype == np.float32 and data["prototypes"].shape == (4, 32)
        assert int(data["embedding_size"]) == 32 and str(data["model"]) == os.path.abspath(model)
    loaded = gallery.Gallery.load(path)
    np.testing.assert_array_equal(loaded.prototypes, built.prototypes)
    assert loaded.class_names == built.class_names and loaded.sources == [os.path.abspath(reference)]
    loaded.check_model(predictor)


@pytest.mark.backend_agnostic
def test_new_classes_are_recognised_from_four_images_each(folders):
    model, reference, query = folders
    predictor = Predictor(model, top_k=2)
    built, _ = gallery.build(predictor, [reference])
    files = [path for name in PATTERNS for path in paths_of(query, name)]
    ranked = built.predict(predictor, files)
    # 16 unseen images of 4 classes all right: 4^-16 by chance.
    assert [top[0][0] for _, top in ranked] == [name for name in PATTERNS for _ in range(PER_CLASS)]
    assert [key for key, _ in ranked] == files and all(len(top) == 2 for _, top in ranked)
    scores = built.scores(predictor.embeddings(files))
    np.testing.assert_allclose([top[0][1] for _, top in ranked], scores.max(1), atol=1e-6)  # Cosine similarity.
    assert np.all(scores <= 1 + 1e-5)


@pytest.mark.backend_agnostic
def test_known_classes_from_a_training_split_rank_with_the_new_and_a_shared_name_merges(folders, tiny_config, tmp_path):
    model, reference, query = folders
    split = datasets.load_splits(tiny_config.data).train
    known = list(split.class_names)
    extra = tmp_path / "more"  # Two more images of a known class, and the new classes again under another root.
    os.makedirs(extra / known[0])
    for i, path in enumerate(split.paths[:2]):
        shutil.copy(path, extra / known[0] / f"again_{i}.png")
    shutil.copytree(os.path.join(reference, "red"), extra / "red")
    predictor = Predictor(model)
    built, summary = gallery.build(predictor, [reference, str(extra)], split)
    assert built.class_names == known + sorted(PATTERNS)  # Known first, in the split's order.
    per_class = np.bincount(split.labels, minlength=len(known))
    assert list(built.counts) == [per_class[0] + 2, *per_class[1:], PER_CLASS, PER_CLASS, 2 * PER_CLASS, PER_CLASS]
    assert summary["merged"] == [known[0], "red"] and summary["known"] == len(known)
    assert summary["new"] == sorted(PATTERNS) and summary["images"] == int(built.counts.sum())
    first = np.array([p for p, label in zip(split.paths, split.labels, strict=True) if label == 0])
    rows = np.concatenate([predictor.embeddings(list(first)), predictor.embeddings(paths_of(extra, known[0]))])
    np.testing.assert_allclose(built.prototypes[0], gallery.normalize(rows.mean(0)), atol=1e-5)
    files = [path for name in PATTERNS for path in paths_of(query, name)]
    assert [top[0][0] for _, top in built.predict(predictor, files)] == [n for n in PATTERNS for _ in range(PER_CLASS)]


@pytest.mark.backend_agnostic
def test_folders_without_enough_images_are_named_with_their_count_before_any_image_is_read(folders, tmp_path):
    model, reference, _ = folders
    predictor = Predictor(model)
    few = tmp_path / "few"
    os.makedirs(few / "widget")
    os.makedirs(few / "empty")
    shutil.copy(paths_of(reference, "red")[0], few / "widget" / "0.png")
    with pytest.raises(UserError, match=r"min_images=2 .*few/empty: 0 image\(s\); .*few/widget: 1 image\(s\)$"):
        gallery.build(predictor, [reference, str(few)])
    write_classes(tmp_path / "one_more", names=("red",), per_class=1)  # Counts with the other red images.
    assert gallery.build(predictor, [reference, str(tmp_path / "one_more")])[1]["merged"] == ["red"]
    gallery.build(predictor, [reference], min_images=PER_CLASS)
    with pytest.raises(UserError, match=rf"min_images={PER_CLASS + 1} .*Received: .*blue: {PER_CLASS} image"):
        gallery.build(predictor, [reference], min_images=PER_CLASS + 1)
    os.makedirs(tmp_path / "nothing")
    with pytest.raises(UserError, match=r"nothing: expected one sub-folder of images per class.*Received: no sub"):
        gallery.build(predictor, [str(tmp_path / "nothing")])
    with pytest.raises(UserError, match=r"widget: expected one sub-folder .*Received: 1 image file\(s\) in it"):
        gallery.build(predictor, [str(few / "widget")])
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        gallery.build(predictor, [str(tmp_path / "missing")])
    with pytest.raises(UserError, match="expected image folders and/or a training split. Received: neither"):
        gallery.build(predictor, [])


@pytest.mark.backend_agnostic
def test_unreadable_images_are_skipped_and_reported_and_may_leave_a_class_short(folders, tmp_path):
    model, reference, _ = folders
    predictor = Predictor(model)
    root = tmp_path / "scraped"
    shutil.copytree(reference, root)
    (root / "red" / "broken.jpg").write_bytes(os.urandom(500))
    failures = []
    built, _ = gallery.build(predictor, [str(root)], failures=failures)
    assert [key for key, _ in failures] == [str(root / "red" / "broken.jpg")]
    assert "broken.jpg: cannot be read or decoded" in failures[0][1]
    assert built.counts[built.class_names.index("red")] == PER_CLASS
    with pytest.raises(UserError, match="broken.jpg: cannot be read or decoded"):
        gallery.build(predictor, [str(root)])  # Without a failures list, as Predictor.predict.
    for path in paths_of(root, "blue")[1:]:
        os.remove(path)
    (root / "blue" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"blue: 1 image\(s\) \(1 could not be read\)$"):
        gallery.build(predictor, [str(root)], failures=[])


@pytest.mark.backend_agnostic
def test_a_gallery_is_refused_by_a_model_that_embeds_otherwise(folders, tmp_path):
    model, reference, _ = folders
    built, _ = gallery.build(Predictor(model), [reference])
    built.save(str(tmp_path / "gallery.npz"))
    loaded = gallery.Gallery.load(str(tmp_path / "gallery.npz"))
    wider = Predictor(save_model(tmp_path / "wider.keras", width=16))
    with pytest.raises(UserError, match=r"gallery.npz holds embeddings of size 32 from .*model.keras, and .*wider"):
        loaded.check_model(wider)
    retrained = Predictor(save_model(tmp_path / "retrained.keras", seed=1))
    with pytest.raises(UserError, match=r"embeds differently .*bin/gallery --model=.*retrained.keras"):
        loaded.check_model(retrained)
    np.savez(tmp_path / "other.npz", prototypes=np.zeros((2, 3)))
    with pytest.raises(UserError, match=r"other.npz: not a gallery file .*missing \['format_version'"):
        gallery.Gallery.load(str(tmp_path / "other.npz"))
    with pytest.raises(FileNotFoundError, match="Gallery not found"):
        gallery.Gallery.load(str(tmp_path / "none.npz"))


def test_bin_gallery_then_bin_predict_with_the_gallery(folders, tiny_config_file, tmp_path):
    model, reference, query = folders
    root = tmp_path / "new"
    shutil.copytree(reference, root)
    (root / "red" / "broken.jpg").write_bytes(os.urandom(500))
    output = tmp_path / "out" / "gallery.npz"
    args = (f"--model={model}", f"--images={root}", f"--output={output}")
    done = run_bin("gallery", *args, f"--config={tiny_config_file}")
    assert done.returncode == 1, done.stderr[-3000:]  # The broken file is left out, named, and the rest written.
    assert (
        "Traceback" not in done.stderr
        and f"gallery: error: {root / 'red' / 'broken.jpg'}: cannot be read" in done.stderr
    )
    assert "gallery: 8 classes (4 known, 4 new)" in done.stdout and f"wrote {output}\n" in done.stdout
    assert gallery.Gallery.load(str(output)).class_names[4:] == sorted(PATTERNS)
    predicted = run_bin("predict", f"--model={model}", f"--gallery={output}", "--top_k=1", query)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = predicted.stdout.splitlines()
    assert lines[0].startswith(f"# score: cosine similarity to the class prototypes of {output} (8 classes)")
    top1 = [line.split()[-1] for line in lines if line.startswith("  ")]
    assert top1 == [name for name in sorted(PATTERNS) for _ in range(PER_CLASS)]  # bin/predict lists folders sorted.
    refused = run_bin("gallery", *args, "--min_images=5")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("gallery: error: Each class needs at least min_images=5")
    assert f"{root / 'blue'}: 4 image(s)" in refused.stderr


@pytest.fixture(scope="module")
def exported(folders, tmp_path_factory):
    """The model's export (TensorFlow): its base folder."""
    from dcl_keras import export, saving

    base = str(tmp_path_factory.mktemp("export"))
    export.export_classifier(saving.load_model(folders[0]), base)
    return base


def test_an_export_embeds_files_arrays_and_splits_as_its_keras_model(folders, exported, tiny_config):
    model, reference, query = folders
    from_keras, from_export = Predictor(model), Predictor(exported)
    assert from_export.embedding_size == from_keras.embedding_size == 32
    files = paths_of(query, "stripes") + paths_of(query, "red")
    np.testing.assert_allclose(from_export.embeddings(files), from_keras.embeddings(files), atol=1e-4)
    arrays = [np.asarray(Image.open(path)) for path in files[:3]]  # uint8: encoded as PNG, exactly.
    np.testing.assert_allclose(from_export.embeddings(arrays), from_keras.embeddings(files[:3]), atol=1e-4)
    split = datasets.load_splits(tiny_config.data).train
    (keras_rows, keras_labels), (export_rows, export_labels) = (
        p.split_embeddings(split, batch_size=5) for p in (from_keras, from_export)
    )
    np.testing.assert_array_equal(export_labels, keras_labels)
    np.testing.assert_allclose(export_rows, keras_rows, atol=1e-4)
    built = {p: gallery.build(p, [reference], split)[0] for p in (from_keras, from_export)}
    np.testing.assert_allclose(built[from_export].prototypes, built[from_keras].prototypes, atol=1e-4)
    built[from_export].check_model(from_keras)  # Either one's gallery serves the other.
    built[from_keras].check_model(from_export)
    fractional = arrays[0].astype(np.float32) + 0.5
    with pytest.raises(UserError, match="input 0: an export embeds encoded images, .*float32 values in"):
        from_export.embeddings([fractional])
    failures = []
    keys, rows = from_export.keyed_embeddings([fractional, files[0]], failures)
    assert keys == [files[0]] and rows.shape == (1, 32) and [key for key, _ in failures] == [0]


def test_an_export_without_the_embedding_signature_is_refused_in_one_line(folders, tmp_path):
    import tensorflow as tf

    from dcl_keras import saving
    from dcl_keras.models import dcl

    model, reference, _ = folders
    classifier = dcl.classifier_model(saving.load_model(model))
    archive = keras.export.ExportArchive()  # What bin/export wrote before the embedding signature.
    archive.track(classifier)
    archive.add_endpoint(
        "serving_default",
        lambda pixels: {"logits": classifier(pixels, training=False)},
        input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="pixels")],
    )
    archive.write_out(str(tmp_path / "old" / "1"), verbose=False)
    predictor = Predictor(str(tmp_path / "old"))
    with pytest.raises(UserError, match=r"old/1 has no 'serve_embeddings' signature"):
        predictor.embeddings(paths_of(reference, "red"))
    with pytest.raises(UserError, match=r"old/1 has no 'serve_embeddings' signature"):
        gallery.build(predictor, [reference])
