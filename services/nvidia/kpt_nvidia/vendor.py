"""What is NVIDIA-specific: the precision table by compute capability, and nvidia-smi for the driver,
VBIOS, clocks and power limit. Everything else is kpt.gpu, shared with the AMD service."""

from __future__ import annotations

import logging
import os
import subprocess
from typing import TYPE_CHECKING, Callable

from kpt.gpu.vendor import Precisions, Vendor

if TYPE_CHECKING:  # torch-free at import: the service parent imports this module
    from kpt.gpu.device import GpuInfo

log = logging.getLogger(__name__)

# nvidia-smi --query-gpu fields -> our keys (gpu.<key> in Result.environment)
SMI_FIELDS = {
    "uuid": "uuid", "driver_version": "driver", "vbios_version": "vbios", "clocks.sm": "clocks_sm_mhz",
    "clocks.mem": "clocks_mem_mhz", "clocks.max.sm": "clocks_max_sm_mhz", "clocks.max.mem": "clocks_max_mem_mhz",
    "clocks.applications.graphics": "clocks_app_sm_mhz", "power.limit": "power_limit_w", "power.draw": "power_draw_w",
    "persistence_mode": "persistence", "pstate": "pstate", "temperature.gpu": "temperature_c",
    "ecc.mode.current": "ecc", "mig.mode.current": "mig",
}
Run = Callable[..., subprocess.CompletedProcess]


def precisions(major: int, minor: int) -> Precisions:
    """Native precisions of compute capability major.minor:
    bf16 and the int4 tinygemm kernels (aten._weight_int4pack_mm) from sm80 (Ampere); fp8 e4m3fn tensor
    cores (torch._scaled_mm) from sm89 (Ada, Hopper, Blackwell); fp16 and int8 tensor cores from sm75."""
    cc = (major, minor)
    why = []
    if cc < (8, 0):
        why.append(f"no bf16 or int4 kernels below sm80 (this is sm{major}{minor})")
    if cc < (8, 9):
        why.append(f"no fp8 tensor cores below sm89 (this is sm{major}{minor})")
    if cc < (7, 5):
        why.append(f"no int8 tensor cores below sm75 (this is sm{major}{minor})")
    return Precisions(bf16=cc >= (8, 0), fp16=cc >= (5, 3), int8=cc >= (7, 5), int4=cc >= (8, 0),
                      fp8="float8_e4m3fn" if cc >= (8, 9) else "", why=tuple(why))


def parse_smi(text: str, fields: list[str]) -> list[dict[str, str]]:
    rows = []
    for line in text.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) == len(fields):
            rows.append({SMI_FIELDS[f]: v for f, v in zip(fields, values, strict=True) if v and not v.startswith("[")})
    return rows


def pick(rows: list[dict[str, str]], uuid: str, visible: str | None) -> dict[str, str] | None:
    """The nvidia-smi row of this process's GPU: by UUID (torch reports it), else the only row."""
    want = uuid.lower().removeprefix("gpu-")
    if want:
        for r in rows:
            if r.get("uuid", "").lower().removeprefix("gpu-") == want:
                return r
    if visible and visible.startswith("GPU-"):
        for r in rows:
            if r.get("uuid", "").lower() == visible.lower():
                return r
    return rows[0] if len(rows) == 1 else None


def versions(info: GpuInfo, run: Run = subprocess.run) -> dict[str, str]:
    fields = list(SMI_FIELDS)
    try:
        out = run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                  capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"driver": f"unknown (nvidia-smi: {e.__class__.__name__})"}
    if out.returncode != 0:
        return {"driver": f"unknown (nvidia-smi exit {out.returncode})"}
    rows = parse_smi(out.stdout, fields)
    row = pick(rows, info.uuid, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if row is None:  # several GPUs and none matched: only what all share
        drivers = {r.get("driver", "") for r in rows}
        return {"driver": drivers.pop() if len(drivers) == 1 else "unknown", "clocks": "unmatched GPU"}
    row.pop("uuid", None)
    return row


VENDOR = Vendor(name="nvidia", target="TARGET_NVIDIA", kind="cuda",
                precisions=lambda info: precisions(info.major, info.minor), versions=versions,
                onnx_providers=("CUDAExecutionProvider",))
