"""CPU-specific passes: bf16 only where the CPU computes it natively."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kpt.optimize import env
from kpt.optimize.graph_passes import cast_module
from kpt.optimize.passes import Outcome, PassConfig, Work, register

# Flags of native bf16 dot products: AVX512-BF16 (Cooper Lake, Zen 4+), AMX-BF16 (Sapphire Rapids+).
# Without them oneDNN/Inductor emulate bf16 through fp32 conversions, slower than plain fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_decision(flags: frozenset[str]) -> tuple[bool, str]:
    """(use bf16?, why) for a CPU with these /proc/cpuinfo flags."""
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, f"CPU has native bf16 ({', '.join(found)})"
    return False, ("CPU lacks avx512_bf16 and amx_bf16: bf16 would be emulated through fp32 and run slower "
                   "than fp32, so the model stays fp32")


@dataclass(frozen=True)
class NativeBF16(PassConfig):
    name: ClassVar[str] = "bf16_native"
    cpuinfo_path: str = "/proc/cpuinfo"


@register(NativeBF16)
def _bf16(cfg: NativeBF16, work: Work) -> Outcome:
    if "bf16" not in work.allowed:
        return Outcome(False, "the job's precision excludes bf16")
    use, why = bf16_decision(env.cpu_info(cfg.cpuinfo_path).flags)
    if not use:
        return Outcome(False, why)
    n = cast_module(work, torch.bfloat16, "bf16")
    return Outcome(True, f"{why}: {n} weight/buffer tensors cast to bf16; inputs and outputs stay fp32")
