"""One worker per visible GPU, worked out without torch: the service parent never imports it.

A slot is the environment of one worker's job processes (kpt.worker.serve.run(slots=...)). The
GPUs visible to the service come from the visibility variables it was started with (their
CUDA semantics: entries up to the first invalid one count) or, when none is set, from the
driver: `nvidia-smi` for NVIDIA, the KFD topology in sysfs for AMD (what ROCr itself reads).
With no GPU the service still runs one worker, with every GPU hidden from it: that worker
reports UNAVAILABLE and fails its jobs; it never runs them on the CPU.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

log = logging.getLogger(__name__)

KFD_NODES = "/sys/class/kfd/kfd/topology/nodes"
Run = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class Found:
    """GPUs the driver reports; count is None when it could not be asked (tool missing or failing)."""

    count: int | None
    note: str = ""


def parse_visible(value: str | None) -> list[str] | None:
    """A *_VISIBLE_DEVICES value as CUDA and HIP read it: None when unset; otherwise the entries
    before the first invalid one (a non-integer that is not a GPU-/MIG- UUID, a negative index,
    or a repeat): "0,2,-1,3" -> ["0", "2"], "" -> []."""
    if value is None:
        return None
    out: list[str] = []
    seen: set[int | str] = set()
    for raw in value.split(","):
        item = raw.strip()
        index = item.isascii() and item.isdigit()  # ASCII only: "²".isdigit() is true, yet it is no index
        if not (index or item.startswith(("GPU-", "MIG-"))):
            break
        key = int(item) if index else item  # "01" is GPU 1 again: a repeat
        if key in seen:
            break
        seen.add(key)
        out.append(item)
    return out


def _truncate(ids: list[str], count: int | None) -> list[str]:
    """Drop everything from the first index the driver does not have (CUDA ignores the rest too)."""
    if count is None:
        return ids
    for i, item in enumerate(ids):
        if item.isdigit() and int(item) >= count:
            return ids[:i]
    return ids


def nvidia_found(run: Run = subprocess.run) -> Found:
    """GPUs that nvidia-smi lists (CUDA enumerates the same devices; only the count is used)."""
    try:
        out = run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True, text=True,
                  timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Found(None, f"nvidia-smi could not run ({e.__class__.__name__}: {e})")
    if out.returncode != 0:
        first = (out.stderr or out.stdout).strip().splitlines()
        return Found(None, f"nvidia-smi failed: {first[0] if first else f'exit code {out.returncode}'}")
    return Found(sum(1 for line in out.stdout.splitlines() if line.strip().startswith("GPU-")))


def amd_found(nodes_dir: str = KFD_NODES) -> Found:
    """GPU nodes of the KFD topology: nodes whose properties list simd_count > 0 (CPU nodes have 0)."""
    root = Path(nodes_dir)
    if not root.is_dir():
        return Found(None, f"{nodes_dir} is missing: the amdgpu kernel driver (KFD) is not loaded here")
    count = 0
    for props in sorted(root.glob("*/properties")):
        try:
            fields = dict(line.split(None, 1) for line in props.read_text().splitlines() if " " in line)
        except OSError:
            continue
        if int(fields.get("simd_count", "0").strip() or 0) > 0:
            count += 1
    return Found(count)


def nvidia_slots(env: Mapping[str, str], found: Found) -> list[dict[str, str]]:
    """One slot per GPU: CUDA_VISIBLE_DEVICES set to one entry of the service's own list."""
    ids = parse_visible(env.get("CUDA_VISIBLE_DEVICES"))
    ids = [str(i) for i in range(found.count or 0)] if ids is None else _truncate(ids, found.count)
    if not ids:
        return [{"CUDA_VISIBLE_DEVICES": ""}]
    return [{"CUDA_VISIBLE_DEVICES": i} for i in ids]


def amd_slots(env: Mapping[str, str], found: Found) -> list[dict[str, str]]:
    """One slot per GPU. ROCR_VISIBLE_DEVICES selects physical devices (indices or UUIDs); HIP_VISIBLE_DEVICES,
    or CUDA_VISIBLE_DEVICES when it is unset, then indexes into that selection. Each slot names its device
    in ROCR_VISIBLE_DEVICES, the lowest-level mask, and resets the HIP and CUDA masks to "0" (its only device):
    a job process inherits the service's HIP/CUDA masks, which would otherwise index past its one device."""
    physical = parse_visible(env.get("ROCR_VISIBLE_DEVICES"))
    physical = [str(i) for i in range(found.count or 0)] if physical is None else _truncate(physical, found.count)
    hip_var = "HIP_VISIBLE_DEVICES" if "HIP_VISIBLE_DEVICES" in env else "CUDA_VISIBLE_DEVICES"
    chosen = parse_visible(env.get(hip_var))
    if chosen is not None:
        picked = []
        for item in chosen:
            if not item.isdigit() or int(item) >= len(physical):
                break  # HIP masks index the ROCR selection; anything else ends the list
            picked.append(physical[int(item)])
        physical = picked
    if not physical:
        return [{"ROCR_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": "", "CUDA_VISIBLE_DEVICES": ""}]
    return [{"ROCR_VISIBLE_DEVICES": p, "HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "0"} for p in physical]


def for_nvidia() -> list[dict[str, str]]:
    found = nvidia_found()
    slots = nvidia_slots(os.environ, found)
    log.info("nvidia: %s GPU(s) found%s; %d worker slot(s): %s", "?" if found.count is None else found.count,
             f" ({found.note})" if found.note else "", len(slots), slots)
    return slots


def for_amd() -> list[dict[str, str]]:
    found = amd_found()
    slots = amd_slots(os.environ, found)
    log.info("amd: %s GPU(s) found%s; %d worker slot(s): %s", "?" if found.count is None else found.count,
             f" ({found.note})" if found.note else "", len(slots), slots)
    return slots
