"""Benchmark jobs on CPU: references and kpt levels side by side, measured interleaved in one run.

Variants: eager_fp32, eager_bf16 (native-bf16 CPUs only), compile_default, compile_max_autotune,
onnxruntime, kpt_O0 and the requested kpt level. An ONNX upload has no torch model: only
onnxruntime runs, and there is no eager reference to check it against.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from kpt.optimize import accuracy, env, jobspec, pipeline
from kpt.optimize import variants as var
from kpt.optimize.passes import PassConfig
from kpt.optimize.source import Source

DEVICE = "cpu"
CHECK_SAMPLES = 3
Emit = Callable[[str, str, float], None]


def reference_variants(src: Source, workdir: str, emit: Emit, progress: tuple[float, float] = (0.1, 0.4)) -> list:
    """eager_fp32, eager_bf16, compile_default, compile_max_autotune, onnxruntime (failures reported in the row)."""
    lo, hi = progress
    out = [var.Variant("eager_fp32", src.module)]
    use, why = env.bf16_decision(env.cpu_info().flags)
    out.append(var.guarded("eager_bf16", lambda: var.eager(src, torch.bfloat16)) if use
               else var.failed("eager_bf16", why))
    emit("compile", "torch.compile (default mode)", lo)
    out.append(var.guarded("compile_default", lambda: var.compiled(src, None, "compile_default")))
    emit("compile", "torch.compile (max-autotune)", lo + (hi - lo) / 3)
    out.append(var.guarded("compile_max_autotune", lambda: var.compiled(src, "max-autotune", "compile_max_autotune")))
    emit("export", "ONNX export for onnxruntime", lo + 2 * (hi - lo) / 3)
    out.append(var.guarded("onnxruntime", lambda: var.onnxruntime(src, workdir)))
    return out


def benchmark(req: jobspec.JobRequest, src: Source, workdir: str, emit: Emit,
              levels: Mapping[str, Sequence[PassConfig]]) -> dict:
    environment = env.environment(DEVICE)
    if src.module is None:
        variants, refs = [var.guarded("onnxruntime", lambda: var.onnxruntime(src, workdir))], None
    else:
        emit("validate", "eager fp32 reference outputs", 0.08)
        refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1, device=DEVICE)
        variants = reference_variants(src, workdir, emit)
        wanted = ["LEVEL_O0"] + ([req.level] if req.level != "LEVEL_O0" else [])
        variants += pipeline.level_variants(src, levels, wanted, workdir, DEVICE, req.allowed, emit)
    emit("benchmark", f"measuring {len(variants)} variants interleaved", 0.72)
    rows = var.measure(variants, src.spec, req.bench, DEVICE, refs, req.tolerances)
    emit("benchmark", "done", 0.98)
    return {"kind": "JOB_KIND_BENCHMARK", "variants": rows, "requested_level": req.level,
            "device": environment["device_name"], "backend": "cpu: eager, inductor, aoti-cpp, onnxruntime",
            "environment": environment}
