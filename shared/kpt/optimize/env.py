"""Where a measurement ran: host CPU, the flags that decide kernels, threads, toolchain versions."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

# CPU flags that change which kernels run (bf16/int8 dot products, vector width).
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")
TOOLCHAIN_PACKAGES = ("torch", "transformers", "torchao", "onnx", "onnxruntime", "onnxscript", "openvino")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]


def parse_cpuinfo(text: str) -> CpuInfo:
    model, flags = "unknown cpu", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown cpu":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model, flags)


@functools.lru_cache(maxsize=4)
def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    try:
        with open(path) as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CpuInfo(platform.processor() or "unknown cpu", frozenset())


# Native bf16 dot products: AVX512-BF16 (Cooper Lake, Zen 4+), AMX-BF16 (Sapphire Rapids+). Without them
# bf16 is emulated through fp32 conversions and runs slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_decision(flags: frozenset[str]) -> tuple[bool, str]:
    """(use bf16?, why) for a CPU with these /proc/cpuinfo flags."""
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, f"CPU has native bf16 ({', '.join(found)})"
    return False, ("CPU lacks avx512_bf16 and amx_bf16: bf16 would be emulated through fp32 and run slower "
                   "than fp32, so the model stays fp32")


def bf16_for_job(allowed: frozenset[str], cpuinfo_path: str = "/proc/cpuinfo") -> tuple[bool, str]:
    """(compute in bf16?, why) for a job allowing `allowed` precisions on this CPU."""
    if "bf16" not in allowed:
        return False, "the job's precision excludes bf16"
    return bf16_decision(cpu_info(cpuinfo_path).flags)


def cpu_precisions(flags: frozenset[str]) -> list[str]:
    """The contract's precisions a service computing on this CPU offers: fp32, bf16 where native, int8."""
    return ["PRECISION_FP32"] + (["PRECISION_BF16"] if bf16_decision(flags)[0] else []) + ["PRECISION_INT8"]


def memory_bytes() -> int:
    """Physical memory, or the cgroup limit where one is lower (what a container may really use)."""
    total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit)) if total else int(limit)
    except OSError:
        pass
    return total


def cpu_target_info(target: str, info: CpuInfo, precisions: list[str], formats: list[str],
                    toolchain: dict[str, str], reason: str = "") -> dict:
    """kpt.v1.TargetInfo (a protobuf JSON dict) of a service that runs its jobs on this host's CPU."""
    return {
        "target": target,
        "device_name": info.model,
        "device_kind": "cpu",
        "device_count": len(os.sched_getaffinity(0)),
        "memory_bytes": str(memory_bytes()),
        "precisions": precisions,
        "formats": formats,
        "toolchain": toolchain,
        # cores: the latencies in a (cached) result depend on them as much as on the CPU model
        "toolchain_fingerprint": fingerprint({**toolchain, "cpu_model": info.model, "cores": str(cores())}),
        "available": not reason,
        "unavailable_reason": reason,
    }


def cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0))


@functools.lru_cache(maxsize=1)
def compiler_version() -> str:
    try:
        out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    return out.splitlines()[0] if out else "none"


# The code whose changes change a result: kpt itself, kernels/, and whichever service package this environment has.
CODE_PACKAGES = ("kpt", "kernels", "kpt_cpu", "kpt_nvidia", "kpt_amd", "kpt_tpu", "kpt_intel")


def code_digest_of(packages: tuple[str, ...]) -> str:
    """sha256 (16 hex digits) over the .py files of those packages found here (found by their spec, not imported),
    by relative path: any edit to the passes, kernels or a service changes it."""
    h = hashlib.sha256()
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a half-initialized module of that name: nothing to hash
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            for path in sorted(Path(root).rglob("*.py")):
                if "__pycache__" not in path.parts:
                    h.update(f"{name}/{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    return code_digest_of(CODE_PACKAGES)


def toolchain() -> dict[str, str]:
    """Versions from package metadata (no imports: cheap), plus python, the C++ compiler and kpt's own code
    (code_digest: a result cached before an upgrade of the passes is not served after it)."""
    out = {"kpt_code": code_digest()}
    for pkg in TOOLCHAIN_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["python"] = platform.python_version()
    out["compiler"] = compiler_version()
    return out


def fingerprint(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_info().model


def environment(device: str) -> dict[str, str]:
    """The fingerprint stored with every result (Result.environment)."""
    info = cpu_info()
    env = {
        "device": device,
        "device_name": device_name(device),
        "cpu_model": info.model,
        "cpu_flags": ",".join(f for f in RELEVANT_FLAGS if f in info.flags),
        "cores": str(cores()),
        "torch_threads": str(torch.get_num_threads()),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_1m": f"{os.getloadavg()[0]:.2f}",
        **{f"toolchain.{k}": v for k, v in toolchain().items()},
    }
    env["fingerprint"] = fingerprint({k: v for k, v in env.items() if k != "loadavg_1m"})
    return env
