"""Exporters: onnx, torchscript, exported_program. Each writes a file, loads it back through the
public loader and checks it against eager fp32 on fresh inputs (onnx: in onnxruntime)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from kpt.errors import AccuracyFailed, InvalidArgument, Unsupported
from kpt.optimize import accuracy, artifacts
from kpt.optimize import inputs as inp
from kpt.optimize.source import Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    format: ClassVar[str] = ""
    file: str = ""


@dataclass(frozen=True)
class OnnxExport(ExportConfig):
    format: ClassVar[str] = "ARTIFACT_FORMAT_ONNX"
    file: str = "model.onnx"
    opset: int = 18

    def __post_init__(self) -> None:
        if not 17 <= self.opset <= 23:
            raise ValueError(f"opset {self.opset} is outside what the dynamo exporter supports here (17-23)")


@dataclass(frozen=True)
class TorchScriptExport(ExportConfig):
    format: ClassVar[str] = "ARTIFACT_FORMAT_TORCHSCRIPT"
    file: str = "model.torchscript.pt"
    freeze: bool = True  # torch.jit.freeze: weights inlined as constants, eval-mode folding


@dataclass(frozen=True)
class ProgramExport(ExportConfig):
    format: ClassVar[str] = "ARTIFACT_FORMAT_EXPORTED_PROGRAM"
    file: str = "model.pt2"


Exporter = Callable[[ExportConfig, Source, str], str]
EXPORTERS: dict[type[ExportConfig], Exporter] = {}


def _exporter(cfg_type: type[ExportConfig]) -> Callable[[Exporter], Exporter]:
    def deco(fn: Exporter) -> Exporter:
        EXPORTERS[cfg_type] = fn
        return fn
    return deco


@_exporter(OnnxExport)
def _onnx(cfg: OnnxExport, src: Source, path: str) -> str:
    example = inp.generate(src.spec, seed=0, for_export=True)
    # the dynamo exporter prints its progress to stdout; keep it out of the job's output
    with contextlib.redirect_stdout(io.StringIO()) as out:
        torch.onnx.export(src.exported(), example, path, dynamo=True, opset_version=cfg.opset, external_data=False)
    log.debug("onnx export: %s", out.getvalue())
    return path


@_exporter(TorchScriptExport)
def _torchscript(cfg: TorchScriptExport, src: Source, path: str) -> str:
    example = inp.generate(src.spec, seed=0, for_export=True)
    with torch.no_grad():
        traced = torch.jit.trace(src.module, example, check_trace=False, strict=False)
        traced = torch.jit.freeze(traced.eval()) if cfg.freeze else traced
    torch.jit.save(traced, path)
    return path


@_exporter(ProgramExport)
def _program(cfg: ProgramExport, src: Source, path: str) -> str:
    torch.export.save(src.exported(), path)
    return path


def config_for(format_name: str) -> ExportConfig:
    """The default exporter config for an ArtifactFormat enum name; Unsupported for the others."""
    for cfg_type in EXPORTERS:
        if cfg_type.format == format_name:
            return cfg_type()
    if format_name in ("ARTIFACT_FORMAT_STABLEHLO", "ARTIFACT_FORMAT_OPENVINO_IR", "ARTIFACT_FORMAT_AOTI_PACKAGE"):
        raise Unsupported(f"{format_name} is not an export format of this service; export formats here: "
                          f"{', '.join(t.format for t in EXPORTERS)} (AOTI packages come from optimize jobs)")
    raise InvalidArgument(f"unknown export format {format_name!r}")


@dataclass(frozen=True)
class Exported:
    path: str
    format: str
    accuracy: accuracy.Report
    loader: artifacts.Loaded


def export(cfg: ExportConfig, src: Source, workdir: str, refs: list, tol: accuracy.Tolerances) -> Exported:
    """Write the artifact, load it back, check it; AccuracyFailed when it is outside tolerance."""
    fn = EXPORTERS[type(cfg)]
    path = os.path.join(workdir, cfg.file)
    try:
        fn(cfg, src, path)
    except (RuntimeError, TypeError, ValueError, torch.onnx.errors.OnnxExporterError) as e:
        raise Unsupported(f"{cfg.format} export failed for this model: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    loaded = artifacts.load(path, cfg.format)
    report = accuracy.check(loaded, refs, tol)
    if not report.passed:
        hint = " (TorchScript tracing records shapes as constants: use static dims)" if isinstance(
            cfg, TorchScriptExport) else ""
        raise AccuracyFailed(f"{cfg.format} artifact differs from eager fp32: {report.summary()}{hint}")
    return Exported(path, cfg.format, report, loaded)
