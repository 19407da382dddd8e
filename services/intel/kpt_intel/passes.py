"""Intel passes: IPEX on the CPU (bf16 gate, static int8, optimize + TorchScript freeze) and the
OpenVINO race that keeps whichever of the two backends measures faster.

Order inside a level: [NativeBF16 | IpexStaticInt8] -> IpexJit -> OpenVinoRace. The gate and the int8
pass only decide `work.precision` (int8 also replaces `work.module` with the converted model); IpexJit
works on a copy (ipex.optimize(inplace=False)), so OpenVinoRace still converts the eager fp32 module.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.utils._pytree as pytree

from kpt.optimize import accuracy, artifacts, bench, env
from kpt.optimize import inputs as inp
from kpt.optimize import variants as var
from kpt.optimize.passes import Artifact, Outcome, PassConfig, Work, register
from kpt.optimize.quantize import lift_linears

log = logging.getLogger(__name__)

# Interleaved run that decides between the IPEX and the OpenVINO artifact (the same shape as the
# Inductor max-autotune choice in kpt.optimize.inductor).
RACE_SETTINGS = bench.Settings(warmup_iters=3, min_iters=15, max_iters=300, time_budget_s=2.0, stable_rel=0.02)
RACE_SAMPLES = 2  # fresh input batches each backend is checked on before it may race
RACE_SEED = 101  # differs from the ladder's reference seeds (1..) and the compile example (0)
# Races of this process: work.workdir -> VariantMetrics rows (jobs.py adds them to the result).
RACES: dict[str, list[dict]] = {}


def ipex():
    """intel_extension_for_pytorch, imported on first use (it registers its ops and JIT passes)."""
    import intel_extension_for_pytorch

    return intel_extension_for_pytorch


@dataclass(frozen=True)
class NativeBF16(PassConfig):
    name: ClassVar[str] = "bf16_native"
    cpuinfo_path: str = "/proc/cpuinfo"


@register(NativeBF16)
def _bf16(cfg: NativeBF16, work: Work) -> Outcome:
    use, why = env.bf16_for_job(work.allowed, cfg.cpuinfo_path)
    if not use:
        return Outcome(False, why)
    work.precision = "bf16"
    return Outcome(True, f"{why}: IPEX computes in bf16 (ipex.optimize dtype=bf16, autocast in the traced graph); "
                   "inputs and outputs stay fp32")


@dataclass(frozen=True)
class IpexStaticInt8(PassConfig):
    """IPEX static int8: per-channel int8 weights, per-tensor activations with scales observed on
    generated calibration batches (ipex.quantization.default_static_qconfig_mapping)."""

    name: ClassVar[str] = "ipex_static_int8"
    calibration_batches: int = 8
    seed: int = 1000  # calibration inputs' seeds: seed, seed+1, ... (never the check seeds)

    def __post_init__(self) -> None:
        if self.calibration_batches < 1:
            raise ValueError("calibration_batches must be >= 1")


@register(IpexStaticInt8)
def _int8(cfg: IpexStaticInt8, work: Work) -> Outcome:
    if "int8" not in work.allowed:
        return Outcome(False, "the job's precision excludes int8")
    from intel_extension_for_pytorch.quantization import convert, prepare

    module = copy.deepcopy(work.module)
    if isinstance(module, torch.fx.GraphModule):
        lift_linears(module)  # uploaded graphs call aten.linear; IPEX quantizes nn.Linear modules
    quantizable = sum(1 for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    if quantizable == 0:
        return Outcome(False, "no nn.Linear or nn.Conv2d layers: IPEX static int8 has nothing to quantize")
    work.say(f"calibrating on {cfg.calibration_batches} generated batches")
    prepared = prepare(module, ipex().quantization.default_static_qconfig_mapping,
                       example_inputs=work.example(), inplace=False)
    with torch.no_grad():
        for i in range(cfg.calibration_batches):
            prepared(*inp.generate(work.spec, cfg.seed + i, work.device, vary_dynamic=i > 0))
    work.module = convert(prepared)
    work.precision = "int8"
    return Outcome(True, f"{quantizable} linear/conv layer(s) to int8 (static: per-channel weights, activation "
                   f"scales from {cfg.calibration_batches} calibration batches); judged by SQNR")


@dataclass(frozen=True)
class IpexJit(PassConfig):
    """ipex.optimize (weight prepacking, conv+bn folding, oneDNN kernels) on a copy of the model, then
    torch.jit.trace + torch.jit.freeze (IPEX's graph fusions apply to the frozen graph). Computes in
    work.precision: fp32, bf16 (autocast traced in) or int8 (the IpexStaticInt8 model, traced as is)."""

    name: ClassVar[str] = "ipex_jit"
    phase: ClassVar[str] = "compile"
    file: str = "model.ipex.torchscript.pt"


class _Fp32Outputs(torch.nn.Module):
    """Outputs back to fp32 (a bf16 graph keeps the model's fp32 interface)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor):
        return pytree.tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
                               self.inner(*args))


def ipex_trace(module: torch.nn.Module, precision: str, example: tuple) -> tuple[torch.jit.ScriptModule, str]:
    """The IPEX-frozen TorchScript of `module` computing in `precision`, and what was done."""
    if precision == "int8":
        model, how = module, "int8 model"
    else:
        if isinstance(module, torch.fx.GraphModule):
            module = copy.deepcopy(module)
            lift_linears(module)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model = ipex().optimize(module.eval(), dtype=dtype, inplace=False)
        swapped = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("_IPEX")})
        how = f"ipex.optimize({precision}; {', '.join(swapped) or 'no module swaps'})"
        if precision == "bf16":
            model = _Fp32Outputs(model)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.no_grad(), autocast:
        traced = torch.jit.trace(model, example, check_trace=False, strict=False)
        frozen = torch.jit.freeze(traced.eval())
        for _ in range(2):  # IPEX's fusion passes run on the first calls of a frozen graph
            frozen(*example)
    return frozen, how


@register(IpexJit)
def _ipex_jit(cfg: IpexJit, work: Work) -> Outcome:
    os.makedirs(work.workdir, exist_ok=True)
    path = os.path.join(work.workdir, cfg.file)
    work.say(f"ipex.optimize + TorchScript freeze ({work.precision})")
    frozen, how = ipex_trace(work.module, work.precision, work.example())
    torch.jit.save(frozen, path)
    work.artifact = Artifact(path, "ARTIFACT_FORMAT_TORCHSCRIPT", f"ipex-torchscript:{work.precision}")
    return Outcome(True, f"{how} + torch.jit.trace + freeze -> {cfg.file}")


# OpenVINO


def openvino_shapes(spec: inp.InputSpec) -> list:
    """OpenVINO input shapes: dynamic dims as bounded ranges, static dims as sizes."""
    import openvino as ov

    return [ov.PartialShape([ov.Dimension(d.min, d.max) if d.dynamic else d.size for d in t.dims])
            for t in spec.tensors]


def write_openvino(module: torch.nn.Module, spec: inp.InputSpec, path: str, precision: str) -> str:
    """openvino.convert_model -> save_model (fp32 weights) -> one zip artifact (artifacts.OPENVINO_MEMBERS)."""
    import openvino as ov

    example = inp.generate(spec, seed=0, for_export=True)
    with torch.no_grad():
        model = ov.convert_model(module, example_input=example, input=openvino_shapes(spec))
    hint = {"fp32": "f32", "bf16": "bf16"}[precision]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path) or ".") as tmp:
        # compress_to_fp16 defaults to True, which would round every weight to fp16: keep the IR exact.
        ov.save_model(model, os.path.join(tmp, "model.xml"), compress_to_fp16=False)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.write(os.path.join(tmp, "model.xml"), "model.xml")
            z.write(os.path.join(tmp, "model.bin"), "model.bin")
            z.writestr("compile.json", json.dumps({"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}))
    return path


@dataclass(frozen=True)
class OpenVinoRace(PassConfig):
    """Convert the eager fp32 model with OpenVINO, compile it for the CPU at the candidate's precision,
    check it and the IPEX artifact on fresh inputs, time both interleaved, keep the faster that passes.
    OpenVINO wins only when faster on both its median and its fastest run (noise keeps IPEX). Reported as
    applied whenever both were timed; the detail names the one kept and both measurements."""

    name: ClassVar[str] = "openvino_race"
    phase: ClassVar[str] = "compile"
    file: str = "model.openvino.zip"


def _p50(row: dict) -> float:
    return row["latency"]["p50_ms"] if "latency" in row else float("inf")


def openvino_wins(ipex_row: dict, ov_row: dict) -> bool:
    if "latency" not in ov_row or not ov_row.get("accuracy", {}).get("passed"):
        return False
    if "latency" not in ipex_row or not ipex_row.get("accuracy", {}).get("passed"):
        return True
    return (ov_row["latency"]["p50_ms"] < ipex_row["latency"]["p50_ms"]
            and ov_row["latency"]["min_ms"] < ipex_row["latency"]["min_ms"])


@register(OpenVinoRace)
def _race(cfg: OpenVinoRace, work: Work) -> Outcome:
    if work.artifact is None:
        return Outcome(False, "no IPEX artifact to race against (IpexJit must run first)")
    if work.precision not in ("fp32", "bf16"):
        return Outcome(False, f"OpenVINO {work.precision} needs NNCF post-training quantization, which this service "
                       "does not ship: the IPEX artifact is kept")
    import openvino as ov

    path = os.path.join(work.workdir, cfg.file)
    work.say(f"converting with OpenVINO {ov.get_version().split('-')[0]}")
    try:
        write_openvino(work.module, work.spec, path, work.precision)
        candidate = artifacts.load(path, "ARTIFACT_FORMAT_OPENVINO_IR")
    except Exception as e:  # noqa: BLE001 - the race is optional: IPEX stays, the reason is reported
        log.warning("OpenVINO conversion failed", exc_info=True)
        return Outcome(False, f"OpenVINO conversion failed ({type(e).__name__}: {str(e).strip()[:300]}); "
                       "the IPEX artifact is kept")
    work.say("checking both backends on fresh inputs and timing them interleaved")
    refs = accuracy.reference_outputs(work.module, work.spec, RACE_SAMPLES, seed=RACE_SEED, device=work.device)
    ipex_loaded = artifacts.load(work.artifact.path, work.artifact.format)
    level = os.path.basename(work.workdir)
    rows = var.measure([var.Variant(f"ipex_{level}", ipex_loaded, precision=work.precision),
                        var.Variant(f"openvino_{level}", candidate, precision=work.precision)],
                       work.spec, RACE_SETTINGS, work.device, refs, None)
    RACES[work.workdir] = rows
    ipex_row, ov_row = rows
    summary = "; ".join(
        f"{r['variant']}: " + (f"p50 {_p50(r):.3f} ms, min {r['latency']['min_ms']:.3f} ms" if "latency" in r
                               else f"not timed ({r.get('error', '')})")
        + (f", rel_l2 {r['accuracy']['rel_l2']:.3g} ({'pass' if r['accuracy']['passed'] else 'FAIL'})"
           if "accuracy" in r else "") for r in rows)
    if openvino_wins(ipex_row, ov_row):
        work.artifact = Artifact(path, "ARTIFACT_FORMAT_OPENVINO_IR", f"openvino:CPU:{work.precision}")
        return Outcome(True, f"OpenVINO kept ({summary})")
    os.remove(path)
    return Outcome(True, f"IPEX kept ({summary})")
