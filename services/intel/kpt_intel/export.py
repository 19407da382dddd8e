"""Intel export formats: IPEX-frozen TorchScript, OpenVINO IR (one zip, see kpt.optimize.artifacts), and the
shared ONNX and exported-program exporters. Each artifact is loaded back and checked by kpt.optimize.export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kpt.errors import InvalidArgument, Unsupported
from kpt.optimize import export
from kpt.optimize import inputs as inp
from kpt.optimize.source import Source
from kpt_intel.passes import ipex_trace, write_openvino


@dataclass(frozen=True)
class IpexTorchScriptExport(export.ExportConfig):
    """fp32 ipex.optimize + trace + freeze: loading it needs intel_extension_for_pytorch."""

    format: ClassVar[str] = "ARTIFACT_FORMAT_TORCHSCRIPT"
    file: str = "model.ipex.torchscript.pt"


@dataclass(frozen=True)
class OpenVinoExport(export.ExportConfig):
    format: ClassVar[str] = "ARTIFACT_FORMAT_OPENVINO_IR"
    file: str = "model.openvino.zip"


def _ipex_torchscript(cfg: IpexTorchScriptExport, src: Source, path: str) -> str:
    frozen, _ = ipex_trace(src.module, "fp32", inp.generate(src.spec, seed=0, for_export=True))
    torch.jit.save(frozen, path)
    return path


def _openvino(cfg: OpenVinoExport, src: Source, path: str) -> str:
    try:
        return write_openvino(src.module, src.spec, path, "fp32")
    except Exception as e:  # noqa: BLE001 - OpenVINO's conversion errors share no base class; typed here
        raise Unsupported(f"OpenVINO cannot convert this model: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:400] if str(e).strip() else ''}") from e


export.EXPORTERS[IpexTorchScriptExport] = _ipex_torchscript
export.EXPORTERS[OpenVinoExport] = _openvino

CONFIGS: dict[str, type[export.ExportConfig]] = {
    "ARTIFACT_FORMAT_TORCHSCRIPT": IpexTorchScriptExport,
    "ARTIFACT_FORMAT_ONNX": export.OnnxExport,
    "ARTIFACT_FORMAT_OPENVINO_IR": OpenVinoExport,
    "ARTIFACT_FORMAT_EXPORTED_PROGRAM": export.ProgramExport,
}
BACKENDS = {"ARTIFACT_FORMAT_TORCHSCRIPT": "ipex-torchscript", "ARTIFACT_FORMAT_ONNX": "onnxruntime",
            "ARTIFACT_FORMAT_OPENVINO_IR": "openvino", "ARTIFACT_FORMAT_EXPORTED_PROGRAM": "kpt_O0"}


def config_for(format_name: str) -> export.ExportConfig:
    if format_name in CONFIGS:
        return CONFIGS[format_name]()
    if format_name in ("ARTIFACT_FORMAT_AOTI_PACKAGE", "ARTIFACT_FORMAT_STABLEHLO"):
        raise Unsupported(f"{format_name} is not an export format of the intel service; export formats here: "
                          f"{', '.join(CONFIGS)}")
    raise InvalidArgument(f"unknown export format {format_name!r}; one of {', '.join(CONFIGS)}")
