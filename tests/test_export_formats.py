"""TFLite and ONNX files of the classifier: bin/export converts, runs them next to the Keras model, reports."""

import json
import math
import os

import pytest

from dcl_keras import training

from helpers import run_bin


@pytest.fixture(scope="module")
def trained(tiny_config, tmp_path_factory):
    """A bin/train workdir (model.keras, config, data): what a conversion reads."""
    config = tiny_config.copy_and_resolve_references()
    config.train.epochs = 1
    config.eval.enabled = False
    config.export.enabled = False
    workdir = tmp_path_factory.mktemp("convert_run")
    training.train_and_evaluate(config, str(workdir))
    return workdir


@pytest.mark.parametrize(
    "fmt,quantization,backend",
    [
        ("tflite", "float32", "tensorflow"),
        ("tflite", "float16", "tensorflow"),
        ("tflite", "int8", "tensorflow"),
        ("onnx", "float32", "tensorflow"),
        ("tflite", "float32", "jax"),  # Converted in a `python -m dcl_keras.export_formats` child under TensorFlow.
    ],
)
def test_bin_export_converts_and_runs_the_converted_model_against_keras(trained, fmt, quantization, backend, tmp_path):
    workdir = trained
    output = tmp_path / f"model_{quantization}.{fmt}"
    done = run_bin(
        "export",
        f"--workdir={workdir}",
        f"--format={fmt}",
        f"--quantization={quantization}",
        f"--output={output}",
        env={"KERAS_BACKEND": backend},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "top-1 agreement" in done.stdout
    report = json.load(open(tmp_path / f"model_{quantization}.json"))
    assert report["images"] > 0 and os.path.getsize(output) == report["size_bytes"] and report["format"] == fmt
    assert math.isfinite(report["max_abs_logit_difference"]), report  # A model that runs, not NaN.
    if quantization == "int8":  # Reported; int8 logits are not expected to be exact (measured here: 1.0, 2.2e-2).
        assert report["top1_agreement"] >= 0.5 and report["max_rel_logit_difference"] < 0.25, report
    else:
        assert report["top1_agreement"] == 1.0
        # float16 weights round to 2^-11 relative each: measured 9.3e-4 here, so 2e-3 leaves room for other CPUs.
        assert report["max_rel_logit_difference"] <= (2e-3 if quantization == "float16" else 1e-3), report


def test_onnx_refuses_a_quantization_and_converters_need_a_workdir(trained):
    workdir = trained
    done = run_bin("export", f"--workdir={workdir}", "--format=onnx", "--quantization=int8")
    assert done.returncode == 2 and "--quantization does not apply to --format=onnx" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_bin("export", f"--model={workdir / 'model.keras'}", "--format=tflite")
    assert done.returncode == 2 and "--format=tflite needs --workdir" in done.stderr
    done = run_bin("export", f"--workdir={workdir}", "--format=tflite", "--num_images=0")
    assert done.returncode == 2 and "--num_images" in done.stderr
    done = run_bin("export", f"--workdir={workdir}", "--format=tflite", "--version=3")
    assert done.returncode == 2 and "--version" in done.stderr
