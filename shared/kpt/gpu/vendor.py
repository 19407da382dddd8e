"""What a GPU service supplies to the shared GPU code: the only vendor-specific parts.

Each service (kpt_nvidia, kpt_amd) builds one Vendor: its precision table, how it reads driver
versions and clocks, its onnxruntime execution providers, and its runtime settings. Everything
else (passes, compilation, CUDA graphs, benchmarks, jobs) is shared and takes the Vendor.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch-free at import: the service parent imports this module
    from kpt.gpu.device import GpuInfo

# Precision enum names (kpt.v1.Precision) a job may ask for -> what the device must have.
CONTRACT = ("PRECISION_FP32", "PRECISION_BF16", "PRECISION_FP16", "PRECISION_INT8", "PRECISION_FP8", "PRECISION_INT4")


@dataclass(frozen=True)
class Precisions:
    """The precisions one device computes natively; fp8 is the torch dtype name of its float8 format."""

    bf16: bool
    fp16: bool = True
    int8: bool = True
    int4: bool = False  # int4 weight-only (tinygemm packed weights)
    fp8: str = ""  # "float8_e4m3fn" (OCP) or "float8_e4m3fnuz" (MI300); "" when none
    why: tuple[str, ...] = field(default=())  # one line per precision left out, for reports

    def __post_init__(self) -> None:
        if self.fp8 not in ("", "float8_e4m3fn", "float8_e4m3fnuz"):
            raise ValueError(f"fp8 must be '', 'float8_e4m3fn' or 'float8_e4m3fnuz', not {self.fp8!r}")

    def contract(self) -> list[str]:
        """The kpt.v1.Precision names this device offers, in enum order."""
        have = {"PRECISION_FP32": True, "PRECISION_BF16": self.bf16, "PRECISION_FP16": self.fp16,
                "PRECISION_INT8": self.int8, "PRECISION_FP8": bool(self.fp8), "PRECISION_INT4": self.int4}
        return [p for p in CONTRACT if have[p]]

    @property
    def low(self) -> str:
        """The reduced float precision O2 uses: bf16 where native (fp32's range), else fp16."""
        return "bf16" if self.bf16 else "fp16"

    @property
    def fp8_format(self) -> str:
        return {"float8_e4m3fn": "e4m3fn", "float8_e4m3fnuz": "e4m3fnuz"}.get(self.fp8, "none")


def with_libraries(table: Precisions) -> Precisions:
    """table less what this environment cannot build: int8, fp8 and int4 are torchao's quantization schemes on
    a GPU (kpt.gpu.quantize), so without torchao installed they are not offered."""
    if importlib.util.find_spec("torchao") is not None or not (table.int8 or table.fp8 or table.int4):
        return table
    return replace(table, int8=False, fp8="", int4=False,
                   why=(*table.why, "torchao is not installed: no int8, fp8 or int4 quantization"))


@dataclass(frozen=True)
class Vendor:
    name: str  # "nvidia" | "amd": the service's target short name
    target: str  # kpt.v1.Target enum name
    kind: str  # "cuda" | "rocm": which torch build it needs, and TargetInfo.device_kind
    precisions: Callable[[GpuInfo], Precisions]
    versions: Callable[[GpuInfo], dict[str, str]]  # driver, clocks, vendor library versions (strings)
    onnx_providers: tuple[str, ...]  # onnxruntime execution providers to use when present, best first
    # runtime settings of a job process, given KPT_CACHE_DIR and its GPU; returns what it set
    configure: Callable[[str, GpuInfo], list[str]] = lambda cache_dir, info: []

    def table(self, info: GpuInfo) -> Precisions:
        """The device's precisions less what this environment's libraries cannot build (with_libraries)."""
        return with_libraries(self.precisions(info))

    def __post_init__(self) -> None:
        if self.kind not in ("cuda", "rocm"):
            raise ValueError(f"kind must be 'cuda' or 'rocm', not {self.kind!r}")
