"""Export jobs on a GPU: onnx, torchscript and exported_program, each loaded back and checked.

  onnx              exported from a CPU copy of the model (the file is device-neutral; an upload's copy is its
                    program moved back to the CPU, see cpu_source), validated in
                    onnxruntime with the vendor's GPU execution provider when this onnxruntime has it
                    (CUDA; MIGraphX, then ROCm on AMD), else with the CPU provider; the result names it
  torchscript       traced on the GPU, loaded back onto the GPU
  exported_program  exported with inputs on the GPU (weights saved as GPU tensors), loaded back through
                    the guarded loader
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from dataclasses import dataclass

import torch

from kpt.errors import AccuracyFailed, InvalidModel, Unsupported
from kpt.gpu.models import program
from kpt.optimize import accuracy, artifacts, export, ort
from kpt.optimize import inputs as inp
from kpt.optimize.source import Source

log = logging.getLogger(__name__)


def providers_for(preferred: tuple[str, ...], available: list[str] | None = None) -> list[str]:
    """The preferred execution providers onnxruntime has (available: onnxruntime.get_available_providers()),
    best first, then the CPU provider (all there is when onnxruntime is not installed: ort_session says so)."""
    if available is None:
        try:
            import onnxruntime
        except ImportError:
            return ["CPUExecutionProvider"]
        available = onnxruntime.get_available_providers()
    return [p for p in preferred if p in available] + ["CPUExecutionProvider"]


def ort_session(path: str, providers: list[str]):
    """kpt.optimize.ort.session's options (no spinning, all graph optimizations) on the given providers."""
    try:
        import onnxruntime
    except ImportError as e:
        raise Unsupported(f"onnxruntime is not installed in this service: {e}") from e

    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(path, so, providers=providers)
    except ort.errors() as e:
        raise InvalidModel(f"onnxruntime cannot load {path} with {providers}: {type(e).__name__}: {e}") from e


def cpu_source(src: Source) -> Source:
    """A CPU copy of the job's model, for exporters that trace it with CPU inputs (onnx). An upload is its program
    moved back with move_to_device_pass: the GPU program's graph names cuda:0 in its constants and device checks,
    which Module.cpu() would leave behind (the trace would then fail: "Tensor device mismatch")."""
    if src.program is not None:
        from torch.export.passes import move_to_device_pass

        ep = move_to_device_pass(copy.deepcopy(src.program), "cpu")
        return Source(src.name, src.digest, src.format, src.spec, module=ep.module(), program=ep)
    return Source(src.name, src.digest, src.format, src.spec, module=copy.deepcopy(src.module).cpu())


@dataclass(frozen=True)
class Written:
    exported: export.Exported
    backend: str  # what ran the check: "onnxruntime:CUDAExecutionProvider", "torchscript:cuda", ...


def _write(cfg: export.ExportConfig, src: Source, path: str, device: str) -> None:
    if isinstance(cfg, export.OnnxExport):
        export.EXPORTERS[export.OnnxExport](cfg, cpu_source(src), path)
    elif isinstance(cfg, export.TorchScriptExport):
        example = inp.generate(src.spec, seed=0, device=device, for_export=True)
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            traced = torch.jit.trace(src.module, example, check_trace=False, strict=False)
            traced = torch.jit.freeze(traced.eval()) if cfg.freeze else traced
        torch.jit.save(traced, path)
    elif isinstance(cfg, export.ProgramExport):
        torch.export.save(program(src, device), path)
    else:
        raise Unsupported(f"{cfg.format} is not an export format of the GPU services")


def _load(cfg: export.ExportConfig, path: str, device: str, providers: list[str]) -> tuple[artifacts.Loaded, str]:
    if isinstance(cfg, export.OnnxExport):
        sess = ort_session(path, providers)
        used = sess.get_providers()[0]
        return artifacts.Loaded(lambda *a: ort.run(sess, a), cfg.format, path), f"onnxruntime:{used}"
    if isinstance(cfg, export.TorchScriptExport):
        try:
            module = torch.jit.load(path, map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            raise InvalidModel(f"cannot load TorchScript archive {path}: {e}") from e
        return artifacts.Loaded(module, cfg.format, path), f"torchscript:{device}"
    return artifacts.load(path, cfg.format), f"torch.export eager:{device}"


def run(cfg: export.ExportConfig, src: Source, workdir: str, refs: list, tol: accuracy.Tolerances, device: str,
        providers: list[str]) -> Written:
    """Write the artifact, load it back, check it; AccuracyFailed when it is outside tolerance."""
    path = os.path.join(workdir, cfg.file)
    try:
        _write(cfg, src, path, device)
    except ImportError as e:  # the onnx exporter needs onnxscript
        raise Unsupported(f"{cfg.format} export needs {e.name or 'a package'} installed in this service: {e}") from e
    except (RuntimeError, TypeError, ValueError, torch.onnx.errors.OnnxExporterError) as e:
        raise Unsupported(f"{cfg.format} export failed for this model: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    loaded, backend = _load(cfg, path, device, providers)
    report = accuracy.check(loaded, refs, tol)
    if not report.passed:
        raise AccuracyFailed(f"{cfg.format} artifact differs from eager fp32 ({backend}): {report.summary()}")
    return Written(export.Exported(path, cfg.format, report, loaded), backend)
