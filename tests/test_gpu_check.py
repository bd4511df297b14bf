"""benchmarks/gpu_check.py: its --quick run on the CPU, without TensorFlow, and the pieces that read its figures."""

import gzip
import json
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

BENCHMARKS = os.path.join(ROOT, "benchmarks")
# The GPU machine has JAX and no TensorFlow: a None entry in sys.modules makes `import tensorflow` fail there too.
RUN = """
import runpy, sys
if {block}:
    sys.modules["tensorflow"] = None
sys.argv = ["gpu_check.py", *{flags!r}]
runpy.run_path("gpu_check.py", run_name="__main__")
"""


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import gpu_check

    return gpu_check


def run_check(backend, *flags, block_tensorflow=False):
    """The JSON line a --quick run prints last, run from benchmarks/ as `python gpu_check.py` runs."""
    code = RUN.format(block=block_tensorflow, flags=["--quick", *flags])
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=BENCHMARKS, env=env, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_rates(result):
    """The figures every backend reports: positive rates, and the ratio and per-example rate computed from them."""
    assert "error" not in result and result["quick"] is True
    assert result["device"] and "cores" in result["host"] and result["keras_version"]
    images = result["images_per_step"]
    assert images == 8 and result["dcl_examples_per_step"] == 4 and result["batch_tries"] == [[8, "ok"]]
    for name in ("dcl", "plain"):
        rate, step_ms = result[f"{name}_images_per_s"], result[f"{name}_step_ms"]
        assert rate > 0 and step_ms > 0
        assert rate == pytest.approx(images / (step_ms / 1e3), rel=1e-9)
        assert 0 < result[f"{name}_dispatch_ms"] <= step_ms * 1.0001
        assert isinstance(result[f"{name}_first_step_minus_steady_s"], float)
    assert result["ratio"] == pytest.approx(result["plain_images_per_s"] / result["dcl_images_per_s"], rel=1e-9)
    assert result["dcl_examples_per_s"] == pytest.approx(result["dcl_images_per_s"] / 2, rel=1e-9)
    assert "backbone images" in result["ratio_definition"] and result["goal_ratio"] == 1.03


def test_quick_run_under_jax_without_tensorflow(tmp_path):
    result = run_check("jax", f"--out_dir={tmp_path}", block_tensorflow=True)
    check_rates(result)
    assert result["backend"] == "jax" and result["tensorflow_imported"] is False
    assert result["jax_version"][0].isdigit() and result["device"].startswith("cpu")
    assert result["peak_bytes"] == "n/a" and result["donate"] is True  # The CPU keeps no memory statistics.
    for name in ("dcl", "plain"):
        assert result[f"{name}_lower_s"] > 0 and result[f"{name}_compile_s"] > 0
        assert result[f"{name}_compiled_memory_bytes"] > 0 and result[f"{name}_flops_per_byte"] > 0
        assert result[f"{name}_achieved_tflops"] == pytest.approx(
            result[f"{name}_flops_per_step"] / (result[f"{name}_step_ms"] / 1e3) / 1e12, rel=1e-9
        )
        assert sum(result[f"{name}_hlo"]["ops"].values()) > 0
        profile = result[f"{name}_profile"]
        assert "error" not in profile, profile
        assert profile["top_ops"] and all(ms >= 0 for _, _, ms, _ in profile["top_ops"])
        assert "convolution" in profile["category_ms_per_step"] and profile["bound"]
        assert profile["op_ms_per_step"] >= max(ms for _, _, ms, _ in profile["top_ops"])
    # DCL adds the RCM, the discriminator and the alignment head to the same backbone images.
    assert result["dcl_flops_per_step"] > result["plain_flops_per_step"]
    written = {path.name for path in tmp_path.iterdir()}
    assert written == {
        "gpu_check.json",
        "dcl_step.hlo.txt.gz",
        "plain_step.hlo.txt.gz",
        "dcl_step.xplane.pb.gz",
        "plain_step.xplane.pb.gz",
    }
    with open(tmp_path / "gpu_check.json") as f:
        assert json.load(f) == result
    with gzip.open(tmp_path / "dcl_step.hlo.txt.gz", "rt") as f:
        assert f.read().startswith("HloModule")


@pytest.mark.slow
def test_quick_run_under_tensorflow():
    result = run_check("tensorflow")
    check_rates(result)
    assert result["backend"] == "tensorflow" and result["tensorflow_imported"] is True
    assert result["dcl_compile_s"] == "n/a" and result["dcl_profile"] == "n/a" and result["peak_bytes"] == "n/a"
    # train_on_batch compiles at its first call: that call takes longer than a steady step.
    assert result["dcl_first_step_minus_steady_s"] > 0 and result["plain_first_step_minus_steady_s"] > 0
    assert result["donate"] == "n/a"


def test_the_steps_use_the_training_recipe(gpu_check):
    """What recipe.build_model + compile_model make of base_config(), gpu_check makes from the same library calls."""
    from dcl_keras.config import base_config
    from dcl_keras.models import dcl, recipe
    from dcl_keras.models.region_confusion import RegionConfusion

    args = gpu_check.parse_args(["--quick"])
    config = base_config()
    config.model.backbone, config.model.weights = args.backbone, "none"
    config.input.image_size, config.rcm.n = args.image_size, args.n
    config.train.mixed_precision = args.policy
    train = config.train
    assert gpu_check.RECIPE == {
        "learning_rate": train.learning_rate,
        "head_multiplier": train.head_multiplier,
        "momentum": train.momentum,
        "weight_decay": train.weight_decay,
        "decay_epochs": train.decay_epochs,
        "decay_factor": train.decay_factor,
        "total_epochs": train.epochs,
        "warmup_epochs": train.warmup_epochs,
        "k": config.rcm.k,
        "alignment_reduction": config.loss.alignment_reduction,
        "discriminator": config.model.discriminator,
    }

    ours = gpu_check.build_trainer("dcl", args)
    model = recipe.build_model(config, args.classes, compile=False)
    theirs = dcl.DeviceRCMTrainer(model, RegionConfusion(config.rcm.n, config.rcm.k, seed=0))
    recipe.compile_model(theirs, config, gpu_check.STEPS_PER_EPOCH)
    assert unnamed(ours.optimizer.get_config()) == unnamed(theirs.optimizer.get_config())
    ours_compiled, theirs_compiled = ours.get_compile_config(), theirs.get_compile_config()
    assert ours_compiled.pop("jit_compile") is True  # training's "auto" is XLA on a GPU too.
    theirs_compiled.pop("jit_compile")
    assert unnamed(ours_compiled) == unnamed(theirs_compiled)
    assert ours.dcl_model.heads == theirs.dcl_model.heads
    assert ours.dcl_model.backbone.dtype_policy.name == theirs.dcl_model.backbone.dtype_policy.name == args.policy

    # The plain step: the ablation's baseline of the same config (beta = gamma = 0, no destructed views).
    config.loss.beta = config.loss.gamma = 0.0
    config.rcm.destructed = 0
    plain = gpu_check.build_trainer("plain", args)
    baseline = recipe.build_model(config, args.classes, steps=gpu_check.STEPS_PER_EPOCH)
    assert plain.heads == baseline.heads == ("classifier",)
    plain_compiled, baseline_compiled = plain.get_compile_config(), baseline.get_compile_config()
    plain_compiled.pop("jit_compile")
    baseline_compiled.pop("jit_compile")
    assert unnamed(plain_compiled) == unnamed(baseline_compiled)


def unnamed(config):
    """A serialized Keras config with the "_1" that Keras appends to a second object of the same name removed."""
    if isinstance(config, dict):
        return {
            k: re.sub(r"_\d+$", "", v) if k == "name" and isinstance(v, str) else unnamed(v) for k, v in config.items()
        }
    if isinstance(config, list | tuple):
        return [unnamed(v) for v in config]
    return config


class FakeStep:
    def __init__(self, memory_bytes):
        self.memory_bytes = memory_bytes


def test_the_batch_search_steps_down_on_resource_exhausted(gpu_check, monkeypatch):
    built = []

    def make_step(kind, images, args, limit=None):
        built.append(images)
        if images > 100:
            raise RuntimeError(f"RESOURCE_EXHAUSTED: Out of memory while trying to allocate {images} MiB")
        return FakeStep(images * 1000)

    monkeypatch.setattr(gpu_check, "make_step", make_step)
    images, step, tries = gpu_check.largest_dcl_step(gpu_check.parse_args(["--start_batch=256"]), limit=None)
    assert built == [256, 192, 144, 104, 72] and images == 72 and step.memory_bytes == 72000
    assert [outcome for _, outcome in tries] == ["resource_exhausted"] * 4 + ["ok"]
    # A fixed --batch is measured or fails; so does the smallest batch, and any error that is not out of memory.
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        gpu_check.largest_dcl_step(gpu_check.parse_args(["--batch=128"]), limit=None)
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        gpu_check.largest_dcl_step(gpu_check.parse_args(["--start_batch=256", "--min_batch=104"]), limit=None)
    with pytest.raises(RuntimeError, match="--time_limit_s"):
        gpu_check.largest_dcl_step(gpu_check.parse_args(["--start_batch=256"]), limit=None, deadline=0.0)
    monkeypatch.setattr(gpu_check, "make_step", lambda *a: (_ for _ in ()).throw(ValueError("bad shape")))
    with pytest.raises(ValueError, match="bad shape"):
        gpu_check.largest_dcl_step(gpu_check.parse_args([]), limit=None)


def test_a_step_compiled_too_large_for_the_device_steps_down_to_what_its_size_predicts(gpu_check, monkeypatch):
    built = []

    def make_step(kind, images, args, limit=None):
        built.append((images, limit))
        if limit and images * 1000 > limit:  # As JaxStep's compiled memory_analysis would say, before running.
            raise gpu_check.TooLarge(images * 1000, limit)
        return FakeStep(images * 1000)

    monkeypatch.setattr(gpu_check, "make_step", make_step)
    images, _, tries = gpu_check.largest_dcl_step(gpu_check.parse_args(["--start_batch=96"]), limit=70_000)
    # 96 x 0.95 x 70,000 / 96,000 = 66.5 -> 64 (a multiple of 8), below 3/4 of 96.
    assert built == [(96, 70_000), (64, 70_000)] and images == 64
    assert tries == [[96, "needs 96000 of 70000 bytes"], [64, "ok"]]
    assert gpu_check.smaller(96, 8) == 72 and gpu_check.smaller(20, 8) == 8 and gpu_check.smaller(96, 8, 200, 100) == 40
    built.clear()
    gpu_check.largest_dcl_step(gpu_check.parse_args(["--batch=48"]), limit=10)  # A fixed --batch is not checked.
    assert built == [(48, None)]


HLO = """HloModule jit_train_step, is_scheduled=true

%fused_transpose (param_0: bf16[8,3,3,16]) -> bf16[3,3,8,16] {
  %param_0 = bf16[8,3,3,16]{3,2,1,0} parameter(0)
  %transpose.1 = bf16[3,3,8,16]{3,1,0,2} transpose(%param_0), dimensions={1,2,0,3}
  ROOT %copy.1 = bf16[3,3,8,16]{3,2,1,0} copy(%transpose.1)
}

%fused_add (p0: f32[4], p1: f32[4]) -> f32[4] {
  %p0 = f32[4]{0} parameter(0)
  %p1 = f32[4]{0} parameter(1)
  ROOT %add.3 = f32[4]{0} add(%p0, %p1)
}

%fused_reduce (p0: f32[4,32]) -> f32[4] {
  %p0 = f32[4,32]{1,0} parameter(0)
  %zero = f32[] constant(0)
  ROOT %reduce.2 = f32[4]{0} reduce(%p0, %zero), dimensions={1}, to_apply=%add
}

ENTRY %main (a: bf16[8,3,3,16], x: bf16[4,32,32,8], b: f32[4]) -> f32[4] {
  %a = bf16[8,3,3,16]{3,2,1,0} parameter(0)
  %x = bf16[4,32,32,8]{3,2,1,0} parameter(1)
  %b = f32[4]{0} parameter(2)
  %cudnn-conv.2 = (bf16[4,32,32,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %a), custom_call_target="__cudnn$convForward", metadata={op_name="jit(train_step)/backbone/conv1/conv_general_dilated"}
  %fusion.7 = bf16[3,3,8,16]{3,2,1,0} fusion(%a), kind=kLoop, calls=%fused_transpose
  %loop_add_fusion = f32[4]{0} fusion(%b, %b), kind=kLoop, calls=%fused_add
  %input_reduce_fusion = f32[4]{0} fusion(%b), kind=kInput, calls=%fused_reduce
  %wrapped_convert.9 = f32[4]{0} convert(%b)
  %cublas-gemm.1 = (f32[4,4]{1,0}, s8[0]{0}) custom-call(%b, %b), custom_call_target="__cublas$gemm"
  ROOT %add.9 = f32[4]{0} add(%b, %b)
}
"""


def test_xla_ops_are_named_by_what_they_do(gpu_check):
    instructions, opcodes = gpu_check.parse_hlo(HLO)
    assert instructions["cudnn-conv.2"] == (
        "custom-call",
        "__cudnn$convForward",
        "",
        "jit(train_step)/backbone/conv1/conv_general_dilated",
    )
    assert instructions["fusion.7"][:3] == ("fusion", "", "fused_transpose")
    assert opcodes["fused_transpose"] == {"parameter", "transpose", "copy"}
    categories = {name: gpu_check.categorise(name, instructions, opcodes) for name in instructions}
    assert categories["cudnn-conv.2"] == "convolution"
    assert categories["cublas-gemm.1"] == "matmul"
    assert categories["fusion.7"] == categories["transpose.1"] == "layout"
    assert categories["input_reduce_fusion"] == "reduction"
    assert categories["wrapped_convert.9"] == categories["loop_add_fusion"] == "elementwise"  # "convert" is no conv.
    assert gpu_check.categorise("transpose_copy_fusion.3", {}, {}) == "layout"  # Named in a trace, not in the HLO.
    counts = gpu_check.hlo_op_counts(instructions)
    assert counts["custom_call_targets"] == {"__cudnn$convForward": 1, "__cublas$gemm": 1}
    assert "parameter" not in counts["ops"] and counts["ops"]["fusion"] == 3


def test_the_verdict_reads_the_busy_fraction_first(gpu_check):
    assert gpu_check._union([(0, 10), (5, 15), (20, 30), (22, 25)]) == 25
    assert gpu_check.verdict(0.6, {"convolution": 0.9}).startswith("host (device idle 40%")
    assert gpu_check.verdict(0.95, {"convolution": 0.7, "layout": 0.3}).startswith("convolutions (70%")
    assert gpu_check.verdict(0.95, {"convolution": 0.4, "layout": 0.3, "elementwise": 0.3}).startswith("layout (30%")
    assert gpu_check.verdict(0.95, {"convolution": 0.3, "layout": 0.1, "elementwise": 0.6}).startswith("elementwise")


def test_images_per_step_must_be_even(gpu_check, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--batch=7"])
    assert "must be even. Received:" in capsys.readouterr().err
