"""What a model must at least cost on a GPU: FLOPs per call, and weight bytes read per decode step.

FLOPs are counted by torch.utils.flop_counter on one eager call (matmuls, convolutions and
attention; elementwise work is not counted, so the fraction of peak is a lower bound on how busy
the tensor cores were). Weight bytes per step count every parameter a step reads (all but the
embedding table, of which a step gathers one row per token) at the width the variant stores it.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

# Bytes per weight by precision label; int4 adds its bf16 scale and zero point per group of 128.
BYTES_PER_WEIGHT = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "fp8": 1.0, "int4": 0.5 + 4.0 / 128}


def flops(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*inputs)
    return int(counter.get_total_flops())


def weight_counts(module: torch.nn.Module) -> tuple[int, int]:
    """(weights of linear layers, other weights read per step), embedding tables excluded."""
    embeddings = {id(p) for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    linear = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear)}
    lin = other = 0
    seen: set[int] = set()
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in linear and id(p) not in embeddings:
            lin += p.numel()
        elif id(p) not in embeddings:
            other += p.numel()
    return lin, other


def step_bytes(module: torch.nn.Module, precision: str) -> float:
    """Weight bytes one step reads when linear weights are stored at `precision` (others at 2 bytes when
    reduced, 4 in fp32)."""
    lin, other = weight_counts(module)
    other_width = 4.0 if precision == "fp32" else 2.0
    return lin * BYTES_PER_WEIGHT[precision] + other * other_width
