"""The exported program the GPU compile lowers, and so the one the attention choice times.

torch.export of the candidate, then two exact rewrites: input-independent attention masks dropped or made
is_causal (kpt.gpu.masks), and, on a CUDA device, the fp32 cast of a bf16/fp16 output done by the GEMM that
produces it (kpt.gpu.casts); and one the O3 pass GeluEpilogue keeps where it measures faster: a linear layer's GELU
in its GEMM's epilogue (kpt.gpu.epilogues, the tanh approximation).
"""

from __future__ import annotations

import torch

from kpt.gpu import casts, epilogues
from kpt.gpu.masks import drop_static_masks
from kpt.optimize.passes import Work


def export_for_compile(work: Work, gemm_rewrites: bool = True) -> tuple[torch.export.ExportedProgram, str]:
    """The candidate's exported program, rewritten; returns what the rewrites did too ("" when nothing).
    gemm_rewrites=False leaves the fp32 output casts and the GELUs as they are (the compile pass's second try, see
    compile.py)."""
    ep = work.export()
    masks = drop_static_masks(ep, work.example())
    done = [f"attention masks: {masks}" if masks else ""]
    if gemm_rewrites and work.device.startswith("cuda"):
        if casts.supported():
            done.append(casts.fuse_output_casts(ep))
        if getattr(work.module, epilogues.ATTR, False) and epilogues.supported():
            done.append(epilogues.fuse_gelus(ep))
    return ep, "; ".join(d for d in done if d)
