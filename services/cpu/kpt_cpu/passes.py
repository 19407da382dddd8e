"""CPU-specific passes: bf16 only where the CPU computes it natively."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kpt.optimize import env
from kpt.optimize.env import bf16_decision
from kpt.optimize.graph_passes import cast_module
from kpt.optimize.passes import Outcome, PassConfig, Work, register

__all__ = ["NativeBF16", "bf16_decision"]


@dataclass(frozen=True)
class NativeBF16(PassConfig):
    name: ClassVar[str] = "bf16_native"
    cpuinfo_path: str = "/proc/cpuinfo"


@register(NativeBF16)
def _bf16(cfg: NativeBF16, work: Work) -> Outcome:
    use, why = env.bf16_for_job(work.allowed, cfg.cpuinfo_path)
    if not use:
        return Outcome(False, why)
    n = cast_module(work, torch.bfloat16, "bf16")
    return Outcome(True, f"{why}: {n} weight/buffer tensors cast to bf16; inputs and outputs stay fp32")
