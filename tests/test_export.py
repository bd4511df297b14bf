"""The TF Serving export: signatures, a TF-only client, parity with Keras and bin/predict."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dcl_keras import export, training
from dcl_keras.data import readers
from dcl_keras.errors import UserError
from dcl_keras.models import dcl
from dcl_keras.predict import Predictor

from helpers import run_bin, tiny_dcl_model


@pytest.fixture(scope="module")
def trained(tiny_config, tmp_path_factory):
    config = tiny_config.copy_and_resolve_references()
    config.train.epochs = 1
    config.eval.enabled = False
    workdir = tmp_path_factory.mktemp("export_run")
    result = training.train_and_evaluate(config, str(workdir))
    return workdir, result["export"], config


def test_export_layout_and_parameter_count(trained):
    workdir, path, _ = trained
    assert os.path.basename(path) == "1" and os.path.isfile(os.path.join(path, "saved_model.pb"))
    model = training.saving.load_model(str(workdir / "model.keras"))
    loaded = tf.saved_model.load(path)
    exported_params = sum(int(np.prod(v.shape)) for v in loaded.variables)
    classifier = model.get_layer("classifier")
    assert exported_params == model.backbone.count_params() + classifier.count_params()
    assert exported_params == dcl.classifier_model(model).count_params()


def test_saved_model_cli_lists_both_signatures_and_named_outputs(trained):
    _, path, _ = trained
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, check=True).stdout
    for signature in ("serving_default", "serve_pixels", "serve_crops", "classify", "serve_embeddings"):
        assert f"signature_def['{signature}']" in shown
    for output in ("logits", "probabilities", "top_k_indices", "top_k_scores", "top_k_names", "embeddings"):
        assert f"outputs['{output}']" in shown
    assert "inputs['images']" in shown and "inputs['pixels']" in shown and "inputs['crops']" in shown


SERVED = {"logits", "probabilities", "top_k_indices", "top_k_scores", "top_k_names"}


def test_each_signature_has_its_inputs_and_outputs(trained):
    """The contract a client codes against: names, dtypes and shapes of every signature (-1: any batch)."""
    from tensorflow.core.protobuf import saved_model_pb2

    workdir, path, config = trained
    proto = saved_model_pb2.SavedModel.FromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    signatures = proto.meta_graphs[0].signature_def

    def spec(tensors):
        return {
            name: (tf.dtypes.as_dtype(t.dtype).name, [d.size for d in t.tensor_shape.dim])
            for name, t in tensors.items()
        }

    size = config.input.image_size
    width = dcl.embedding_model(training.saving.load_model(str(workdir / "model.keras"))).output_shape[-1]
    assert set(signatures) - {"__saved_model_init_op"} == {
        "serving_default",
        "serve_pixels",
        "serve_crops",
        "classify",
        "serve_embeddings",
    }
    assert spec(signatures["serving_default"].inputs) == {"images": ("string", [-1])}
    assert spec(signatures["serve_pixels"].inputs) == {"pixels": ("float32", [-1, -1, -1, 3])}
    assert spec(signatures["serve_crops"].inputs) == {"crops": ("float32", [-1, size, size, 3])}
    assert spec(signatures["classify"].inputs) == {"inputs": ("string", [-1])}
    assert spec(signatures["serve_embeddings"].inputs) == {"images": ("string", [-1])}
    for name in ("serving_default", "serve_pixels", "serve_crops"):
        assert set(signatures[name].outputs) == SERVED, name
    assert set(signatures["classify"].outputs) == {"classes", "scores"}
    assert spec(signatures["serve_embeddings"].outputs) == {"embeddings": ("float32", [-1, width])}


CLIENT = r"""
import json, sys
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
paths = json.loads(sys.argv[2])
out = serve(images=tf.constant([open(p, "rb").read() for p in paths]))
print(json.dumps({"logits": out["logits"].numpy().tolist(), "names": [n.decode() for n in out["top_k_names"].numpy()[:, 0]]}))
try:
    serve(images=tf.constant([b"definitely not an image"]))
    print("NO ERROR")
except tf.errors.InvalidArgumentError:
    print("INVALID_ARGUMENT")
pixels = tf.saved_model.load(sys.argv[1]).signatures["serve_pixels"]
print(pixels(pixels=tf.zeros([2, 70, 50, 3]))["probabilities"].shape)
large = tf.io.decode_jpeg(open(paths[-1], "rb").read(), channels=3, dct_method="INTEGER_ACCURATE")
print(json.dumps(pixels(pixels=tf.cast(large, tf.float32)[None])["logits"].numpy().tolist()))
crops = tf.constant(np.load(sys.argv[3]))
served = tf.saved_model.load(sys.argv[1]).signatures["serve_crops"](crops=crops)
print(json.dumps({"logits": served["logits"].numpy().tolist(), "names": [n.decode() for n in served["top_k_names"].numpy()[:, 0]]}))
embed = tf.saved_model.load(sys.argv[1]).signatures["serve_embeddings"]
print(json.dumps(embed(images=tf.constant([open(p, "rb").read() for p in paths]))["embeddings"].numpy().tolist()))
"""


def _large_photo(path, width=4000, height=3000):
    """A 4000x3000 JPEG with detail finer than the resize can keep (aliases unless filtered)."""
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 127 + 80 * np.sin(xx / 1.7) * np.cos(yy / 2.3) + 40 * np.sin(xx / 400 + yy / 300)
    image = np.clip(np.stack([base, base[::-1], 255 - base], -1), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path, quality=90)
    return str(path)


def test_tf_only_process_matches_keras_logits_and_bin_predict(trained, demo_root, tmp_path):
    from dcl_keras.data import augment, pipeline

    workdir, path, config = trained
    test = readers.image_folder(demo_root, "test")
    paths = test.paths[:5] + [_large_photo(tmp_path / "large.jpg")]
    model = training.saving.load_model(str(workdir / "model.keras"))
    spec = export.classifier_and_spec(model)[1]
    crops = np.stack(
        [
            augment.eval_preprocess(
                pipeline.decode_image(tf.io.read_file(p)), spec.resize_size, spec.image_size, spec.resampling
            )
            for p in paths
        ]
    )  # What serving_default makes of the files in-graph, here made by the evaluation preprocessing.
    np.save(tmp_path / "crops.npy", crops)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, path, json.dumps(paths), str(tmp_path / "crops.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    served = json.loads(lines[0])
    assert lines[1] == "INVALID_ARGUMENT"
    assert lines[2] == "(2, 4)"
    keras_logits = Predictor(str(workdir / "model.keras")).logits(paths)
    assert np.max(np.abs(np.array(served["logits"]) - keras_logits)) <= 1e-4  # The 4000x3000 JPEG included.
    # serve_pixels on the decoded photo preprocesses exactly as serving_default on its bytes.
    assert np.max(np.abs(np.array(json.loads(lines[3])[0]) - np.array(served["logits"][-1]))) <= 1e-4
    # serve_crops on the evaluation crops of the files: the Keras classifier's logits, serving_default's top-1.
    by_crops = json.loads(lines[4])
    np.testing.assert_allclose(by_crops["logits"], dcl.classifier_model(model).predict_on_batch(crops), atol=1e-4)
    np.testing.assert_allclose(by_crops["logits"], served["logits"], atol=1e-4)
    assert by_crops["names"] == served["names"]
    # serve_embeddings on the bytes: unit-length rows, the Keras embedding model's on the same crops.
    embeddings = np.array(json.loads(lines[5]))
    assert embeddings.shape == (len(paths), dcl.embedding_model(model).output_shape[-1])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embeddings, dcl.embedding_model(model).predict_on_batch(crops), atol=1e-5)
    predicted = run_bin("predict", f"--model={workdir / 'model.keras'}", "--top_k=1", *paths)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    top1 = [line.split()[-1] for line in predicted.stdout.splitlines() if line.startswith("  ")]
    assert top1 == served["names"]
    from_export = run_bin("predict", f"--model={os.path.dirname(path)}", "--top_k=1", *paths)
    assert [line.split()[-1] for line in from_export.stdout.splitlines() if line.startswith("  ")] == served["names"]


def test_bin_predict_names_an_unreadable_file_and_predicts_the_others(trained, demo_root, tmp_path):
    workdir, path, _ = trained
    good = readers.image_folder(demo_root, "test").paths[0]
    folder = tmp_path / "scraped"
    folder.mkdir()
    shutil.copy(good, folder / "good.png")
    (folder / "random.jpg").write_bytes(os.urandom(2000))
    for model in (str(workdir / "model.keras"), os.path.dirname(path)):
        result = run_bin("predict", f"--model={model}", "--top_k=1", str(folder))
        assert result.returncode == 1, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "InvalidArgumentError" not in result.stderr
        assert f"{folder / 'random.jpg'}: cannot be read or decoded" in result.stderr
        assert str(folder / "good.png") in result.stdout and "random.jpg" not in result.stdout
    with pytest.raises(UserError, match="random.jpg: cannot be read"):
        Predictor(str(workdir / "model.keras")).predict([str(folder / "random.jpg")])


def test_versions_increment_and_existing_version_is_refused(trained, tmp_path):
    workdir, _, _ = trained
    model_path = str(workdir / "model.keras")
    first = export.export_model_file(model_path, str(tmp_path), top_k=3)
    second = export.export_model_file(model_path, str(tmp_path), top_k=3)
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    assert not [d for d in os.listdir(tmp_path) if d.startswith(".tmp")]
    with pytest.raises(FileExistsError, match="version=2"):
        export.export_model_file(model_path, str(tmp_path), version=2)
    result = run_bin("export", f"--model={model_path}", f"--export_dir={tmp_path}")
    assert result.returncode == 0 and result.stdout.strip().endswith(os.path.join(str(tmp_path), "3"))


def test_predictor_api_takes_files_and_arrays_from_a_model_file_or_an_export(trained, demo_root):
    from dcl_keras.data import pipeline

    workdir, path, _ = trained
    files = readers.image_folder(demo_root, "test").paths[:3]
    arrays = [pipeline.decode_image(tf.io.read_file(p)).numpy() for p in files]  # The same pixels as the files.
    predictors = (
        Predictor.from_keras(workdir / "model.keras", top_k=2),
        Predictor.from_export(os.path.dirname(path), top_k=2),
    )
    for predictor in predictors:
        by_file, by_array = predictor.predict(files), predictor.predict(arrays)
        assert [key for key, _ in by_file] == files and [key for key, _ in by_array] == [0, 1, 2]
        for (_, a), (_, b) in zip(by_file, by_array, strict=True):
            assert [name for name, _ in a] == [name for name, _ in b] and len(a) == 2
            np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)
        batch = predictor.predict(np.stack(arrays).astype(np.float32))  # A 4-D array is a batch.
        np.testing.assert_allclose([t[0][1] for _, t in batch], [t[0][1] for _, t in by_array], atol=1e-5)
        mixed = predictor.predict([files[0], arrays[1]])
        assert [key for key, _ in mixed] == [files[0], 1]
        np.testing.assert_allclose(predictor.logits(arrays[:1]), predictor.logits(files[:1]), atol=1e-4)
        with pytest.raises(UserError, match=r"input 0: expected an image file path or an H x W x 3 RGB array"):
            predictor.predict([np.zeros((4, 4), np.uint8)])
    with pytest.raises(FileNotFoundError, match="export folder"):
        Predictor.from_export(workdir / "model.keras")
    with pytest.raises(FileNotFoundError, match=".keras model file"):
        Predictor.from_keras(os.path.dirname(path))


@pytest.mark.parametrize("resampling", ["pillow", "fused"])
def test_the_export_and_predictor_resize_as_the_model_was_trained(trained, tmp_path, resampling):
    """A model trained with `fused` resampling is served with the unfiltered resize it was evaluated with."""
    from dcl_keras.data import augment
    from dcl_keras.saving import load_model

    workdir, _, config = trained
    model = load_model(workdir / "model.keras")
    model.resampling = resampling
    size = config.input.resize_size * 3
    stripes = np.where(np.arange(size) % 3 == 0, 255.0, 0.0).astype(np.float32)  # Aliases unless filtered.
    image = np.repeat(np.repeat(stripes[None, :, None], size, 0), 3, 2)
    crops = {
        r: augment.eval_preprocess(image, config.input.resize_size, config.input.image_size, r)
        for r in ("pillow", "fused")
    }
    assert np.abs(crops["pillow"].numpy() - crops["fused"].numpy()).mean() > 20.0
    expected = dcl.classifier_model(model).predict_on_batch(crops[resampling].numpy()[None])
    served = tf.saved_model.load(export.export_classifier(model, str(tmp_path / "export"))).signatures["serve_pixels"]
    np.testing.assert_allclose(served(pixels=tf.constant(image[None]))["logits"].numpy(), expected, atol=1e-4)
    model.save(tmp_path / "model.keras")
    from_file = Predictor.from_keras(tmp_path / "model.keras").logits([image.astype(np.uint8)])
    np.testing.assert_allclose(from_file, expected, atol=1e-4)


def _tf_serving_protos():
    """PredictionLog and friends built from their .proto field numbers (tensorflow_serving/apis), here in the test.

    An independent reading of the warm-up file: the export writes it field by
    field, without the tensorflow-serving-api package.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorflow.core.framework import tensor_pb2

    pool = descriptor_pool.DescriptorPool()

    def add(file_descriptor):
        for dependency in file_descriptor.dependencies:
            add(dependency)
        try:
            pool.FindFileByName(file_descriptor.name)
        except KeyError:
            pool.AddSerializedFile(file_descriptor.serialized_pb)

    add(tensor_pb2.DESCRIPTOR)
    f = descriptor_pb2.FileDescriptorProto(name="test_serving.proto", package="tensorflow.serving", syntax="proto3")
    f.dependency.append(tensor_pb2.DESCRIPTOR.name)
    T = descriptor_pb2.FieldDescriptorProto
    msg = lambda name, *fields: f.message_type.add(name=name, field=[T(**kw) for kw in fields])  # noqa: E731
    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    msg("ModelSpec", dict(name="name", number=1, type=T.TYPE_STRING, label=opt),
        dict(name="signature_name", number=3, type=T.TYPE_STRING, label=opt))  # fmt: skip
    entry = msg("PredictRequest", dict(name="model_spec", number=1, type=T.TYPE_MESSAGE, type_name=".tensorflow.serving.ModelSpec", label=opt),
                dict(name="inputs", number=2, type=T.TYPE_MESSAGE, type_name=".tensorflow.serving.PredictRequest.InputsEntry", label=rep))  # fmt: skip
    nested = entry.nested_type.add(name="InputsEntry", field=[
        T(name="key", number=1, type=T.TYPE_STRING, label=opt),
        T(name="value", number=2, type=T.TYPE_MESSAGE, type_name=".tensorflow.TensorProto", label=opt)])  # fmt: skip
    nested.options.map_entry = True
    msg("PredictLog", dict(name="request", number=1, type=T.TYPE_MESSAGE, type_name=".tensorflow.serving.PredictRequest", label=opt))  # fmt: skip
    msg("PredictionLog", dict(name="predict_log", number=6, type=T.TYPE_MESSAGE, type_name=".tensorflow.serving.PredictLog", label=opt))  # fmt: skip
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.PredictionLog"))


def test_warmup_requests_are_prediction_logs_that_tf_serving_can_replay(trained):
    _, path, _ = trained
    warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    PredictionLog = _tf_serving_protos()
    serving = tf.saved_model.load(path).signatures["serving_default"]
    sizes = []
    for record in tf.data.TFRecordDataset(warmup):
        log = PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default" and set(request.inputs) == {"images"}
        images = tf.make_ndarray(request.inputs["images"])
        sizes.append(len(images))
        assert serving(images=tf.constant(images))["logits"].shape[0] == len(images)  # The replayed request runs.
    assert sizes == list(export.WARMUP_BATCH_SIZES)


def test_classify_signature_follows_the_tf_serving_classify_api(trained, demo_root):
    from tensorflow.core.protobuf import saved_model_pb2

    _, path, config = trained
    proto = saved_model_pb2.SavedModel.FromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    signature = proto.meta_graphs[0].signature_def["classify"]
    assert signature.method_name == "tensorflow/serving/classify"
    assert list(signature.inputs) == ["inputs"] and signature.inputs["inputs"].dtype == tf.string.as_datatype_enum
    assert set(signature.outputs) == {"classes", "scores"}
    assert proto.meta_graphs[0].signature_def["serving_default"].method_name == "tensorflow/serving/predict"
    paths = readers.image_folder(demo_root, "test").paths[:3]
    data = [open(p, "rb").read() for p in paths]
    examples = [export.image_example(d) for d in data]
    assert (
        tf.io.parse_example(examples, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})["image/encoded"][
            0
        ].numpy()
        == data[0]
    )  # The feature key TF Serving clients send.
    loaded = tf.saved_model.load(path)
    classified = loaded.signatures["classify"](inputs=tf.constant(examples))
    served = loaded.signatures["serving_default"](images=tf.constant(data))
    np.testing.assert_array_equal(classified["classes"].numpy(), served["top_k_names"].numpy())
    np.testing.assert_allclose(classified["scores"].numpy(), served["top_k_scores"].numpy(), atol=1e-6)


def test_image_decoding_is_pinned_to_the_cpu(trained):
    _, path, _ = trained
    graph = tf.saved_model.load(path).signatures["serving_default"].graph
    functions = {f.signature.name: f for f in graph.as_graph_def().library.function}
    loops = [
        node
        for function in functions.values()
        for node in function.node_def
        if node.op in ("While", "StatelessWhile")
        and any("Decode" in n.op for f in functions.values() for n in f.node_def)
    ]
    assert loops and all("CPU" in node.device for node in loops), [(n.name, n.device) for n in loops]


def test_user_errors_of_the_tensorflow_child_process_are_one_line_under_jax(trained):
    workdir, _, _ = trained  # Under JAX, bin/export converts in a child process with the TensorFlow backend.
    done = run_bin("export", f"--workdir={workdir}", "--version=1", env={"KERAS_BACKEND": "jax"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "already exists" in done.stderr and "Traceback" not in done.stderr


def test_tf2onnx_converts_serve_crops_and_onnx_runtime_agrees_with_tensorflow(tmp_path):
    """The documented command, run as a user would (serve_pixels does not convert: its antialiased resize does not)."""
    import onnxruntime

    model = tiny_dcl_model(image_size=32, class_names=["ibis", "heron", "stork"], resize_size=36)
    path = export.export_classifier(model, str(tmp_path / "export"), top_k=2)
    output = str(tmp_path / "classifier.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", path, "--signature_def", "serve_crops"]
        + ["--output", output],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    crops = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    expected = tf.saved_model.load(path).signatures["serve_crops"](crops=tf.constant(crops))
    session = onnxruntime.InferenceSession(output, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["crops"]
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {"crops": crops}), strict=True))
    assert set(got) == SERVED
    for key in ("logits", "probabilities", "top_k_scores"):
        np.testing.assert_allclose(got[key], expected[key].numpy(), atol=1e-4, err_msg=key)
    np.testing.assert_array_equal(got["top_k_indices"], expected["top_k_indices"].numpy())
    assert got["top_k_names"].tolist() == [[n.decode() for n in row] for row in expected["top_k_names"].numpy()]


def test_an_export_without_a_signature_is_a_one_line_error_naming_the_fix(tmp_path):
    """An export written before a signature existed: the folder, the missing signature, those it has, the fix."""
    module = tf.Module()
    module.serve = tf.function(
        lambda images: {"logits": tf.zeros([tf.shape(images)[0], 3])},
        input_signature=[tf.TensorSpec([None], tf.string, name="images")],
    )
    old = str(tmp_path / "export" / "1")
    tf.saved_model.save(module, old, signatures={"serving_default": module.serve})
    signatures = tf.saved_model.load(old).signatures
    with pytest.raises(UserError) as raised:
        export.require_signature(signatures, "serve_embeddings", old)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"The export {old} has no 'serve_embeddings' signature")
    assert "re-export it with bin/export --model=" in message and f"--export_dir={tmp_path / 'export'}" in message
    assert message.endswith("Received: signatures ['serving_default']")
    assert export.require_signature(signatures, "serving_default", old) is signatures["serving_default"]
