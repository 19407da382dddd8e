"""What O0-O3 mean on CPU: each level is a list of pass configs, run in order.

O0  the exported program, unchanged (the baseline every report measures against)
O1  conv+bn folding, fused SDPA attention, AOTInductor with freezing (fp32, numerics-preserving)
O2  O1 + bf16 where the CPU has it natively + max-autotune GEMM templates when they measure faster
O3  O1 + int8 dynamic linear layers + max-autotune when faster. bf16 is not stacked under int8:
    torchao's int8 path with bf16 activations measured slower than with fp32 activations on
    all-MiniLM-L6-v2 here, at the same error (14.3 vs 11.6 ms p50, interleaved; the ablation in
    docs/benchmarks/cpu.md), so O3 keeps fp32 around the int8 matmuls.
"""

from __future__ import annotations

from kpt.optimize.graph_passes import FoldConvBatchNorm, SaveExportedProgram, SdpaAttention
from kpt.optimize.inductor import InductorAOT
from kpt.optimize.passes import PassConfig
from kpt.optimize.quantize import Int8DynamicLinear
from kpt_cpu.passes import NativeBF16

# Skip the max-autotune compile when the default one suggests it would take longer than this.
AUTOTUNE_BUDGET_S = 300.0

LEVELS: dict[str, tuple[PassConfig, ...]] = {
    "LEVEL_O0": (SaveExportedProgram(),),
    "LEVEL_O1": (FoldConvBatchNorm(), SdpaAttention(), InductorAOT(freezing=True)),
    "LEVEL_O2": (FoldConvBatchNorm(), SdpaAttention(), NativeBF16(),
                 InductorAOT(freezing=True, max_autotune="auto", autotune_budget_s=AUTOTUNE_BUDGET_S)),
    "LEVEL_O3": (FoldConvBatchNorm(), SdpaAttention(), Int8DynamicLinear(),
                 InductorAOT(freezing=True, max_autotune="auto", autotune_budget_s=AUTOTUNE_BUDGET_S)),
}
