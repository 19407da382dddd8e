"""Where a GPU measurement ran: the host fingerprint of kpt.optimize.env plus the GPU, its driver,
runtime, clocks and vendor libraries.

Clocks, power limit and persistence mode decide what a GPU measures, so the stable ones (maximum
and application clocks, power limit) enter the fingerprint; the volatile ones (current clocks,
temperature, performance state) are recorded next to it but left out of it.
"""

from __future__ import annotations

import importlib.metadata

import torch

from kpt.gpu.device import DEVICE, GpuInfo
from kpt.gpu.vendor import Vendor
from kpt.optimize import env

VOLATILE = ("loadavg_1m", "gpu.clocks_sm_mhz", "gpu.clocks_mem_mhz", "gpu.temperature_c", "gpu.pstate",
            "gpu.power_draw_w")


def toolchain(info: GpuInfo | None) -> dict[str, str]:
    """env.toolchain() plus triton and the GPU runtime and libraries torch was built with."""
    out = env.toolchain()
    try:
        out["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        pass
    if torch.version.cuda:
        out["cuda_runtime"] = torch.version.cuda
    if getattr(torch.version, "hip", None):
        out["hip_runtime"] = torch.version.hip
    if info is not None:
        try:
            v = torch.backends.cudnn.version()  # MIOpen's version on ROCm builds
        except RuntimeError:
            v = None
        if v:
            out["cudnn" if torch.version.cuda else "miopen"] = str(v)
    return out


def gpu_fields(vendor: Vendor, info: GpuInfo) -> dict[str, str]:
    return {"gpu.name": info.name, "gpu.arch": info.arch, "gpu.capability": info.capability,
            "gpu.memory_bytes": str(info.memory_bytes), "gpu.sm_count": str(info.sm_count),
            "gpu.l2_bytes": str(info.l2_bytes), "gpu.uuid": info.uuid, "gpu.runtime": info.runtime,
            "gpu.peak_memory_bandwidth_gbs": f"{info.peak_memory_bandwidth / 1e9:.0f}",
            **{f"gpu.{k}": v for k, v in vendor.versions(info).items()}}


def environment(vendor: Vendor, info: GpuInfo) -> dict[str, str]:
    """Result.environment for a job on this GPU; `fingerprint` covers everything but the volatile keys."""
    out = env.environment(DEVICE)
    out.update({f"toolchain.{k}": v for k, v in toolchain(info).items()})
    out.update(gpu_fields(vendor, info))
    out["device_name"] = info.name
    out["tf32"] = "off" if not (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32) else "on"
    out["fingerprint"] = env.fingerprint({k: v for k, v in out.items()
                                          if k not in VOLATILE and k != "fingerprint" and k != "gpu.uuid"})
    return out
