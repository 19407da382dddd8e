"""Measured variants on a GPU (kpt.v1.VariantMetrics rows): the references a user would write by hand,
checked and timed next to ours with the GPU protocol (device events, rotating inputs).

References, as the contract names them on every target: eager_fp32; eager_bf16 (eager_fp16 where the
device lacks bf16); compile_default and compile_max_autotune (torch.compile of the model as given,
fp32); onnxruntime only with a GPU execution provider (a CPU session is no GPU reference).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from kpt.gpu import bench as gpu_bench
from kpt.gpu.vendor import Precisions
from kpt.optimize import accuracy, bench
from kpt.optimize import inputs as inp
from kpt.optimize import variants as var
from kpt.optimize.source import Source

log = logging.getLogger(__name__)

ROTATION = 4  # input batches the benchmark cycles through (seeds 0, 100, 101, 102)
Emit = Callable[[str, str, float], None]


def rotation(spec: inp.InputSpec, device: str, n: int = ROTATION) -> list[tuple[torch.Tensor, ...]]:
    return [inp.generate(spec, seed=0 if i == 0 else 99 + i, device=device) for i in range(n)]


def references(src: Source, table: Precisions, emit: Emit, progress: tuple[float, float] = (0.1, 0.4),
               onnx: Callable[[], var.Variant] | None = None) -> list[var.Variant]:
    lo, hi = progress
    low = torch.bfloat16 if table.bf16 else torch.float16
    out = [var.Variant("eager_fp32", src.module), var.guarded("eager_" + table.low, lambda: var.eager(src, low))]
    emit("compile", "torch.compile (default mode)", lo)
    out.append(var.guarded("compile_default", lambda: var.compiled(src, None, "compile_default")))
    emit("compile", "torch.compile (max-autotune)", lo + (hi - lo) / 2)
    out.append(var.guarded("compile_max_autotune", lambda: var.compiled(src, "max-autotune", "compile_max_autotune")))
    if onnx is not None:
        out.append(var.guarded("onnxruntime", onnx))
    return out


def gpu_timing(fns: dict, spec: inp.InputSpec, settings: bench.Settings, device: str) -> tuple[dict, dict]:
    """CUDA-event times over rotating input sets, and the allocator's peak per callable."""
    inputs = rotation(spec, device)
    times = gpu_bench.measure(fns, inputs, settings)
    return times, {n: gpu_bench.peak_memory(f, inputs[0]) for n, f in fns.items()}


def measure(variants: list[var.Variant], spec: inp.InputSpec, settings: bench.Settings, device: str,
            refs: list | None, tol_override: accuracy.Tolerances | None) -> list[dict]:
    """kpt.optimize.variants.measure, timed on the GPU."""
    return var.measure(variants, spec, settings, device, refs, tol_override, timing=gpu_timing)
