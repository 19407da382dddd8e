"""The GPU a job process sees (it sees exactly one: its worker's slot), read through torch.

PyTorch's ROCm build answers the torch.cuda API for AMD GPUs, so one probe serves both vendors;
`kind` says which build the service needs ("cuda" or "rocm"). Anything that makes the device
unusable comes back as a reason string, which the service turns into UNAVAILABLE.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

# The torch device of a job process, with its index. A job process sees exactly one GPU (its worker slot's
# CUDA/HIP/ROCR_VISIBLE_DEVICES name it), so that is always index 0; ROCm builds keep the cuda name. The index
# matters: torch.export records devices as given, and a program moved to "cuda" carries device=cuda in its
# _assert_tensor_metadata checks, which then fail against tensors on cuda:0 when the program is traced again
# ("Tensor device mismatch! Expected: cuda, Got: cuda:0", seen on the H100 with torch 2.11).
DEVICE = "cuda:0"


def normalize(device: str | torch.device) -> str:
    """The device as torch names a tensor's: "cuda" -> "cuda:<current index>", "cpu" and indexed devices unchanged.
    Every device that reaches torch.export (inputs, modules, move_to_device_pass) goes through here."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return str(d)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    count: int  # devices this process sees (one per worker slot)
    memory_bytes: int
    arch: str  # "sm_90" on NVIDIA, the gfx target ("gfx942") on AMD
    major: int
    minor: int
    runtime: str  # "cuda 13.0" or "hip 7.0.51831"
    uuid: str
    sm_count: int
    l2_bytes: int
    memory_clock_khz: int
    memory_bus_bits: int

    @property
    def capability(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def peak_memory_bandwidth(self) -> float:
        """Bytes/s from the memory clock and bus width the driver reports (double data rate); 0 if unknown."""
        return 2.0 * self.memory_clock_khz * 1e3 * self.memory_bus_bits / 8


def gfx_target(gcn_arch_name: str) -> str:
    """The gfx target of a ROCm device: "gfx942:sramecc+:xnack-" -> "gfx942"."""
    return gcn_arch_name.split(":", 1)[0].strip()


def _build_reason(kind: str) -> str | None:
    """Why this torch build cannot drive a `kind` GPU at all, or None."""
    hip, cuda = getattr(torch.version, "hip", None), getattr(torch.version, "cuda", None)
    if kind == "cuda":
        if hip:
            return f"torch {torch.__version__} is a ROCm build (HIP {hip}); the nvidia service needs a CUDA build"
        if not cuda:
            return f"torch {torch.__version__} is a CPU-only build (no CUDA runtime)"
    elif kind == "rocm":
        if not hip:
            return (f"torch {torch.__version__} is not a ROCm build"
                    + (f" (it is built for CUDA {cuda})" if cuda else " (CPU-only)")
                    + "; the amd service needs a ROCm build of torch")
    else:
        raise ValueError(f"kind must be 'cuda' or 'rocm', not {kind!r}")
    return None


def _visibility() -> str:
    names = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
    set_ = [f"{n}={os.environ[n]!r}" for n in names if n in os.environ]
    return ", ".join(set_) if set_ else "no *_VISIBLE_DEVICES set"


def probe(kind: str) -> GpuInfo | str:
    """The GPU this process may use, or the reason there is none."""
    why = _build_reason(kind)
    if why:
        return why
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except RuntimeError as e:  # driver too old for the runtime, broken install
        return f"the GPU runtime fails to initialise: {str(e).strip().splitlines()[0]}"
    if not available or count == 0:
        vendor = "NVIDIA driver" if kind == "cuda" else "amdgpu/ROCm driver"
        return f"no GPU is visible to this process ({_visibility()}); check the {vendor} and the device mounts"
    try:
        p = torch.cuda.get_device_properties(0)
    except RuntimeError as e:
        return f"cannot read the GPU's properties: {str(e).strip().splitlines()[0]}"
    if kind == "rocm":
        arch = gfx_target(getattr(p, "gcnArchName", "") or "")
        runtime = f"hip {torch.version.hip}"
    else:
        arch = f"sm_{p.major}{p.minor}"
        runtime = f"cuda {torch.version.cuda}"
    return GpuInfo(name=p.name, count=count, memory_bytes=int(p.total_memory), arch=arch, major=int(p.major),
                   minor=int(p.minor), runtime=runtime, uuid=str(getattr(p, "uuid", "")),
                   sm_count=int(p.multi_processor_count), l2_bytes=int(getattr(p, "L2_cache_size", 0)),
                   memory_clock_khz=int(getattr(p, "memory_clock_rate", 0)),
                   memory_bus_bits=int(getattr(p, "memory_bus_width", 0)))
