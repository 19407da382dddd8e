"""What this Intel-service host offers (kpt.v1.TargetInfo as a protobuf JSON dict): the CPU and the ISA
features IPEX/oneDNN pick kernels by, XPU devices when torch.xpu has any, toolchain versions. Versions come
from package metadata (no IPEX or OpenVINO import)."""

from __future__ import annotations

import importlib.metadata

import torch

from kpt.optimize import env

FORMATS = ("ARTIFACT_FORMAT_EXPORTED_PROGRAM", "ARTIFACT_FORMAT_TORCHSCRIPT", "ARTIFACT_FORMAT_ONNX",
           "ARTIFACT_FORMAT_OPENVINO_IR")
# The ISA features that decide IPEX/oneDNN/OpenVINO kernels, reported as isa.<name> = yes|no.
ISA = {"avx2": ("avx2",), "avx512": ("avx512f", "avx512bw", "avx512vl"), "avx512_bf16": ("avx512_bf16",),
       "vnni": ("avx512_vnni", "avx_vnni"), "amx": ("amx_tile", "amx_bf16", "amx_int8"), "avx512_fp16": ("avx512_fp16",)}
PACKAGES = ("intel_extension_for_pytorch", "openvino")


def isa(flags: frozenset[str]) -> dict[str, str]:
    """isa.<feature> -> "yes (flags)" | "no". avx512 needs all of F/BW/VL (oneDNN's avx512_core);
    vnni and amx count any of their flags."""
    out = {}
    for name, needed in ISA.items():
        have = [f for f in needed if f in flags]
        ok = len(have) == len(needed) if name == "avx512" else bool(have)
        out[f"isa.{name}"] = f"yes ({','.join(have)})" if ok else "no"
    return out


def xpu_devices() -> list[str]:
    """Names of the Intel GPUs torch's own xpu backend sees (empty without one, or on a torch without xpu)."""
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        return []
    return [xpu.get_device_name(i) for i in range(xpu.device_count())]


def capability(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
    info = env.cpu_info(cpuinfo_path)
    precisions = env.cpu_precisions(info.flags)
    toolchain = env.toolchain()
    for pkg in PACKAGES:
        try:
            toolchain[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            toolchain[pkg] = "missing"
    toolchain["cpu_flags"] = ",".join(f for f in env.RELEVANT_FLAGS if f in info.flags)
    toolchain.update(isa(info.flags))
    missing = [p for p in PACKAGES if toolchain[p] == "missing"]
    reason = ""
    if missing:
        reason = f"{', '.join(missing)} not installed: build services/intel/.venv from services/intel/requirements.txt"
    elif "avx2" not in info.flags:
        reason = f"{info.model} lacks AVX2, the least IPEX 2.8's CPU kernels need"
    xpus = xpu_devices()
    # Jobs run on the CPU; XPU devices are reported so a scheduler and the user see them.
    toolchain["xpu_devices"] = ";".join(xpus) if xpus else "none (torch.xpu.is_available() is False)"
    return env.cpu_target_info("TARGET_INTEL", info, precisions, list(FORMATS), toolchain, reason)
