"""GPU benchmark on one NVIDIA GPU (the H100): references and kpt levels of each model, measured
interleaved in one process with device events and rotating inputs (kpt.gpu.bench).

    python3 bench/h100.py run --models bert-base,gpt2 --budget-s 500 --out $OUT/h100-a.json
    python3 bench/h100.py merge OUT/h100-*.json --docs docs/benchmarks      # writes h100.json + h100.md

The rows' arithmetic, the verdict and the report live in bench/h100_report.py (no torch needed).

Models and shapes: bert-base (batch 8, seq 384), gpt2 (8 x 512), resnet50 (32 images), vit-b16 (32 images),
llama-1b-prefill (one 2048-token prompt), llama-1b-decode (one token at batch 1 against a 2048-token
KV cache). Variants: eager_fp32, eager_bf16, compile_default, compile_max_autotune (torch.compile of the
fp32 model, as the contract defines them on every target), compile_max_autotune_bf16 (the strongest hand-made
rival: torch.compile max-autotune, CUDA graphs included, of the model cast to bf16 as eager_bf16 casts it),
kpt_O1, kpt_O2, kpt_O3 (the nvidia service's
levels, artifacts loaded back through the GPU loader). Every variant is checked against eager fp32 on
fresh inputs; a kpt level outside its tolerance is reported and never counted as "ours".

    python3 bench/h100.py warm --model bert-base --variants kpt_O1   # only fills the compile caches

Compiles are the expensive part, so each model gets a share of --budget-s and variants are built in
order of what the goals need (eager, kpt_O2, kpt_O3, compile_max_autotune_bf16, compile_default, kpt_O1,
compile_max_autotune);
one that no longer fits is reported with the reason, not measured, and the verdict says what it could not
compare against. The JSON is rewritten after every
model, so a phase cut short keeps what it measured. Needs CUDA: without it, it stops at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # h100_report beside this file (bench/ is no package)
from h100_report import NOMINAL, loop_row, merge, row_of, verdict  # noqa: E402

log = logging.getLogger("bench.h100")
DEVICE = "cuda:0"  # kpt.gpu.device.DEVICE (not imported here: this module loads without torch for `merge`)

MODELS = {  # name -> (model name for kpt.gpu.models.open_source, benchmark shapes or None for the default)
    "bert-base": ("bert-base", {"input_ids": (8, 384), "attention_mask": (8, 384)}),
    "gpt2": ("gpt2", {"input_ids": (8, 512)}),
    "resnet50": ("resnet50", {"pixel_values": (32, 3, 224, 224)}),
    "vit-b16": ("vit-b16", {"pixel_values": (32, 3, 224, 224)}),
    "llama-1b-prefill": ("llama-1b", {"input_ids": (1, 2048)}),
    "llama-1b-decode": ("llama-1b-decode", None),
}
# Build order: what the goals need first. The fp32 torch.compile variants come after ours: where one is cut by
# the budget, the verdict bounds it by the model's FLOPs at the measured fp32 GEMM rate instead.
ORDER = ("eager_fp32", "eager_bf16", "kpt_O2", "kpt_O3", "compile_max_autotune_bf16", "compile_default", "kpt_O1",
         "compile_max_autotune")
# Precisions the benchmark's O3 may use: fp8 where compute-bound; int4 is left out (int8 weight-only for
# decode) because its accuracy on random-initialised weights is below the 20 dB guard.
ALLOWED = frozenset({"fp32", "bf16", "fp16", "int8", "fp8"})
# Experiments: a level built with one option changed, measured beside the others when the run asks for them
# (--experiments) and reported under the table, never counted as ours nor as a rival. name -> (level, the
# GpuInductorAOT fields levels() takes, the precisions the job allows). kpt_O2_tma: max-autotune also times
# Inductor's persistent TMA templates; kpt_O2_unfused_bias: a bf16 linear's bias may join its elementwise users,
# leaving a plain GEMM to tune; kpt_O3_bf16: O3 for a job that allows no quantization (its kernels from kernels/
# on bf16 weights: the decode step's weight bytes per token against time, the bandwidth goal's measure);
# kpt_O3_bf16_realize8: that with Inductor writing pointwise results of more than 8 ops once (SiLU*mul, a norm's
# output) instead of recomputing them in the matrix-vector reductions that read them (compile.inductor_options);
# kpt_O3_realize8: the same with quantization allowed (the int8 decode step's down projection, SiLU*mul inlined
# into its loads, read 11.5 MB in 18.7 us a layer on the H200: 0.62 TB/s).
UNQUANTIZED = frozenset({"fp32", "bf16", "fp16"})
EXPERIMENTS = {"kpt_O2_tma": ("LEVEL_O2", {"persistent_tma": True}, ALLOWED),
               "kpt_O2_unfused_bias": ("LEVEL_O2", {"unfused_bias": True}, ALLOWED),
               "kpt_O3_bf16": ("LEVEL_O3", {}, UNQUANTIZED),
               "kpt_O3_bf16_realize8": ("LEVEL_O3", {"realize_opcount": 8}, UNQUANTIZED),
               "kpt_O3_realize8": ("LEVEL_O3", {"realize_opcount": 8}, ALLOWED)}
BUILDABLE = ORDER + tuple(EXPERIMENTS)  # what `warm --variants` takes
# Build cost of each variant relative to kpt_O2's (the first compile, measured): an estimate used only to
# decide whether the next build still fits the model's share of the budget.
RELATIVE_COST = {"compile_default": 0.5, "kpt_O3": 1.1, "kpt_O1": 0.7, "compile_max_autotune": 1.5,
                 "compile_max_autotune_bf16": 1.5, **{name: 1.0 for name in EXPERIMENTS}}
# Accuracy bounds of a model's low-precision variants where bf16's defaults (rel_l2 <= 3e-2, calibrated on BERT,
# MiniLM and a CNN) do not fit the model: the looser of these and the defaults judges every bf16/fp16 variant of
# it, hand-made and ours alike; fp32 variants keep fp32's bounds. The reason is printed under the model's table.
LOW_PRECISION_BOUNDS = {
    key: ({"max_rel_l2": 0.05, "min_cosine": 0.998},
          "22-layer Llama with random weights: its plain bf16 cast (rotary frequencies kept in fp32) measures rel_l2 "
          "3.3e-2 at 2048 tokens on the CPU, just over bf16's default 3e-2; the bound here is rel_l2 <= 5e-2 "
          "(SQNR >= 26 dB), cosine >= 0.998")
    for key in ("llama-1b-prefill", "llama-1b-decode")}
# GEMM autotuning allowance of O2/O3 per model. Fixed (not a share of the phase's budget) so that a `warm` run
# and the measuring `run` make the same decision and the second finds the first's package in the cache. On the
# H100 the O2 builds with tuning took 172 s (BERT-base) and 188 s (GPT-2), 30 s of tuning estimated.
AUTOTUNE_BUDGET_S = 120.0


def _gemm_tflops(dtype, n: int = 8192) -> float:
    import torch

    from kpt.gpu import bench as gpu_bench

    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    ms = gpu_bench.time_once(lambda: torch.mm(a, b), reps=10, warmup=3)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def _copy_tbs(nbytes: int = 1 << 30) -> float:
    import torch

    from kpt.gpu import bench as gpu_bench

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = gpu_bench.time_once(lambda: dst.copy_(src), reps=20, warmup=3)
    return 2 * nbytes / (ms * 1e-3) / 1e12  # read + write


def probe_roofline() -> dict:
    """Measured peaks of this GPU: dense bf16 and fp32 (IEEE) GEMM throughput and device-to-device copy."""
    import torch

    out = {"bf16_tflops": _gemm_tflops(torch.bfloat16), "fp32_tflops": _gemm_tflops(torch.float32),
           "copy_tbs": _copy_tbs()}
    torch.cuda.empty_cache()
    return out


class Llama:
    """The 1B Llama built once per process: prefill and decode run the same weights."""

    module = None

    @classmethod
    def get(cls):
        from kpt.optimize import zoo

        if cls.module is None:
            cls.module, _ = zoo.build("llama-1b", DEVICE)
        return cls.module


def open_model(key: str):
    from kpt.gpu import models
    from kpt.optimize import inputs as inp
    from kpt.optimize.source import Source

    name, sizes = MODELS[key]
    if name == "llama-1b":
        lm = Llama.get()
        ids = inp.TensorSpec("input_ids", "int64", tuple(inp.Dim(s) for s in sizes["input_ids"]), 0,
                             lm.model.config.vocab_size)
        return Source(key, "zoo:llama-1b", "MODEL_FORMAT_ZOO", inp.InputSpec((ids,)), module=lm)
    if name == "llama-1b-decode":
        lm = Llama.get()
        step = models.LlamaDecodeStep(lm.model).eval()
        return Source(key, "zoo:llama-1b-decode", "MODEL_FORMAT_ZOO", models.decode_spec(lm.model.config), module=step)
    src = models.open_source("MODEL_FORMAT_ZOO", name, "", None, None, DEVICE)
    if sizes:
        src.spec = models.with_shape(src.spec, sizes)
    return src


PROFILED = ("kpt_O1", "kpt_O2", "kpt_O3", "compile_max_autotune_bf16")  # ours and the strongest rival


LOOP_STEPS = 32  # a generation loop's steps timed as one span (decode_loop)


def decode_loop(variants: list, x: tuple, step_bytes: dict, probe: dict) -> dict:
    """Each variant's ms per token (built, within the accuracy guard) in a greedy generation loop of LOOP_STEPS
    steps enqueued back to back, the host waiting only at the loop's end (kpt.gpu.bench.per_step_ms, the loops
    interleaved), with the weight bandwidth that makes: time per token as a generation loop sees it, where the
    table's p50 (each call alone on an idle GPU) also counts the host launching every step. A failure is recorded,
    not raised."""
    import torch

    from kpt.errors import cause
    from kpt.gpu import bench as gpu_bench
    from kpt.gpu import models

    # Every step inside the cache; the caches are x's own (a package bound a graph to them when it was profiled),
    # written in place by every loop.
    start = (x[0], x[1].clamp(max=x[2].shape[3] - LOOP_STEPS - 1), x[2], x[3])
    fns, errors = {}, {}
    for v in variants:
        if v.fn is None:
            continue
        try:  # one loop alone first (its warmup): a variant that cannot run in a loop is left out, not the others
            with torch.inference_mode():
                gpu_bench.generation_loop(v.fn, start, models.next_step, LOOP_STEPS)()
            fns[v.name] = v.fn
        except RuntimeError as e:
            errors[v.name] = cause(e, 200)
    out = {"steps": LOOP_STEPS} | ({"errors": errors} if errors else {})
    try:
        ms = gpu_bench.per_step_ms(fns, start, models.next_step, LOOP_STEPS, warmup=0) if fns else {}
    except RuntimeError as e:
        return out | {"error": cause(e, 200)}
    precision = {v.name: v.precision for v in variants}
    return out | {"variants": {n: loop_row(t, step_bytes.get(precision[n]), probe) for n, t in ms.items()}}


def profiles(variants: list, x: tuple) -> dict:
    """Each PROFILED variant's device time per call by kernel (kpt.gpu.bench.profile_kernels), after the timing:
    what a level's time is made of (a decode step's launches per token, say). A failure is recorded, not raised."""
    from kpt.errors import cause
    from kpt.gpu import bench as gpu_bench

    out = {}
    for v in variants:
        if v.fn is None or v.name not in (*PROFILED, *EXPERIMENTS):
            continue
        try:
            out[v.name] = gpu_bench.profile_kernels(v.fn, x)
        except RuntimeError as e:
            out[v.name] = {"error": cause(e, 200)}
    return out


def o3_work(key: str, workdir: str):
    """(work, O3's pass configs) for one model as its O3 build starts: the GPU probed and prepared as a job process
    does, the model opened, no pass applied yet. For the scripts that run part of a build alone
    (bench/pdl_trial.py, bench/capture_probe.py)."""
    from kpt.gpu import levels
    from kpt.gpu.jobs import prepare
    from kpt.gpu.jobs import probe as probe_gpu
    from kpt.optimize import passes as opt_passes
    from kpt_nvidia.vendor import VENDOR

    info = probe_gpu(VENDOR)
    prepare(VENDOR, info)
    src = open_model(key)
    work = opt_passes.Work(src.module, src.spec, DEVICE, workdir, ALLOWED)
    return work, levels.levels(VENDOR.precisions(info))["LEVEL_O3"]


def builders_for(src, table, autotune_budget_s: float, workdir: str) -> dict:
    """name -> a function building that variant. The same autotune budget in `warm` and `run` makes the same
    compile decisions, so `run` finds what `warm` built in the package and Inductor caches."""
    import torch

    from kpt.gpu import levels
    from kpt.optimize import pipeline
    from kpt.optimize import variants as var

    lv = levels.levels(table, autotune_budget_s=autotune_budget_s)
    low = torch.bfloat16 if table.bf16 else torch.float16
    builders = {
        "eager_fp32": lambda: var.Variant("eager_fp32", src.module),
        "eager_bf16": lambda: var.eager(src, low),
        "compile_default": lambda: var.compiled(src, None, "compile_default"),
        "compile_max_autotune": lambda: var.compiled(src, "max-autotune", "compile_max_autotune"),
        "compile_max_autotune_bf16": lambda: var.compiled(src, "max-autotune", "compile_max_autotune_bf16", low),
    }
    for level in ("LEVEL_O1", "LEVEL_O2", "LEVEL_O3"):
        builders["kpt_" + level[-2:]] = (lambda lvl=level: pipeline.level_variant(
            src, lvl, lv[lvl], workdir, DEVICE, ALLOWED, lambda *a: None, (0.0, 1.0)))
    for name, (level, fields, allowed) in EXPERIMENTS.items():
        passes = levels.levels(table, autotune_budget_s=autotune_budget_s, **fields)[level]
        builders[name] = (lambda lvl=level, p=passes, n=name, ok=allowed: dataclasses.replace(pipeline.level_variant(
            src, lvl, p, os.path.join(workdir, n), DEVICE, ok, lambda *a: None, (0.0, 1.0)), name=n))
    return builders


def experiment_summary(rows: list[dict], experiments: tuple) -> dict:
    """Each experiment's p50 and its ratio to kpt_O2's, from the same interleaved measurement."""
    by = {r["variant"]: r for r in rows}
    o2 = by.get("kpt_O2", {}).get("p50_ms")
    out = {}
    for name in experiments:
        r = by.get(name, {})
        p50 = r.get("p50_ms") if r.get("accuracy_passed") else None
        out[name] = {"p50_ms": p50, "kpt_O2_p50_ms": o2, "speedup_over_kpt_O2": round(o2 / p50, 3) if o2 and p50 else None,
                     "error": r.get("error")}
    return out


def read_mark(marks: str | None, key: str, name: str) -> dict | None:
    """What `warm --marks` recorded for one variant of one model, or None when its build never finished."""
    try:
        with open(os.path.join(marks, f"{key}.{name}.json")) as f:
            return json.load(f)
    except (OSError, TypeError, ValueError):
        return None


def judge_low_precision(key: str, variants: list, refs: list) -> str:
    """Checks the model's bf16/fp16 variants against LOW_PRECISION_BOUNDS[key] (measure() then keeps these
    reports); returns the reason to print, or "" where the model has no bounds of its own."""
    if key not in LOW_PRECISION_BOUNDS:
        return ""
    from kpt.optimize import accuracy
    from kpt.optimize import variants as var

    bounds, why = LOW_PRECISION_BOUNDS[key]
    for v in variants:
        if v.fn is None or v.precision not in ("bf16", "fp16"):
            continue
        if not var.judge(v, refs, accuracy.loosest(accuracy.tolerances_for(v.precision), accuracy.Tolerances(**bounds))):
            v.fn = None  # measure() skips it instead of checking it again
    return why


def bench_model(key: str, deadline: float, settings, probe: dict, workdir: str, autotune_budget_s: float,
                marks: str | None = None, phase_end: float | None = None, experiments: tuple = ()) -> dict:
    from kpt.gpu import roofline
    from kpt.gpu import variants as gvar
    from kpt.gpu.jobs import probe as probe_gpu
    from kpt.optimize import accuracy
    from kpt.optimize import inputs as inp
    from kpt.optimize import variants as var
    from kpt_nvidia.vendor import VENDOR

    t_start = time.perf_counter()
    info = probe_gpu(VENDOR)
    table = VENDOR.precisions(info)
    src = open_model(key)
    log.info("%s: inputs %s", key, src.spec.describe())
    x0 = inp.generate(src.spec, seed=0, device=DEVICE)
    flops = roofline.flops(src.module, x0)
    decode = key.endswith("decode")
    step_bytes = {p: roofline.step_bytes(src.module, p) for p in roofline.BYTES_PER_WEIGHT} if decode else {}
    refs = accuracy.reference_outputs(src.module, src.spec, 3, seed=1, device=DEVICE)
    order = ORDER + tuple(experiments)
    measure_reserve = 10.0 + 2.5 * settings.time_budget_s * len(order)
    builders = builders_for(src, table, autotune_budget_s, workdir)
    built = {name: read_mark(marks, key, name) for name in order} if marks else {}  # what `warm` recorded
    variants, build_s, o2_build = [], {}, None
    for name in order:
        # Builds made beforehand come from the caches: they are held to the phase's end, not the model's share.
        left = (phase_end if marks and phase_end else deadline) - time.time() - measure_reserve
        cost = RELATIVE_COST.get(name, 0.0) * (o2_build or 0.0)
        mark = built.get(name)
        if marks and name not in ("eager_fp32", "eager_bf16") and (mark is None or mark.get("error")):
            # Built beforehand by `warm` processes: one that did not finish is not built here either (it would
            # compile from scratch inside the measuring run's time); one that failed there fails the same way.
            why = (f"its build failed: {mark['error']}" if mark else
                   "not built: its build (started with the model's other variants) did not finish in the phase's "
                   "build time")
            variants.append(var.failed(name, why))
            log.info("%s: %s skipped (%s)", key, name, why)
            continue
        if name not in ("eager_fp32", "eager_bf16") and left < max(cost, 15.0):
            variants.append(var.failed(name, f"not built: {left:.0f}s of this model's budget left, the build "
                                             f"needs about {cost:.0f}s (estimated from kpt_O2's)"))
            log.info("%s: %s skipped (budget)", key, name)
            continue
        t0 = time.perf_counter()
        v = var.guarded(name, builders[name])
        build_s[name] = time.perf_counter() - t0
        if name == "kpt_O2":
            o2_build = build_s[name]
        log.info("%s: %s built in %.1fs%s", key, name, build_s[name], f" ({v.error})" if v.error else "")
        variants.append(v)
    bounds_why = judge_low_precision(key, variants, refs)
    rows = gvar.measure(variants, src.spec, settings, DEVICE, refs, None)
    precision = {v.name: v.precision for v in variants}
    out_rows = [row_of(key, r, precision[r["variant"]], build_s.get(r["variant"], 0.0), flops, step_bytes, probe)
                for r in rows]
    for r in out_rows:
        mark = built.get(r["variant"])
        if mark and not r.get("error"):
            # The cold build is the warm process's; what this run spent is loading it back from the caches.
            r.update(cached_build_s=r["build_s"], build_s=mark["build_s"], compile_s=mark["compile_s"],
                     built="in parallel with the model's other variants, one process each; loaded from the caches here")
    result = {"rows": out_rows, "flops_per_call": flops, "verdict": verdict(out_rows, flops, probe, decode),
              "profiles": profiles(variants, x0), "wall_s": round(time.perf_counter() - t_start, 1)}
    if decode:
        ok = {r["variant"] for r in out_rows if not r.get("error") and r.get("accuracy_passed") is not False}
        result["loop"] = decode_loop([v for v in variants if v.name in ok], x0, step_bytes, probe)
    if bounds_why:
        result["low_precision_bounds"] = bounds_why
    if experiments:
        result["experiments"] = experiment_summary(out_rows, experiments)
    o2 = next((v for v in variants if v.name == "kpt_O2" and v.fn is not None), None)
    o2_mark = built.get("kpt_O2")
    if o2 is not None and o2_mark:
        # Re-optimizing the same model on the same device: this run's kpt_O2 build was that second job.
        result["reuse"] = {"variant": "kpt_O2", "cold_build_s": o2_mark["build_s"], "warm_build_s": round(o2_build, 2),
                           "cold_compile_s": o2_mark["compile_s"], "warm_compile_s": round(o2.compile_s, 2),
                           "cold_build": "in parallel with the model's other builds"}
    elif o2 is not None and deadline - time.time() > 30:
        # Re-optimizing the same model on the same device: the second build reuses the caches.
        t0 = time.perf_counter()
        warm = builders["kpt_O2"]()
        result["reuse"] = {"variant": "kpt_O2", "cold_build_s": round(build_s["kpt_O2"], 2),
                           "warm_build_s": round(time.perf_counter() - t0, 2), "cold_compile_s": round(o2.compile_s, 2),
                           "warm_compile_s": round(warm.compile_s, 2)}
    log.info("%s: %s", key, json.dumps(result["verdict"]))
    return result


FAULTED = 3  # warm_variants' status where a build failed with DEVICE_FAULT


def warm(args: argparse.Namespace) -> int:
    """Build some variants of one model, only to fill the compile caches (kpt packages, Inductor kernels and
    autotuning results, Triton) that a later `run` on this machine reuses. scripts/gpu_run.sh starts one `warm`
    per variant at once, so a model's builds overlap instead of queueing in the measuring process."""
    from kpt.gpu.jobs import prepare
    from kpt.gpu.jobs import probe as probe_gpu
    from kpt_nvidia.vendor import VENDOR

    info = probe_gpu(VENDOR)
    prepare(VENDOR, info)
    status = 0
    for key in args.model.split(","):  # several: one after the other, sharing what they share (the Llama weights)
        src = open_model(key)
        with tempfile.TemporaryDirectory(prefix="kpt-warm-") as workdir:
            builders = builders_for(src, VENDOR.precisions(info), args.autotune_budget_s, workdir)
            status = warm_variants(key, args.variants.split(","), builders, args.marks) or status
        if status == FAULTED:
            # The GPU faulted in a kernel trial (recorded in the decision cache): this process can no longer use
            # it. As the service retries such a job in a fresh process, the command runs again, once.
            if args.after_fault:
                return 1
            log.warning("a build faulted the GPU: running the command again in a fresh process")
            os.execv(sys.executable, [sys.executable, *sys.argv, "--after-fault"])
        release()
    return status


CROWDED = 0.5  # a build that failed for memory while less than this fraction of the card was free is built again
CROWD_WAIT_S = 600.0  # at most this long after such a failure, waiting for the other builds to free the card


def gpu_free_fraction() -> float:
    import torch

    free, total = torch.cuda.mem_get_info()
    return free / total


def for_want_of_memory(error: str | None) -> bool:
    """Whether a build's error may be another process holding the card's memory: CUDA's out-of-memory, or the
    package's fresh-process load, whose own message it does not always carry (the 1B Llama's kpt_O1 on the
    H100, 2026-12-05, beside six other builds)."""
    return bool(error) and ("out of memory" in error.lower() or "failed in a fresh process" in error)


def warm_variants(key: str, names: list[str], builders: dict, marks: str | None,
                  free_fraction=gpu_free_fraction, sleep=time.sleep) -> int:  # noqa: ANN001 - the card's gauge
    """Builds each variant (warming the caches the measuring run loads from), writing its mark. A build that fails
    for want of memory while other processes crowd the card (less than CROWDED of it free) is built once more when
    they have freed it, or after CROWD_WAIT_S (builds run side by side, one process each)."""
    from kpt.optimize import variants as var

    status = 0
    for name in names:
        t0 = time.perf_counter()
        v = var.guarded(name, builders[name])
        failed = getattr(v, "error", None)
        if for_want_of_memory(failed) and free_fraction() < CROWDED:
            log.warning("%s: %s failed while the card was crowded (%.0f%% free): building it again once it is not",
                        key, name, 100 * free_fraction())
            waited = 0.0
            while free_fraction() < CROWDED and waited < CROWD_WAIT_S:
                sleep(10.0)
                waited += 10.0
            v = var.guarded(name, builders[name])
            failed = getattr(v, "error", None)
        took = time.perf_counter() - t0
        log.info("%s: %s warmed in %.1fs%s", key, name, took, f" (failed: {failed})" if failed else "")
        if marks:
            os.makedirs(marks, exist_ok=True)
            mark = {"model": key, "variant": name, "build_s": round(took, 2),
                    "compile_s": round(v.compile_s, 2) if v.compile_s is not None else None, "error": failed}
            earlier = read_mark(marks, key, name)
            if earlier and not earlier.get("error"):
                # Built again from the caches: the mark keeps the cold build (the table's figures) and adds this one.
                mark = earlier | {"rebuild_s": mark["build_s"], "rebuild_compile_s": mark["compile_s"]}
            with open(os.path.join(marks, f"{key}.{name}.json"), "w") as f:
                json.dump(mark, f)
        if failed and failed.startswith("DEVICE_FAULT"):  # kpt.errors.DeviceFault
            return FAULTED  # nothing more can run on this GPU in this process
        status = status or (1 if failed else 0)
    return status


def release() -> None:
    """Free what one model's variants held (compiled graphs, CUDA graph pools) before the next model. AOTInductor
    packages stay loaded until the process ends (kpt.gpu.runtime never drops a loaded package; each holds its
    weights on the GPU: a few GB per phase)."""
    import torch

    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available() or getattr(torch.version, "hip", None):
        log.error("bench/h100.py needs an NVIDIA GPU with a CUDA build of torch; none here (torch %s, cuda "
                  "available: %s).", torch.__version__, torch.cuda.is_available())
        return 2
    from kpt.gpu import device
    from kpt.gpu import env as gpu_env
    from kpt.gpu.jobs import prepare
    from kpt.optimize import bench
    from kpt_nvidia.vendor import VENDOR

    t0 = time.time()
    info = device.probe("cuda")
    notes = prepare(VENDOR, info)
    settings = bench.Settings(warmup_iters=5, min_iters=args.min_iters, max_iters=5000, time_budget_s=args.time_budget,
                              stable_rel=0.02)
    probe = probe_roofline()
    log.info("roofline probe: %s", probe)
    doc = {"command": "python3 bench/h100.py " + " ".join(sys.argv[1:]), "phase": args.phase,
           "environment": gpu_env.environment(VENDOR, info), "python": platform.python_version(), "setup": notes,
           "settings": settings.__dict__, "nominal_roofline": NOMINAL, "measured_roofline": probe,
           "budget_s": args.budget_s, "models": {}, "rows": []}
    models = args.models.split(",")
    experiments = tuple(e for e in args.experiments.split(",") if e)
    end = t0 + args.budget_s
    with tempfile.TemporaryDirectory() as tmp:
        for i, key in enumerate(models):
            share = (end - time.time()) / (len(models) - i)
            try:
                res = bench_model(key, time.time() + share, settings, probe, os.path.join(tmp, key),
                                  args.autotune_budget_s, args.warmed, end, experiments)
            except Exception as e:  # noqa: BLE001 - one model's failure is recorded; the others still run
                log.exception("%s failed", key)
                res = {"rows": [], "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
            release()
            doc["rows"] += res.pop("rows")
            doc["models"][key] = res
            doc["wall_s"] = round(time.time() - t0, 1)
            tmp_out = args.out + ".partial"
            with open(tmp_out, "w") as f:
                json.dump(doc, f, indent=1, default=str)
            os.replace(tmp_out, args.out)
            log.info("wrote %s (%d rows, %.0fs)", args.out, len(doc["rows"]), time.time() - t0)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure models on this GPU")
    r.add_argument("--models", default="bert-base,gpt2", help=f"comma-separated, from {', '.join(MODELS)}")
    r.add_argument("--budget-s", type=float, default=500.0, help="wall-clock budget of the whole phase")
    r.add_argument("--time-budget", type=float, default=2.0, help="measurement seconds per variant")
    r.add_argument("--min-iters", type=int, default=20)
    r.add_argument("--phase", default="")
    r.add_argument("--out", required=True, help="JSON written after every model")
    r.add_argument("--warmed", default=None, help="marks folder of earlier `warm` runs: build only what they built")
    r.add_argument("--experiments", default="", help=f"comma-separated, from {', '.join(EXPERIMENTS)}: measured "
                   "beside the variants, reported apart")
    w = sub.add_parser("warm", help="build variants of one model to fill the compile caches (no measuring)")
    w.add_argument("--model", required=True, help=f"comma-separated, built in turn, from {', '.join(MODELS)}")
    w.add_argument("--variants", required=True, help=f"comma-separated, from {', '.join(BUILDABLE)}")
    w.add_argument("--marks", default=None, help="folder where each built variant's build time is recorded")
    w.add_argument("--after-fault", action="store_true", help="(set by warm itself) the run again after a GPU fault")
    for p in (r, w):
        p.add_argument("--autotune-budget-s", type=float, default=AUTOTUNE_BUDGET_S,
                       help="seconds O2/O3 may spend tuning GEMMs (estimated up front); equal in warm and run")
    m = sub.add_parser("merge", help="combine phase JSONs into docs/benchmarks/h100.json and h100.md (no GPU needed)")
    m.add_argument("inputs", nargs="+")
    m.add_argument("--docs", default="docs/benchmarks")
    m.add_argument("--notes", default=None, help="JSON {model: [line, ...]}: lines under each model's section")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    if args.cmd == "warm":
        bad = [v for v in args.variants.split(",") if v not in BUILDABLE] + [
            k for k in args.model.split(",") if k not in MODELS]
        if bad:
            ap.error(f"unknown models or variants {bad}; choose from {', '.join(MODELS)} and {', '.join(BUILDABLE)}")
        return warm(args)
    if args.cmd == "run":
        bad = [k for k in args.models.split(",") if k not in MODELS] + [
            e for e in args.experiments.split(",") if e and e not in EXPERIMENTS]
        if bad:
            ap.error(f"unknown models or experiments {bad}; choose from {', '.join(MODELS)} and {', '.join(EXPERIMENTS)}")
        return run(args)
    return merge(args)


if __name__ == "__main__":
    sys.exit(main())
