"""One job on a GPU: run(vendor, job, model_path, workdir, emit) -> kpt.v1.Result dict.

Both GPU services call this with their Vendor (kpt_nvidia.jobs.run, kpt_amd.jobs.run). Runs in the
worker's job process, which sees one GPU. Without a usable GPU the job fails with Unavailable before
anything else happens: nothing is ever run on the CPU instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Callable

import torch

from kpt import settings
from kpt.errors import InvalidArgument, Unavailable, Unsupported
from kpt.gpu import cache, device, levels, models, runtime
from kpt.gpu import env as gpu_env
from kpt.gpu import export as gpu_export
from kpt.gpu import variants as gvar
from kpt.gpu.device import DEVICE, GpuInfo
from kpt.gpu.vendor import Precisions, Vendor
from kpt.optimize import accuracy, export, jobspec, ort, pipeline
from kpt.optimize import inputs as inp
from kpt.optimize import variants as var
from kpt.optimize.source import Source, open_for_job

log = logging.getLogger(__name__)

Emit = Callable[[str, str, float], None]
CHECK_SAMPLES = 3  # fresh input batches each artifact is compared on
# fp8 and int4 are judged like int8 (SQNR >= 20 dB, cosine >= 0.99): rel_l2 <= 0.1 is the same bound,
# since SQNR = -20 log10(rel_l2). kpt.optimize.accuracy has no defaults for them yet (docs/gpu.md).
QUANTIZED_TOLERANCE = accuracy.Tolerances(max_rel_l2=0.1, min_cosine=0.99)
_NEEDS = {"PRECISION_BF16": "bf16", "PRECISION_FP16": "fp16", "PRECISION_INT8": "int8", "PRECISION_FP8": "fp8",
          "PRECISION_INT4": "int4"}


def check_precision(precision: str, table: Precisions, vendor: Vendor, info: GpuInfo) -> None:
    want = _NEEDS.get(precision)
    if want is None:
        return
    have = {"bf16": table.bf16, "fp16": table.fp16, "int8": table.int8, "fp8": bool(table.fp8), "int4": table.int4}
    if not have[want]:
        raise Unsupported(f"{precision} is not available on {info.name} ({info.arch}); this device offers "
                          f"{', '.join(table.contract())}" + (f" ({'; '.join(table.why)})" if table.why else ""))


def prepare(vendor: Vendor, info: GpuInfo) -> list[str]:
    """Process-wide settings of a GPU job process (idempotent): caches under KPT_CACHE_DIR, IEEE fp32
    (TF32 off: "fp32" means fp32 in every result), the GPU artifact loader, tolerances for fp8/int4,
    and the vendor's runtime settings. Returns what was set, for the log."""
    cache_dir = settings.get("KPT_CACHE_DIR")
    dirs = cache.configure(cache_dir)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runtime.install()
    for p in ("fp8", "int4"):
        accuracy.DEFAULTS.setdefault(p, QUANTIZED_TOLERANCE)
    torch.cuda.set_device(0)
    notes = [f"caches {dirs}", "TF32 off"] + vendor.configure(cache_dir, info)
    log.info("%s job process: %s", vendor.name, "; ".join(notes))
    return notes


def probe(vendor: Vendor) -> GpuInfo:
    info = device.probe(vendor.kind)
    if isinstance(info, str):
        raise Unavailable(f"the {vendor.name} service has no usable GPU: {info}", target=vendor.name)
    return info


def device_levels(vendor: Vendor, table: Precisions) -> dict:
    return levels.levels(table, int4_ntile=16 if vendor.kind == "rocm" else 8)


def run(vendor: Vendor, job: dict, model_path: str | None, workdir: str, emit: Emit) -> dict:
    info = probe(vendor)
    req = jobspec.parse(job.get("spec", {}))
    table = vendor.table(info)
    check_precision(req.precision, table, vendor, info)
    prepare(vendor, info)
    os.makedirs(workdir, exist_ok=True)
    src = open_for_job(req, model_path, DEVICE, emit, opener=models.open_source, onto=f" onto {info.name}")
    if req.kind == "JOB_KIND_OPTIMIZE":
        if src.module is None:
            raise Unsupported("optimize jobs need a torch model: upload a torch.export ExportedProgram (.pt2). "
                              "ONNX uploads can be benchmarked (with a GPU onnxruntime provider).")
        return optimize(vendor, info, table, req, src, workdir, emit)
    if req.kind == "JOB_KIND_EXPORT":
        return export_job(vendor, info, req, src, workdir, emit)
    return benchmark(vendor, info, table, req, src, workdir, emit)


def metadata(src: Source, vendor: Vendor, environment: dict, level: str, passes: list[dict], precision: str,
             backend: str, report: accuracy.Report, row: dict, path: str) -> dict:
    m = report.metrics
    applied = [p["name"] for p in passes if p["level"] == level and p["applied"]]
    meta = {"source_digest": src.digest, "source_name": src.name, "target": vendor.target, "device": DEVICE,
            "device_name": environment["device_name"], "gpu_arch": environment.get("gpu.arch", ""),
            "driver": environment.get("gpu.driver", ""), "level": level, "passes": ",".join(applied),
            "precision": precision, "backend": backend, "max_abs_err": f"{m.max_abs_err:.6g}",
            "rel_l2": f"{m.rel_l2:.6g}", "cosine": f"{m.cosine:.8f}", "sqnr_db": f"{m.sqnr_db:.2f}",
            "input_spec": inp.to_json(src.spec), "env_fingerprint": environment["fingerprint"]}
    if path.endswith(".pt2") and level != "LEVEL_O0":
        meta["cuda_graphs"] = "on" if runtime.read_record(path).get("cudagraphs") else "off"
    if "latency" in row:
        meta["p50_ms"] = f"{row['latency']['p50_ms']:.4f}"
        meta["p99_ms"] = f"{row['latency']['p99_ms']:.4f}"
    meta.update({k: v for k, v in environment.items() if k.startswith("toolchain.")})
    return meta


def optimize(vendor: Vendor, info: GpuInfo, table: Precisions, req: jobspec.JobRequest, src: Source,
             workdir: str, emit: Emit) -> dict:
    """The guarded ladder of kpt.optimize.pipeline, then kpt_O0 and the chosen level timed with the GPU protocol."""
    environment = gpu_env.environment(vendor, info)
    emit("validate", f"eager fp32 reference outputs on {CHECK_SAMPLES} fresh input samples", 0.08)
    refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1, device=DEVICE)
    lad = pipeline.ladder(src, device_levels(vendor, table), req.level, refs, req.tolerances, workdir, DEVICE,
                          req.allowed, emit)
    cand = lad.chosen
    final = os.path.join(workdir, os.path.basename(cand.work.artifact.path))
    os.replace(cand.work.artifact.path, final)
    for level in pipeline.LEVELS:
        shutil.rmtree(os.path.join(workdir, pipeline.short(level)), ignore_errors=True)
    short = pipeline.short(cand.level)
    emit("benchmark", "measuring kpt_O0" + (f" and kpt_{short} interleaved" if cand.level != "LEVEL_O0" else ""), 0.75)
    chosen = var.Variant("kpt_" + short, cand.loaded, cand.work.compile_s, cand.work.precision, accuracy=cand.report)
    measured = [chosen]
    if cand.level != "LEVEL_O0":
        measured.insert(0, var.Variant("kpt_O0", models.program(src, DEVICE).module(), precision="fp32"))
    rows = gvar.measure(measured, src.spec, req.bench, DEVICE, refs, req.tolerances)
    speedup = pipeline.speedup_of(rows, cand.level)
    emit("export", f"artifact {os.path.basename(final)} ready", 0.97)
    meta = metadata(src, vendor, environment, cand.level, lad.passes, cand.work.precision,
                    cand.work.artifact.backend, cand.report, rows[-1], final)
    meta["speedup"] = f"{speedup:.4f}"
    return {"kind": "JOB_KIND_OPTIMIZE",
            "artifacts": [{"name": os.path.basename(final), "format": cand.work.artifact.format, "metadata": meta}],
            "variants": rows, "passes": lad.passes, "accuracy": cand.report.to_dict(), "requested_level": req.level,
            "achieved_level": cand.level, "attempts": lad.attempts, "fallback_reason": lad.fallback_reason,
            "speedup": speedup, "device": info.name, "backend": cand.work.artifact.backend,
            "environment": environment}


EXPORT_NAMES = {"ARTIFACT_FORMAT_ONNX": "onnxruntime", "ARTIFACT_FORMAT_EXPORTED_PROGRAM": "kpt_O0",
                "ARTIFACT_FORMAT_TORCHSCRIPT": "torchscript"}


def export_job(vendor: Vendor, info: GpuInfo, req: jobspec.JobRequest, src: Source, workdir: str,
               emit: Emit) -> dict:
    if not req.export_formats:
        raise InvalidArgument("an export job needs export_formats: ARTIFACT_FORMAT_ONNX, ARTIFACT_FORMAT_TORCHSCRIPT "
                              "and/or ARTIFACT_FORMAT_EXPORTED_PROGRAM")
    configs = [export.config_for(f) for f in dict.fromkeys(req.export_formats)]  # Unsupported before any work
    if src.module is None:
        raise Unsupported("an uploaded ONNX model is not re-exported; it already is the ONNX artifact, and it "
                          "cannot be turned back into torchscript or an exported program")
    environment = gpu_env.environment(vendor, info)
    providers = gpu_export.providers_for(vendor.onnx_providers)
    refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1, device=DEVICE)
    tol = accuracy.tolerances_for("fp32", req.tolerances)
    done = []
    for i, cfg in enumerate(configs):
        emit("export", f"{cfg.format}: writing and checking", 0.1 + 0.6 * i / len(configs))
        done.append(gpu_export.run(cfg, src, workdir, refs, tol, DEVICE, providers))
    emit("benchmark", "timing eager fp32 and each artifact interleaved", 0.75)
    variants = [var.Variant("eager_fp32", src.module)] + [
        var.Variant(EXPORT_NAMES[d.exported.format], d.exported.loader, accuracy=d.exported.accuracy) for d in done]
    rows = gvar.measure(variants, src.spec, req.bench, DEVICE, refs, req.tolerances)
    arts = []
    for d, row in zip(done, rows[1:], strict=True):
        meta = metadata(src, vendor, environment, "LEVEL_O0", [], "fp32", d.backend, d.exported.accuracy, row,
                        d.exported.path)
        arts.append({"name": os.path.basename(d.exported.path), "format": d.exported.format, "metadata": meta})
    worst = max((d.exported.accuracy for d in done), key=lambda r: r.metrics.rel_l2)
    emit("export", f"{len(arts)} artifact(s) ready", 0.97)
    return {"kind": "JOB_KIND_EXPORT", "artifacts": arts, "variants": rows, "accuracy": worst.to_dict(),
            "device": info.name, "backend": ",".join(d.backend for d in done), "environment": environment}


def _onnx_variant(src: Source, workdir: str, providers: list[str]) -> var.Variant:
    """onnxruntime on a GPU execution provider (refused on the CPU provider: it is no GPU reference)."""
    if providers == ["CPUExecutionProvider"]:
        raise Unsupported("this onnxruntime has no GPU execution provider; it is not measured as a GPU reference")
    t0 = time.perf_counter()
    path = src.onnx_path
    if path is None:
        path = os.path.join(workdir, "reference.onnx")
        export.EXPORTERS[export.OnnxExport](export.OnnxExport(), gpu_export.cpu_source(src), path)
    sess = gpu_export.ort_session(path, providers)
    return var.Variant("onnxruntime", lambda *a: ort.run(sess, a), compile_s=time.perf_counter() - t0)


def benchmark(vendor: Vendor, info: GpuInfo, table: Precisions, req: jobspec.JobRequest, src: Source, workdir: str,
              emit: Emit) -> dict:
    environment = gpu_env.environment(vendor, info)
    providers = gpu_export.providers_for(vendor.onnx_providers)
    if src.module is None:
        variants, refs = [_onnx_variant(src, workdir, providers)], None
    else:
        emit("validate", "eager fp32 reference outputs", 0.08)
        refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1, device=DEVICE)
        variants = gvar.references(src, table, emit, onnx=lambda: _onnx_variant(src, workdir, providers))
        wanted = ["LEVEL_O0"] + ([req.level] if req.level != "LEVEL_O0" else [])
        lv = device_levels(vendor, table)
        variants += pipeline.level_variants(src, lv, wanted, workdir, DEVICE, req.allowed, emit)
    emit("benchmark", f"measuring {len(variants)} variants interleaved", 0.72)
    rows = gvar.measure(variants, src.spec, req.bench, DEVICE, refs, req.tolerances)
    emit("benchmark", "done", 0.98)
    return {"kind": "JOB_KIND_BENCHMARK", "variants": rows, "requested_level": req.level, "device": info.name,
            "backend": f"{vendor.kind}: eager, inductor, aoti-triton" + (", onnxruntime" if len(providers) > 1 else ""),
            "environment": environment}
