"""XLA timing, and benchmark jobs: references and kpt levels side by side, measured interleaved.

One call's time on XLA is: dispatch, torch_xla.sync() (cut and launch the lazy graph), then
wait_device_ops() (the device finished). Inputs sit on the device before timing; outputs stay there.
Host variants (eager_fp32, kpt_O0) get host inputs. Compilations during timing are counted from
torch_xla's metrics and reported: steady state means zero.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping, Sequence

import torch

from kpt.optimize import accuracy, bench, jobspec, pipeline
from kpt.optimize import inputs as inp
from kpt.optimize import variants as var
from kpt.optimize.passes import PassConfig
from kpt.optimize.source import Source
from kpt_tpu import runtime

log = logging.getLogger(__name__)
CHECK_SAMPLES = 3
STEADY: dict[str, int] = {}  # what the last xla_timing saw (read right after it by this process's job)
Emit = Callable[[str, str, float], None]


def _on_xla(fn: Callable) -> bool:
    return getattr(fn, "xla", False) or getattr(getattr(fn, "_fn", None), "xla", False)


def xla_timing(fns: dict, spec: inp.InputSpec, settings: bench.Settings, device: str) -> tuple[dict, dict]:
    host = inp.generate(spec, seed=0)
    dev = tuple(t.to(runtime.device()) for t in host)
    calls = {n: ((lambda f=f: f(*dev)) if _on_xla(f) else (lambda f=f: f(*host))) for n, f in fns.items()}

    steady = [0]  # XLA compilations inside timed calls (after warmup): 0 in a steady state

    def timed(call: Callable[[], object]) -> float:
        n = runtime.compilations()
        t0 = time.perf_counter()
        call()
        runtime.sync()
        ms = (time.perf_counter() - t0) * 1e3
        steady[0] += runtime.compilations() - n
        return ms

    times = bench.measure(calls, settings, device, timed=timed)
    STEADY["compilations"] = steady[0]
    if steady[0]:
        log.warning("%d XLA compilation(s) inside timed calls: latencies include compile time", steady[0])
    peaks = {n: bench.peak_memory(c, "cpu") for n, c in calls.items() if not _on_xla(fns[n])}
    return times, peaks


class OpenXLA:
    """The source model under dynamo's openxla backend on the XLA device (no buckets): a reference."""

    xla = True

    def __init__(self, module: torch.nn.Module) -> None:
        import copy

        self.fn = torch.compile(copy.deepcopy(module).to(runtime.device()), backend="openxla", dynamic=False)

    def __call__(self, *args: torch.Tensor) -> object:
        with torch.inference_mode(False), torch.no_grad():  # dynamo cannot trace inference tensors
            return self._call(*[a.clone() if a.is_inference() else a for a in args])

    def _call(self, *args: torch.Tensor) -> object:
        if args[0].device.type == "xla":
            return self.fn(*args)
        out = self.fn(*[a.to(runtime.device()) for a in args])
        return torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.cpu(), out)


def compile_openxla(src: Source) -> var.Variant:
    fn = OpenXLA(src.module)
    s0, t0 = runtime.compile_seconds(), time.perf_counter()
    with torch.no_grad():
        fn(*inp.generate(src.spec, seed=0))
    log.info("compile_openxla first call %.2fs", time.perf_counter() - t0)
    return var.Variant("compile_openxla", fn, compile_s=runtime.compile_seconds() - s0)


def benchmark(req: jobspec.JobRequest, src: Source, workdir: str, emit: Emit,
              levels: Mapping[str, Sequence[PassConfig]], environment: dict) -> dict:
    emit("validate", "eager fp32 reference outputs", 0.08)
    refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1)
    variants = [var.Variant("eager_fp32", src.module)]
    emit("compile", "dynamo openxla (reference)", 0.15)
    variants.append(var.guarded("compile_openxla", lambda: compile_openxla(src)))
    wanted = ["LEVEL_O0"] + ([req.level] if req.level != "LEVEL_O0" else [])
    for i, level in enumerate(wanted):
        lo = 0.3 + 0.2 * i
        variants.append(pipeline.level_variant(src, level, levels[level], workdir, "cpu", req.allowed, emit,
                                               (lo, lo + 0.2)))
    emit("benchmark", f"measuring {len(variants)} variants interleaved", 0.72)
    rows = var.measure(variants, src.spec, req.bench, "cpu", refs, req.tolerances, timing=xla_timing)
    environment = {**environment, "xla.compilations_while_timing": str(STEADY.get("compilations", 0))}
    emit("benchmark", "done", 0.98)
    return {"kind": "JOB_KIND_BENCHMARK", "variants": rows, "requested_level": req.level,
            "device": environment["device_name"], "backend": f"eager (host), torch_xla openxla on "
                                                             f"{runtime.device_kind()}", "environment": environment}
