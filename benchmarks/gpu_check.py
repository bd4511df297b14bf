"""The paper-size training step on one accelerator: DCL against a plain classifier, in one short run (issue 37).

    KERAS_BACKEND=jax python benchmarks/gpu_check.py --out_dir=/tmp/gpu_check   # GPU: ResNet-50, 448 px, bf16
    KERAS_BACKEND=jax python benchmarks/gpu_check.py --quick                     # CPU smoke run, well under a minute

Two training steps with the same backbone and the paper's compile recipe
(`dcl_keras.models.recipe.compile_model` with `dcl_keras.config.base_config()`'s
values, rebuilt here from the same library calls; the dtype policy is
`recipe.dtype_policy`, and nothing imported here needs TensorFlow, which the
GPU machine does not have):

* DCL: `DeviceRCMTrainer` around the three-head `DCLModel`, RCM on the device
  (`RegionConfusion`, N = 7, k = 2), E examples in, 2E views through the
  backbone;
* plain: the same backbone with the classification head only (the ablation's
  baseline: no RCM, no discriminator, no alignment head), B images in.

Both are counted in backbone images per step (DCL: 2 x examples), and run at
the same images per step: the largest that fits for DCL (searched downward
from --start_batch on RESOURCE_EXHAUSTED, or --batch). `ratio` is plain
images/s over DCL images/s, the cost of one backbone image in a DCL step
relative to a plain one (goal <= 1.03).

Under JAX each step is the trainer's own `train_step`, jitted with the state
donated as Keras's fit does (--no_donate to compare), lowered and compiled
ahead of time (compile seconds measured apart), then run on device-resident
synthetic input. It reports the compiled memory, the peak device memory, the
step's FLOPs (unoptimised HLO) and achieved TFLOP/s, the optimised HLO's op
counts, the host's dispatch time per step, and a jax.profiler trace of a few
steps summarised into top XLA ops and a verdict (convolutions, layout,
elementwise, or host-bound). Under TensorFlow the steps are timed through
`train_on_batch` (compile time = first step minus a steady one; memory,
HLO and profile are "n/a"). The last line printed is one JSON object.
"""

import argparse
import collections
import gc
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

import keras
import numpy as np

from dcl_keras import contract, losses, optim
from dcl_keras.models import backbones, dcl, recipe
from dcl_keras.models.region_confusion import RegionConfusion

import common

# dcl_keras.config.base_config()'s train and rcm values; tests/test_gpu_check.py checks them against it.
RECIPE = {
    "learning_rate": 0.0008,
    "head_multiplier": 10.0,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "decay_epochs": 60,
    "decay_factor": 0.1,
    "total_epochs": 180,
    "warmup_epochs": 0.0,
    "k": 2,
    "alignment_reduction": "mean",
    "discriminator": "2way",
}
STEPS_PER_EPOCH = 375  # CUB-200's 5,994 training images at 16 examples a step: where the schedule's steps fall.
QUICK = {"backbone": "tiny", "image_size": 32, "n": 4, "classes": 4, "batch": 8, "steps": 3, "rounds": 2}
OOM_SIGNS = ("resource_exhausted", "resourceexhausted", "out of memory", "oom when allocating")
RATIO_DEFINITION = "plain images/s / DCL images/s, images = backbone images per step (DCL: 2 views x examples)"


def build_trainer(kind, args):
    """The compiled trainer of one step kind, "dcl" or "plain", as recipe.build_model + compile_model make it."""
    with recipe.dtype_policy(args.policy):
        backbone = backbones.build_backbone(args.backbone, args.image_size, "none")
        if kind == "dcl":
            model = dcl.DCLModel(backbone, args.classes, args.n, discriminator=RECIPE["discriminator"])
        else:
            model = dcl.DCLModel(backbone, args.classes, args.n, discriminator="none", alignment=False)
    trainer = model
    if kind == "dcl":
        trainer = dcl.DeviceRCMTrainer(model, RegionConfusion(args.n, RECIPE["k"], seed=0))
    optimizer = optim.make_optimizer(
        RECIPE["learning_rate"],
        STEPS_PER_EPOCH,
        head_multiplier=RECIPE["head_multiplier"],
        momentum=RECIPE["momentum"],
        weight_decay=RECIPE["weight_decay"],
        decay_epochs=RECIPE["decay_epochs"],
        decay_factor=RECIPE["decay_factor"],
        total_epochs=RECIPE["total_epochs"],
        head_layers=contract.HEAD_LAYERS,
        warmup_epochs=RECIPE["warmup_epochs"],
    )
    heads = model.heads
    trainer.compile(
        optimizer=optimizer,
        loss={k: v for k, v in losses.dcl_losses(RECIPE["alignment_reduction"]).items() if k in heads},
        loss_weights={k: v for k, v in losses.loss_weights().items() if k in heads},
        weighted_metrics={k: v for k, v in losses.dcl_metrics(args.classes).items() if k in heads},
        jit_compile=True,
    )
    return trainer


def synthetic_batch(kind, images, args):
    """(x, y) of one step with `images` backbone images: what the device-RCM stream or a plain stream delivers."""
    rng = np.random.default_rng(0)
    count = images // 2 if kind == "dcl" else images
    pixels = rng.uniform(0, 255, (count, args.image_size, args.image_size, 3)).astype("float32")
    labels = rng.integers(0, args.classes, count).astype("int32")
    if kind == "dcl":
        keys = rng.integers(0, 2**32, count, dtype=np.uint64).astype("uint32")
        return {dcl.DEVICE_IMAGES: pixels, dcl.DEVICE_KEYS: keys}, labels
    return pixels, {contract.CLASSIFIER: labels}


class JaxStep:
    """One trainer's train_step, jitted, lowered and compiled ahead of time, on device-resident input."""

    def __init__(self, trainer, x, y, donate):
        import jax

        self.jax = jax
        trainer._symbolic_build(data_batch=(x, y))  # What fit/train_on_batch do first: variables, metrics, optimizer.
        self.state = (
            [v.value for v in trainer.trainable_variables],
            [v.value for v in trainer.non_trainable_variables],
            [v.value for v in trainer.optimizer.variables],
            [v.value for v in trainer.metrics_variables],
        )
        self.state_bytes = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(self.state))
        self.data = jax.device_put((x, y))
        jitted = jax.jit(trainer.train_step, donate_argnums=0 if donate else ())
        with common.Timer() as lower:
            lowered = jitted.lower(self.state, self.data)
        with common.Timer() as compile_:
            self.compiled = lowered.compile()
        self.figures = {"lower_s": lower.seconds, "compile_s": compile_.seconds}
        self.flops = _cost(lowered.cost_analysis(), "flops")  # Unoptimised HLO: convolutions still counted.
        self.bytes_accessed = _cost(self.compiled.cost_analysis(), "bytes accessed")
        memory = self.compiled.memory_analysis()
        self.memory_bytes = None
        if memory is not None:
            self.memory_bytes = (
                memory.argument_size_in_bytes
                + memory.output_size_in_bytes
                - memory.alias_size_in_bytes
                + memory.temp_size_in_bytes
            )
        self.hlo_text = self.compiled.as_text()

    def __call__(self):
        _, self.state = self.compiled(self.state, self.data)

    def block(self):
        self.jax.block_until_ready(self.state)


class KerasStep:
    """One trainer's `train_on_batch` (synchronous: it returns the logs as numbers); compiled at its first call."""

    flops = bytes_accessed = memory_bytes = state_bytes = hlo_text = None

    def __init__(self, trainer, x, y):
        self.trainer, self.x, self.y = trainer, x, y
        self.figures = {}

    def __call__(self):
        self.trainer.train_on_batch(self.x, self.y)

    def block(self):
        pass


def _cost(analysis, key):
    if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per computation.
        analysis = analysis[0] if analysis else None
    value = (analysis or {}).get(key)
    return float(value) if value is not None else None


def is_oom(error):
    text = f"{type(error).__name__} {error}".lower()
    return any(sign in text for sign in OOM_SIGNS)


class TooLarge(Exception):
    """A step compiled to need more device memory than the allocator holds (found before it runs)."""

    def __init__(self, needs, limit):
        super().__init__(f"needs {needs} of {limit} bytes")
        self.needs, self.limit = needs, limit


def make_step(kind, images, args, limit=None):
    """A compiled step of `kind` at `images` per step that has run once (its first-step seconds in .figures).

    Raises TooLarge, without running it, when its compiled memory and room
    for a second state of its size (the plain step's, timed beside it)
    exceed `limit` bytes.
    """
    trainer = build_trainer(kind, args)
    x, y = synthetic_batch(kind, images, args)
    step = JaxStep(trainer, x, y, not args.no_donate) if keras.backend.backend() == "jax" else KerasStep(trainer, x, y)
    if limit and step.memory_bytes and step.memory_bytes + step.state_bytes > limit:
        raise TooLarge(step.memory_bytes + step.state_bytes, limit)
    with common.Timer() as first:
        step()
        step.block()
    step.figures["first_step_s"] = first.seconds
    return step


def release():
    keras.backend.clear_session()
    gc.collect()


def largest_dcl_step(args, limit, deadline=None):
    """(images per step, DCL step, tries): the largest batch that fits, searched downward from --start_batch.

    A try that runs out of memory (RESOURCE_EXHAUSTED), or compiles to need
    more than `limit` bytes, is followed by a smaller one (`smaller`); a
    fixed --batch is measured or fails. No new try starts after `deadline`
    (a time.perf_counter() value).
    """
    images = args.batch or args.start_batch
    tries = []
    while True:
        needs = None
        try:
            step = make_step("dcl", images, args, None if args.batch else limit)
            tries.append([images, "ok"])
            return images, step, tries
        except TooLarge as e:
            tries.append([images, str(e)])
            needs = e.needs
        except Exception as e:
            if not is_oom(e) or args.batch or images <= args.min_batch:
                raise
            tries.append([images, "resource_exhausted"])
        print(f"DCL step at {images} images: {tries[-1][1]}", flush=True)
        release()  # Out of the except block, so its traceback no longer holds the failed try's buffers.
        if images <= args.min_batch:
            raise RuntimeError(f"no batch of at least --min_batch={args.min_batch} images fits. Received: {tries}")
        if deadline is not None and time.perf_counter() > deadline:
            raise RuntimeError(f"--time_limit_s reached during the batch search. Received: tries={tries}")
        images = smaller(images, args.min_batch, needs, limit)


def smaller(images, minimum, needs=None, limit=None):
    """The next try: 3/4 of `images`, or less where a compiled size says so; a multiple of 8, at least `minimum`.

    With `needs` bytes compiled for `images` and `limit` bytes available, the
    estimate scales all of `needs` with the batch (the state too), which
    undershoots the largest fit a little and rarely overshoots it.
    """
    candidate = images * 3 // 4
    if needs and limit:
        candidate = min(candidate, int(images * 0.95 * limit / needs))
    return max(minimum, candidate // 8 * 8)


def timed_rounds(steps, per_round, rounds):
    """{name: {"step_s": median seconds per step, "dispatch_s": host seconds per call}}; sides alternate."""
    times = {name: [] for name in steps}
    dispatch = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            step = steps[name]
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            issued = time.perf_counter()
            step.block()
            end = time.perf_counter()
            times[name].append((end - start) / per_round)
            dispatch[name].append((issued - start) / per_round)
    return {
        name: {"step_s": statistics.median(times[name]), "dispatch_s": statistics.median(dispatch[name])}
        for name in names
    }


HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][a-z0-9\-]*)\((.*)$")
HLO_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def parse_hlo(text):
    """{instruction name: (opcode, custom-call target, called computation, source op name)} and each computation's opcodes."""
    instructions, opcodes, current = {}, collections.defaultdict(set), None
    for line in text.splitlines():
        match = HLO_INSTRUCTION.match(line)
        if match:
            name, opcode, rest = match.groups()
            target = re.search(r'custom_call_target="([^"]+)"', rest)
            calls = re.search(r"calls=%?([\w.\-]+)", rest)
            source = re.search(r'op_name="([^"]+)"', rest)
            instructions[name] = (
                opcode,
                target.group(1) if target else "",
                calls.group(1) if calls else "",
                source.group(1) if source else "",
            )
            if current:
                opcodes[current].add(opcode)
            continue
        header = HLO_COMPUTATION.match(line)
        if header and " = " not in line:
            current = header.group(1)
    return instructions, opcodes


def hlo_op_counts(instructions):
    """Opcodes of the optimised module (bookkeeping ops left out) and custom-call targets, most frequent first."""
    skip = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}
    ops = collections.Counter(op for op, *_ in instructions.values() if op not in skip)
    targets = collections.Counter(target for _, target, _, _ in instructions.values() if target)
    return {"ops": dict(ops.most_common(12)), "custom_call_targets": dict(targets.most_common(8))}


LAYOUT_OPS = {"transpose", "copy", "copy-start", "copy-done", "bitcast", "reshape", "parameter", "convert"}


def categorise(name, instructions, opcodes):
    """convolution, matmul, layout, reduction or elementwise: what an XLA op (or the fusion it names) does."""
    opcode, target, calls, _ = instructions.get(name, ("", "", "", ""))
    called = opcodes.get(calls, set())
    words = " ".join([name, opcode, target, *called]).lower()
    if re.search(r"conv(?!ert)", words):  # convolution, cudnn-conv-bw-filter, __cudnn$convForward; not convert.
        return "convolution"
    if any(w in words for w in ("dot", "gemm", "matmul", "cublas")):
        return "matmul"
    if opcode in ("transpose", "copy", "copy-start", "copy-done") or (
        called and called <= LAYOUT_OPS and called & {"transpose", "copy"}
    ):
        return "layout"
    if "transpose" in name or name.startswith("copy"):
        return "layout"
    if "reduce" in words:
        return "reduction"
    return "elementwise"


def profile_step(step, steps, folder):
    """Traces `steps` steps with jax.profiler into `folder`; returns the .xplane.pb written."""
    import jax

    with jax.profiler.trace(folder):
        for _ in range(steps):
            step()
        step.block()
    paths = sorted(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise RuntimeError(f"jax.profiler wrote no .xplane.pb under {folder}")
    return paths[-1]


def summarise_profile(path, steps, step_s, hlo_text, top=12):
    """Top XLA ops by device time per step, time per category, the busy fraction and a verdict."""
    import jax

    instructions, opcodes = parse_hlo(hlo_text)
    data = jax.profiler.ProfileData.from_file(path)
    planes = [p for p in data.planes if p.name.startswith("/device:")]
    planes = planes or [p for p in data.planes if p.name == "/host:CPU"]
    per_op, intervals, lines_seen = collections.Counter(), [], []
    for plane in planes:
        lines = list(plane.lines)
        lines_seen += [f"{plane.name}:{line.name}" for line in lines]
        op_lines = [line for line in lines if line.name == "XLA Ops"] or lines
        for line in op_lines:
            for event in line.events:
                stats = dict(event.stats)
                op = stats.get("hlo_op") or (event.name if line.name == "XLA Ops" else None)
                if not op:
                    continue
                per_op[str(op).lstrip("%")] += event.duration_ns
                intervals.append((event.start_ns, event.end_ns))
    if not per_op:
        return {"error": "no XLA op events in the trace", "lines": lines_seen[:20]}
    categories = collections.Counter()
    for op, ns in per_op.items():
        categories[categorise(op, instructions, opcodes)] += ns
    busy_ns = _union(intervals)
    total = sum(per_op.values())
    shares = {name: ns / total for name, ns in categories.items()}
    busy_fraction = busy_ns / steps / (step_s * 1e9)
    return {
        "top_ops": [
            [op, categorise(op, instructions, opcodes), round(ns / steps / 1e6, 3), instructions.get(op, ("",) * 4)[3]]
            for op, ns in per_op.most_common(top)
        ],
        "category_ms_per_step": {name: round(ns / steps / 1e6, 3) for name, ns in categories.most_common()},
        "op_ms_per_step": round(total / steps / 1e6, 3),
        "busy_ms_per_step": round(busy_ns / steps / 1e6, 3),
        "busy_fraction": round(busy_fraction, 3),
        "bound": verdict(busy_fraction, shares),
    }


def _union(intervals):
    busy, end = 0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            busy += stop - start
            end = stop
        elif stop > end:
            busy += stop - end
            end = stop
    return busy


def verdict(busy_fraction, shares):
    """Where the step's time goes: the device idle for a fifth of it means host-bound; else its largest share."""
    if busy_fraction < 0.8:
        return f"host (device idle {1 - busy_fraction:.0%} of the step: dispatch, transfers or launch gaps)"
    if shares.get("convolution", 0) >= 0.5:
        return f"convolutions ({shares['convolution']:.0%} of op time)"
    if shares.get("layout", 0) >= 0.2:
        return f"layout ({shares['layout']:.0%} of op time in transposes and copies)"
    name = max(shares, key=shares.get)
    return f"{name} ({shares[name]:.0%} of op time; convolutions {shares.get('convolution', 0):.0%})"


def device_description():
    """(device name, peak-memory reader, memory limit in bytes or None) of the backend's first device."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        stats = device.memory_stats() or {}
        name = f"{device.platform}: {device.device_kind} x{jax.device_count()}"

        def peak():
            return (device.memory_stats() or {}).get("peak_bytes_in_use", "n/a")

        return name, peak, stats.get("bytes_limit")
    import tensorflow as tf  # The TensorFlow backend is loaded already.

    kinds = [d.device_type for d in tf.config.list_logical_devices()]
    return f"tensorflow: {', '.join(kinds)}", lambda: "n/a", None


def save_json(out_dir, results):
    """gpu_check.json in `out_dir`, rewritten after each stage, so a run stopped by a timeout still leaves its figures."""
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
            json.dump(results, f, indent=1)


def save_artifacts(out_dir, steps, traces):
    """Each step's optimised HLO and profile trace, gzipped, flat in `out_dir` (what a device run's $OUT returns)."""
    os.makedirs(out_dir, exist_ok=True)
    for name, step in steps.items():
        if step.hlo_text:
            with gzip.open(os.path.join(out_dir, f"{name}_step.hlo.txt.gz"), "wt") as f:
                f.write(step.hlo_text)
    for name, path in traces.items():
        with open(path, "rb") as src, gzip.open(os.path.join(out_dir, f"{name}_step.xplane.pb.gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"CPU smoke run: {QUICK} unless given")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=448)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--n", type=int, default=7)
    parser.add_argument("--policy", default="mixed_bfloat16", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--batch", type=int, default=0, help="images per step (even); 0: search from --start_batch")
    parser.add_argument("--start_batch", type=int, default=256, help="first images per step of the downward search")
    parser.add_argument("--min_batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, DCL and plain alternating")
    parser.add_argument("--profile_steps", type=int, default=3, help="steps traced per step kind (JAX); 0: none")
    parser.add_argument("--no_donate", action="store_true", help="keep the state's buffers (Keras donates them)")
    parser.add_argument("--time_limit_s", type=float, default=0, help="no new batch try or profile after this; 0: none")
    parser.add_argument("--out_dir", default="", help="also write the JSON, HLO and traces (gzipped) here")
    quick, _ = parser.parse_known_args(argv)
    if quick.quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.batch % 2 or args.start_batch % 2:
        parser.error(f"a DCL step takes 2 views per example: images per step must be even. Received: {args}")
    return args


def describe(args, device):
    """The run's setting: what every figure below was measured on."""
    backend = keras.backend.backend()
    return {
        "check": "gpu_check",
        "quick": args.quick,
        "backend": backend,
        "device": device,
        "host": common.machine(),
        "jax_version": sys.modules["jax"].__version__ if "jax" in sys.modules else "n/a",
        "keras_version": keras.__version__,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "policy": args.policy,
        "classes": args.classes,
        "n": args.n,
        "donate": not args.no_donate if backend == "jax" else "n/a",
        "ratio_definition": RATIO_DEFINITION,
        "goal_ratio": 1.03,
    }


def step_figures(name, step, images, timing):
    """One step kind's figures: rate, times, compile, memory, FLOPs and HLO op counts."""
    seconds = timing["step_s"]
    flops, moved = step.flops, step.bytes_accessed
    return {
        f"{name}_images_per_s": images / seconds,
        f"{name}_step_ms": seconds * 1e3,
        f"{name}_dispatch_ms": timing["dispatch_s"] * 1e3,
        f"{name}_first_step_minus_steady_s": step.figures["first_step_s"] - seconds,
        f"{name}_lower_s": step.figures.get("lower_s", "n/a"),
        f"{name}_compile_s": step.figures.get("compile_s", "n/a"),
        f"{name}_compiled_memory_bytes": step.memory_bytes or "n/a",
        f"{name}_state_bytes": step.state_bytes or "n/a",
        f"{name}_flops_per_step": flops or "n/a",
        f"{name}_achieved_tflops": flops / seconds / 1e12 if flops else "n/a",
        f"{name}_flops_per_byte": flops / moved if flops and moved else "n/a",
        f"{name}_hlo": hlo_op_counts(parse_hlo(step.hlo_text)[0]) if step.hlo_text else "n/a",
    }


def step_profile(name, step, args, step_s, traces, deadline):
    """The profile summary of one step kind (its trace path recorded in `traces`), or why there is none."""
    if not isinstance(step, JaxStep) or not args.profile_steps:
        return "n/a"
    if deadline is not None and time.perf_counter() > deadline:
        return {"error": "skipped: --time_limit_s reached"}
    try:
        traces[name] = profile_step(step, args.profile_steps, tempfile.mkdtemp(prefix=f"{name}_trace_"))
        return {**summarise_profile(traces[name], args.profile_steps, step_s, step.hlo_text), "trace": traces[name]}
    except Exception as e:  # The profiler is optional: the figures above stand without it.
        return {"error": f"{type(e).__name__}: {e}"[:500]}


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    deadline = started + args.time_limit_s if args.time_limit_s else None
    # Setup: the device, its memory limit, the run's description.
    device, peak_bytes, limit = device_description()
    results = describe(args, device)
    print(f"{device}; host {results['host']}; keras {keras.__version__}, jax {results['jax_version']}", flush=True)
    steps, traces = {}, {}
    try:
        # Steps: DCL at the largest batch that fits, then plain at the same images per step.
        images, steps["dcl"], results["batch_tries"] = largest_dcl_step(args, limit, deadline)
        results["dcl_peak_bytes"] = peak_bytes()
        steps["plain"] = make_step("plain", images, args)
        results.update(peak_bytes=peak_bytes(), bytes_limit=limit or "n/a")
        results.update(images_per_step=images, dcl_examples_per_step=images // 2)
        save_json(args.out_dir, results)
        # Timing: alternating rounds, then the ratio.
        print(f"{images} images per step ({images // 2} DCL examples); timing", flush=True)
        timing = timed_rounds(steps, args.steps, args.rounds)
        for name, step in steps.items():
            results.update(step_figures(name, step, images, timing[name]))
        results["dcl_examples_per_s"] = results["dcl_images_per_s"] / 2
        results["ratio"] = results["plain_images_per_s"] / results["dcl_images_per_s"]
        print(
            f"DCL {results['dcl_images_per_s']:.1f} images/s, plain {results['plain_images_per_s']:.1f} images/s, "
            f"ratio {results['ratio']:.3f}",
            flush=True,
        )
        save_json(args.out_dir, results)
        # Profile: where each step's device time goes.
        for name, step in steps.items():
            results[f"{name}_profile"] = step_profile(name, step, args, timing[name]["step_s"], traces, deadline)
    except Exception as e:
        results["error"] = f"{type(e).__name__}: {e}"[:2000]
    results["seconds"] = time.perf_counter() - started
    results["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    if args.out_dir:
        save_artifacts(args.out_dir, steps, traces)
        save_json(args.out_dir, results)
    print(json.dumps(results))
    return 1 if "error" in results else 0


if __name__ == "__main__":
    sys.exit(main())
