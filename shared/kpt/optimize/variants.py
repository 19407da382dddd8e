"""Measured variants (kpt.v1.VariantMetrics): build the reference ones, check and time them together.

Reference variants are named as the contract says: eager_fp32, eager_bf16, compile_default,
compile_max_autotune, onnxruntime; ours are kpt_O0..kpt_O3. A variant that cannot run here is
still reported, with `error` saying why, and never timed.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

from kpt.errors import KptError, cause
from kpt.optimize import accuracy, bench, ort
from kpt.optimize import inputs as inp
from kpt.optimize.graph_passes import CastBoundary
from kpt.optimize.source import Source

log = logging.getLogger(__name__)


@dataclass
class Variant:
    name: str
    fn: Callable | None  # called with the input tensors
    compile_s: float = 0.0
    precision: str = "fp32"
    error: str = ""  # set when it cannot run, with the reason
    accuracy: accuracy.Report | None = None


def failed(name: str, reason: str) -> Variant:
    return Variant(name, None, error=reason)


LOW_PRECISION = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def eager(src: Source, dtype: torch.dtype = torch.float32) -> Variant:
    """eager_fp32 (the model itself), or eager_bf16/eager_fp16: weights in dtype behind an fp32 interface."""
    if dtype == torch.float32:
        return Variant("eager_fp32", src.module)
    short = LOW_PRECISION[dtype]
    return Variant(f"eager_{short}", CastBoundary(copy.deepcopy(src.module), dtype), precision=short)


def compiled(src: Source, mode: str | None, name: str, dtype: torch.dtype = torch.float32) -> Variant:
    """torch.compile(model, mode); its compile time is the first call's, on the example input. With a low
    dtype, the model cast as eager() casts it (weights in dtype behind an fp32 interface) is compiled."""
    base = eager(src, dtype)
    fn = torch.compile(base.fn, mode=mode)
    x = inp.generate(src.spec, seed=0, device=_device(src))
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn(*x)
    return Variant(name, fn, compile_s=time.perf_counter() - t0, precision=base.precision)


def onnxruntime(src: Source, workdir: str) -> Variant:
    """The model in onnxruntime (CPU EP, all graph optimizations): exported here for torch sources."""
    t0 = time.perf_counter()
    path = src.onnx_path
    if path is None:
        from kpt.optimize import export

        os.makedirs(workdir, exist_ok=True)
        path = export.EXPORTERS[export.OnnxExport](export.OnnxExport(), src, os.path.join(workdir, "reference.onnx"))
    sess = ort.session(path)
    return Variant("onnxruntime", lambda *a: ort.run(sess, a), compile_s=time.perf_counter() - t0)


def _device(src: Source) -> str:
    p = next(iter(src.module.parameters()), None) if src.module is not None else None
    return str(p.device) if p is not None else "cpu"


def guarded(name: str, build: Callable[[], Variant]) -> Variant:
    """Build a reference variant; a failure to build becomes the variant's error, logged with its cause.
    Reference variants are comparisons, not deliverables: one that cannot be built must not sink the job."""
    try:
        return build()
    except KptError as e:
        return failed(name, e.message)
    except Exception as e:  # noqa: BLE001 - torch.compile/onnx failures vary by model; reported, not hidden
        log.warning("variant %s could not be built", name, exc_info=True)
        return failed(name, cause(e))


def cpu_timing(fns: dict, spec: inp.InputSpec, settings: bench.Settings, device: str) -> tuple[dict, dict]:
    """Interleaved wall-clock times (ms) and peak memory of each callable, on one input set."""
    x = inp.generate(spec, seed=0, device=device)
    times = bench.measure({n: (lambda f=f: f(*x)) for n, f in fns.items()}, settings, device)
    return times, {n: bench.peak_memory(lambda f=f: f(*x), device) for n, f in fns.items()}


def judge(v: Variant, refs: list, tol: accuracy.Tolerances) -> bool:
    """Checks v against the reference samples: sets v.accuracy, or v.error where it cannot run on them."""
    try:
        v.accuracy = accuracy.check(v.fn, refs, tol, quantized=v.precision == "int8")
    except KptError as e:
        v.error = f"fails on the check inputs: {e.message}"
        return False
    return True


def measure(variants: list[Variant], spec: inp.InputSpec, settings: bench.Settings, device: str,
            refs: list | None, tol_override: accuracy.Tolerances | None, timing=cpu_timing) -> list[dict]:
    """Check every runnable variant against eager fp32, time them interleaved, return VariantMetrics rows.
    `timing(fns, spec, settings, device) -> (times, peaks)` is how a device measures (GPUs: CUDA events)."""
    runnable = []
    for v in variants:
        if v.fn is None:
            continue
        if refs is not None and v.accuracy is None and not judge(v, refs, accuracy.tolerances_for(v.precision, tol_override)):
            continue
        runnable.append(v)
    times, peaks = timing({v.name: v.fn for v in runnable}, spec, settings, device) if runnable else ({}, {})
    batch = inp.batch_size(spec)
    rows = []
    for v in variants:
        row: dict = {"variant": v.name, "compile_s": v.compile_s}
        if v.accuracy is not None:
            row["accuracy"] = v.accuracy.to_dict()
        if v.name in times:
            st = bench.stats(times[v.name])
            row["latency"] = st.to_dict()
            row["throughput_per_s"] = batch * 1000.0 / st.p50_ms if st.p50_ms > 0 else 0.0
            peak = peaks.get(v.name)
            if peak is not None:
                row["peak_memory_bytes"] = str(peak)
        else:
            row["error"] = v.error or "not measured"
        rows.append(row)
    return rows
