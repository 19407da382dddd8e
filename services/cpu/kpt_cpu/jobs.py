"""One job on this CPU: run(job, model_path, workdir, emit) -> kpt.v1.Result dict.

Runs in the worker's child process (no credentials, time and memory limits). `job` is a kpt.v1.Job
as a protobuf JSON dict; errors are kpt.errors types the worker turns into the job's ErrorDetail.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch

from kpt import settings
from kpt.errors import InvalidArgument, Unsupported
from kpt.optimize import accuracy, env, export, inductor, jobspec, pipeline, source
from kpt.optimize import inputs as inp
from kpt.optimize import variants as var
from kpt_cpu.benchmark import benchmark
from kpt_cpu.levels import LEVELS

log = logging.getLogger(__name__)

TARGET, DEVICE = "TARGET_CPU", "cpu"
Emit = Callable[[str, str, float], None]
# Reduced precisions this service can produce (others in a job's precision are Unsupported here).
SUPPORTED = {"PRECISION_UNSPECIFIED", "PRECISION_FP32", "PRECISION_BF16", "PRECISION_INT8"}
CHECK_SAMPLES = 3  # fresh input batches each artifact is compared on


def run(job: dict, model_path: str | None, workdir: str, emit: Emit) -> dict:
    req = jobspec.parse(job.get("spec", {}))
    if req.precision not in SUPPORTED:
        raise Unsupported(f"{req.precision} is not available on CPU; use PRECISION_FP32, PRECISION_BF16 (native on "
                          "avx512_bf16/amx CPUs) or PRECISION_INT8")
    inductor.use_cache_dir(settings.get("KPT_CACHE_DIR"))
    if req.bench.threads:
        torch.set_num_threads(req.bench.threads)
    os.makedirs(workdir, exist_ok=True)
    src = source.open_for_job(req, model_path, DEVICE, emit)
    if req.kind == "JOB_KIND_OPTIMIZE":
        if src.module is None:
            raise Unsupported("optimize jobs need a torch model: upload a torch.export ExportedProgram (.pt2). "
                              "ONNX uploads can be benchmarked (onnxruntime) and exported as ONNX.")
        return pipeline.optimize(src, LEVELS, req.level, TARGET, DEVICE, req.allowed, req.tolerances, req.bench,
                                 workdir, emit, samples=CHECK_SAMPLES)
    if req.kind == "JOB_KIND_EXPORT":
        return export_job(req, src, workdir, emit)
    return benchmark(req, src, workdir, emit, LEVELS)


def export_job(req: jobspec.JobRequest, src: source.Source, workdir: str, emit: Emit) -> dict:
    if not req.export_formats:
        raise InvalidArgument("an export job needs export_formats: ARTIFACT_FORMAT_ONNX, ARTIFACT_FORMAT_TORCHSCRIPT "
                              "and/or ARTIFACT_FORMAT_EXPORTED_PROGRAM")
    configs = [export.config_for(f) for f in dict.fromkeys(req.export_formats)]  # Unsupported before any work
    if src.module is None:
        raise Unsupported("an uploaded ONNX model is not re-exported; it already is the ONNX artifact, and it "
                          "cannot be turned back into torchscript or an exported program")
    environment = env.environment(DEVICE)
    refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1, device=DEVICE)
    tol = accuracy.tolerances_for("fp32", req.tolerances)
    done = []
    for i, cfg in enumerate(configs):
        emit("export", f"{cfg.format}: writing and checking", 0.1 + 0.6 * i / len(configs))
        done.append(export.export(cfg, src, workdir, refs, tol))
    emit("benchmark", "timing eager fp32 and each artifact interleaved", 0.75)
    names = {"ARTIFACT_FORMAT_ONNX": "onnxruntime", "ARTIFACT_FORMAT_EXPORTED_PROGRAM": "kpt_O0",
             "ARTIFACT_FORMAT_TORCHSCRIPT": "torchscript"}
    variants = [var.Variant("eager_fp32", src.module)] + [
        var.Variant(names[d.format], d.loader, accuracy=d.accuracy) for d in done]
    rows = var.measure(variants, src.spec, req.bench, DEVICE, refs, req.tolerances)
    arts = []
    for d, row in zip(done, rows[1:], strict=True):
        m = d.accuracy.metrics
        meta = {"source_digest": src.digest, "source_name": src.name, "target": TARGET, "device": DEVICE,
                "device_name": environment["device_name"], "level": "LEVEL_O0", "passes": "", "precision": "fp32",
                "max_abs_err": f"{m.max_abs_err:.6g}", "rel_l2": f"{m.rel_l2:.6g}", "cosine": f"{m.cosine:.8f}",
                "env_fingerprint": environment["fingerprint"], "input_spec": inp.to_json(src.spec),
                **{k: v for k, v in environment.items() if k.startswith("toolchain.")}}
        if "latency" in row:
            meta.update(p50_ms=f"{row['latency']['p50_ms']:.4f}", p99_ms=f"{row['latency']['p99_ms']:.4f}")
        arts.append({"name": os.path.basename(d.path), "format": d.format, "metadata": meta})
    worst = done[0].accuracy
    for d in done[1:]:
        if d.accuracy.metrics.rel_l2 > worst.metrics.rel_l2:
            worst = d.accuracy
    emit("export", f"{len(arts)} artifact(s) ready", 0.97)
    return {"kind": "JOB_KIND_EXPORT", "artifacts": arts, "variants": rows, "accuracy": worst.to_dict(),
            "device": environment["device_name"], "backend": ",".join(names[d.format] for d in done),
            "environment": environment}
