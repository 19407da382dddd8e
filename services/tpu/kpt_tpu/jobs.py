"""One job on this service's XLA device: run(job, model_path, workdir, emit) -> kpt.v1.Result dict.

Runs in the worker's child process. Models are loaded, transformed and exported on the host; the
artifacts run on the XLA device (a TPU, or XLA's CPU device) and are timed there. Errors are
kpt.errors types.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from kpt.errors import AccuracyFailed, InvalidArgument, Unsupported
from kpt.optimize import accuracy, env, export, jobspec, pipeline, source
from kpt.optimize import inputs as inp
from kpt.optimize import variants as var
from kpt_tpu import artifact, runtime
from kpt_tpu.benchmark import benchmark, xla_timing
from kpt_tpu.levels import LEVELS

log = logging.getLogger(__name__)

TARGET, HOST = "TARGET_TPU", "cpu"  # models live on the host; artifacts run on the XLA device
Emit = Callable[[str, str, float], None]
SUPPORTED = {"PRECISION_UNSPECIFIED", "PRECISION_FP32", "PRECISION_BF16", "PRECISION_INT8"}
EXPORT_FORMATS = ("ARTIFACT_FORMAT_STABLEHLO", "ARTIFACT_FORMAT_EXPORTED_PROGRAM")
CHECK_SAMPLES = 3


def xla_environment() -> dict[str, str]:
    """The host fingerprint plus the XLA device that ran the job."""
    e = env.environment(HOST)
    e.update({"device": str(runtime.device()), "device_kind": runtime.device_kind(),
              "device_name": f"{runtime.device_kind()} ({runtime.device_type()} via PJRT)",
              "toolchain.torch_xla": artifact._versions()["torch_xla"]})
    e["fingerprint"] = env.fingerprint({k: v for k, v in e.items() if k not in ("loadavg_1m", "fingerprint")})
    return e


def _xla_counts(result: dict, n0: int, s0: float) -> dict:
    counts = {"xla.compilations": str(runtime.compilations() - n0),
              "xla.compile_s": f"{runtime.compile_seconds() - s0:.3f}"}
    result["environment"] = {**result.get("environment", {}), **counts}
    for art in result.get("artifacts", []):
        art["metadata"].update(counts)
    return result


def run(job: dict, model_path: str | None, workdir: str, emit: Emit) -> dict:
    req = jobspec.parse(job.get("spec", {}))
    if req.precision not in SUPPORTED:
        raise Unsupported(f"{req.precision} is not available on the TPU service; use PRECISION_FP32, "
                          "PRECISION_BF16 or PRECISION_INT8 (weight-only)")
    runtime.setup()
    n0, s0 = runtime.compilations(), runtime.compile_seconds()
    os.makedirs(workdir, exist_ok=True)
    src = source.open_for_job(req, model_path, HOST, emit, ready_note=f"; device {runtime.device_kind()}")
    if src.module is None:
        raise Unsupported("the TPU service runs torch models: upload a torch.export ExportedProgram (.pt2); "
                          "ONNX models are served by the cpu service")
    environment = xla_environment()
    if req.kind == "JOB_KIND_OPTIMIZE":
        res = pipeline.optimize(src, LEVELS, req.level, TARGET, HOST, req.allowed, req.tolerances, req.bench,
                                workdir, emit, samples=CHECK_SAMPLES, timing=xla_timing)
        res["device"], res["environment"] = environment["device_name"], {**res["environment"], **environment}
        for art in res["artifacts"]:
            art["metadata"].update(device=environment["device"], device_name=environment["device_name"],
                                   env_fingerprint=environment["fingerprint"])
    elif req.kind == "JOB_KIND_EXPORT":
        res = export_job(req, src, workdir, emit, environment)
    else:
        res = benchmark(req, src, workdir, emit, LEVELS, environment)
    return _xla_counts(res, n0, s0)


def export_job(req: jobspec.JobRequest, src: source.Source, workdir: str, emit: Emit, environment: dict) -> dict:
    if not req.export_formats:
        raise InvalidArgument("an export job needs export_formats: ARTIFACT_FORMAT_STABLEHLO and/or "
                              "ARTIFACT_FORMAT_EXPORTED_PROGRAM")
    for f in req.export_formats:
        if f not in EXPORT_FORMATS:
            raise Unsupported(f"{f} is not an export format of the TPU service; use {' or '.join(EXPORT_FORMATS)}")
    refs = accuracy.reference_outputs(src.module, src.spec, CHECK_SAMPLES, seed=1)
    tol = accuracy.tolerances_for("fp32", req.tolerances)
    done = []
    for i, fmt in enumerate(dict.fromkeys(req.export_formats)):
        emit("export", f"{fmt}: writing and checking", 0.1 + 0.6 * i / len(req.export_formats))
        if fmt == "ARTIFACT_FORMAT_STABLEHLO":
            path = os.path.join(workdir, "model.stablehlo.zip")
            artifact.write(src.module, src.spec, "fp32", path)
            loaded = artifact.load(path)
            report = accuracy.check(loaded, refs, tol)
            # the StableHLO program itself, at its static example shapes
            shlo = artifact.load_stablehlo(path)
            x = inp.generate(src.spec, seed=7)
            shlo_m = accuracy.compare(shlo(*x), src.module(*x))
            if not report.passed or not accuracy.passes(shlo_m, tol, quantized=False):
                raise AccuracyFailed(f"StableHLO artifact differs from eager fp32: {report.summary()}; "
                                     f"StableHLO program rel_l2={shlo_m.rel_l2:.3g}")
            done.append(export.Exported(path, fmt, report, loaded))
        else:
            done.append(export.export(export.ProgramExport(), src, workdir, refs, tol))
    emit("benchmark", "timing eager fp32 and each artifact interleaved", 0.75)
    names = {"ARTIFACT_FORMAT_STABLEHLO": "xla_stablehlo", "ARTIFACT_FORMAT_EXPORTED_PROGRAM": "kpt_O0"}
    variants = [var.Variant("eager_fp32", src.module)] + [
        var.Variant(names[d.format], d.loader, accuracy=d.accuracy) for d in done]
    rows = var.measure(variants, src.spec, req.bench, HOST, refs, req.tolerances, timing=xla_timing)
    arts = []
    for d, row in zip(done, rows[1:], strict=True):
        m = d.accuracy.metrics
        meta = {"source_digest": src.digest, "source_name": src.name, "target": TARGET,
                "device": environment["device"], "device_name": environment["device_name"], "level": "LEVEL_O0",
                "passes": "", "precision": "fp32", "max_abs_err": f"{m.max_abs_err:.6g}", "rel_l2": f"{m.rel_l2:.6g}",
                "cosine": f"{m.cosine:.8f}", "env_fingerprint": environment["fingerprint"],
                "input_spec": inp.to_json(src.spec),
                **{k: v for k, v in environment.items() if k.startswith("toolchain.")}}
        if "latency" in row:
            meta.update(p50_ms=f"{row['latency']['p50_ms']:.4f}", p99_ms=f"{row['latency']['p99_ms']:.4f}")
        arts.append({"name": os.path.basename(d.path), "format": d.format, "metadata": meta})
    worst = max((d.accuracy for d in done), key=lambda a: a.metrics.rel_l2)
    emit("export", f"{len(arts)} artifact(s) ready", 0.97)
    return {"kind": "JOB_KIND_EXPORT", "artifacts": arts, "variants": rows, "accuracy": worst.to_dict(),
            "device": environment["device_name"], "backend": ",".join(names[d.format] for d in done),
            "environment": environment}
