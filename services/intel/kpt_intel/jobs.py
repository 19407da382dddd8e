"""One job on the intel service: run(job, model_path, workdir, emit) -> kpt.v1.Result dict.

Runs in the worker's child process. Jobs run on the host CPU through IPEX (TorchScript) and OpenVINO;
the result records which backend produced the artifact. Errors are kpt.errors types.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from typing import Callable

import torch

from kpt.errors import InvalidArgument, Unsupported
from kpt.optimize import accuracy, env, jobspec, pipeline, source
from kpt.optimize import export as shared_export
from kpt.optimize import inputs as inp
from kpt.optimize import variants as var
from kpt_intel import export, passes, upload
from kpt_intel.benchmark import benchmark
from kpt_intel.levels import LEVELS

log = logging.getLogger(__name__)

TARGET, DEVICE = "TARGET_INTEL", "cpu"
Emit = Callable[[str, str, float], None]
SUPPORTED = {"PRECISION_UNSPECIFIED", "PRECISION_FP32", "PRECISION_BF16", "PRECISION_INT8"}
CHECK_SAMPLES = 3  # fresh input batches each artifact is compared on


def environment() -> dict[str, str]:
    """kpt.optimize.env's fingerprint plus the IPEX version (not one of the shared toolchain packages)."""
    out = env.environment(DEVICE)
    out["toolchain.intel_extension_for_pytorch"] = importlib.metadata.version("intel_extension_for_pytorch")
    return out


def run(job: dict, model_path: str | None, workdir: str, emit: Emit) -> dict:
    req = jobspec.parse(job.get("spec", {}))
    if req.precision not in SUPPORTED:
        raise Unsupported(f"{req.precision} is not available on the intel service; use PRECISION_FP32, "
                          "PRECISION_BF16 (native on avx512_bf16/amx CPUs) or PRECISION_INT8 (IPEX static)")
    if req.kind == "JOB_KIND_EXPORT":  # refuse unknown formats before the model is opened
        if not req.export_formats:
            raise InvalidArgument("an export job needs export_formats: " + ", ".join(export.CONFIGS))
        configs = [export.config_for(f) for f in dict.fromkeys(req.export_formats)]
    passes.ipex()  # IPEX registers its ops and JIT fusion passes before any model is traced
    if req.bench.threads:
        torch.set_num_threads(req.bench.threads)
    os.makedirs(workdir, exist_ok=True)
    if model_path and req.model_format == "MODEL_FORMAT_EXPORTED_PROGRAM":
        model_path = upload.compatible_pt2(model_path, os.path.dirname(model_path))  # saved by torch >= 2.9
    src = source.open_for_job(req, model_path, DEVICE, emit)
    if req.kind == "JOB_KIND_OPTIMIZE":
        if src.module is None:
            raise Unsupported("optimize jobs need a torch model: upload a torch.export ExportedProgram (.pt2). "
                              "ONNX uploads can be benchmarked (onnxruntime) and exported as ONNX.")
        return optimize_job(req, src, workdir, emit)
    if req.kind == "JOB_KIND_EXPORT":
        return export_job(req, configs, src, workdir, emit)
    return benchmark(req, src, workdir, emit, LEVELS, environment())


def optimize_job(req: jobspec.JobRequest, src: source.Source, workdir: str, emit: Emit) -> dict:
    passes.RACES.clear()
    result = pipeline.optimize(src, LEVELS, req.level, TARGET, DEVICE, req.allowed, req.tolerances, req.bench,
                               workdir, emit, samples=CHECK_SAMPLES)
    # The IPEX-vs-OpenVINO race of the returned level (measured interleaved in its own run): both rows
    race = passes.RACES.get(os.path.join(workdir, pipeline.short(result["achieved_level"])), [])
    result["variants"] += race
    ipex_version = importlib.metadata.version("intel_extension_for_pytorch")
    result["environment"]["toolchain.intel_extension_for_pytorch"] = ipex_version
    for art in result["artifacts"]:
        art["metadata"]["toolchain.intel_extension_for_pytorch"] = ipex_version
        for row in race:
            if "latency" in row:
                art["metadata"][f"race.{row['variant']}.p50_ms"] = f"{row['latency']['p50_ms']:.4f}"
    return result


def export_job(req: jobspec.JobRequest, configs: list, src: source.Source, workdir: str, emit: Emit) -> dict:
    if src.module is None:
        raise Unsupported("an uploaded ONNX model is not re-exported; it already is the ONNX artifact, and it "
                          "cannot be turned back into torchscript or OpenVINO IR from here")
    environ = environment()
    refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1, device=DEVICE)
    tol = accuracy.tolerances_for("fp32", req.tolerances)
    done = []
    for i, cfg in enumerate(configs):
        emit("export", f"{cfg.format}: writing and checking", 0.1 + 0.6 * i / len(configs))
        done.append(shared_export.export(cfg, src, workdir, refs, tol))
    emit("benchmark", "timing eager fp32 and each artifact interleaved", 0.75)
    variants = [var.Variant("eager_fp32", src.module)] + [
        var.Variant(export.BACKENDS[d.format], d.loader, accuracy=d.accuracy) for d in done]
    rows = var.measure(variants, src.spec, req.bench, DEVICE, refs, req.tolerances)
    arts = []
    for d, row in zip(done, rows[1:], strict=True):
        m = d.accuracy.metrics
        meta = {"source_digest": src.digest, "source_name": src.name, "target": TARGET, "device": DEVICE,
                "device_name": environ["device_name"], "level": "LEVEL_O0", "passes": "", "precision": "fp32",
                "backend": export.BACKENDS[d.format],
                "max_abs_err": f"{m.max_abs_err:.6g}", "rel_l2": f"{m.rel_l2:.6g}", "cosine": f"{m.cosine:.8f}",
                "env_fingerprint": environ["fingerprint"], "input_spec": inp.to_json(src.spec),
                **{k: v for k, v in environ.items() if k.startswith("toolchain.")}}
        if "latency" in row:
            meta.update(p50_ms=f"{row['latency']['p50_ms']:.4f}", p99_ms=f"{row['latency']['p99_ms']:.4f}")
        arts.append({"name": os.path.basename(d.path), "format": d.format, "metadata": meta})
    worst = max((d.accuracy for d in done), key=lambda a: a.metrics.rel_l2)
    emit("export", f"{len(arts)} artifact(s) ready", 0.97)
    return {"kind": "JOB_KIND_EXPORT", "artifacts": arts, "variants": rows, "accuracy": worst.to_dict(),
            "device": environ["device_name"], "backend": ",".join(export.BACKENDS[d.format] for d in done),
            "environment": environ}
