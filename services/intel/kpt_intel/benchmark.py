"""Benchmark jobs on the intel service: references, the OpenVINO IR and kpt levels side by side, measured
interleaved in one run.

Variants: eager_fp32, eager_bf16 (native-bf16 CPUs only), onnxruntime, openvino (fp32 IR), kpt_O0 and the
requested kpt level (its IPEX/OpenVINO race inside). An ONNX upload has no torch model: only onnxruntime
runs, and there is no eager reference to check it against.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Mapping, Sequence

import torch

from kpt.optimize import accuracy, artifacts, env, jobspec, pipeline
from kpt.optimize import variants as var
from kpt.optimize.passes import PassConfig
from kpt.optimize.source import Source
from kpt_intel.passes import write_openvino

DEVICE = "cpu"
CHECK_SAMPLES = 3
Emit = Callable[[str, str, float], None]


def openvino_variant(src: Source, workdir: str) -> var.Variant:
    t0 = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    path = write_openvino(src.module, src.spec, os.path.join(workdir, "reference.openvino.zip"), "fp32")
    loaded = artifacts.load(path, "ARTIFACT_FORMAT_OPENVINO_IR")
    return var.Variant("openvino", loaded, compile_s=time.perf_counter() - t0)


def reference_variants(src: Source, workdir: str, emit: Emit) -> list[var.Variant]:
    out = [var.Variant("eager_fp32", src.module)]
    use, why = env.bf16_decision(env.cpu_info().flags)
    out.append(var.guarded("eager_bf16", lambda: var.eager(src, torch.bfloat16)) if use
               else var.failed("eager_bf16", why))
    emit("export", "ONNX export for onnxruntime", 0.15)
    out.append(var.guarded("onnxruntime", lambda: var.onnxruntime(src, workdir)))
    emit("export", "OpenVINO conversion (fp32 IR)", 0.25)
    out.append(var.guarded("openvino", lambda: openvino_variant(src, workdir)))
    return out


def benchmark(req: jobspec.JobRequest, src: Source, workdir: str, emit: Emit,
              levels: Mapping[str, Sequence[PassConfig]], environment: dict) -> dict:
    if src.module is None:
        variants, refs = [var.guarded("onnxruntime", lambda: var.onnxruntime(src, workdir))], None
    else:
        emit("validate", "eager fp32 reference outputs", 0.08)
        refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1, device=DEVICE)
        variants = reference_variants(src, workdir, emit)
        wanted = ["LEVEL_O0"] + ([req.level] if req.level != "LEVEL_O0" else [])
        variants += pipeline.level_variants(src, levels, wanted, workdir, DEVICE, req.allowed, emit, (0.35, 0.7))
    emit("benchmark", f"measuring {len(variants)} variants interleaved", 0.72)
    rows = var.measure(variants, src.spec, req.bench, DEVICE, refs, req.tolerances)
    emit("benchmark", "done", 0.98)
    return {"kind": "JOB_KIND_BENCHMARK", "variants": rows, "requested_level": req.level,
            "device": environment["device_name"], "backend": "intel: eager, ipex-torchscript, openvino, onnxruntime",
            "environment": environment}
