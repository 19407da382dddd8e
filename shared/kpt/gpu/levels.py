"""What O0-O3 mean on a GPU, built from the device's precision table (the same passes on CUDA and ROCm).

O0  the exported program, unchanged (the baseline every report measures against)
O1  conv+bn folding, channels_last for convolutions, the fastest attention backend, AOTInductor with its
    default options (fp32 throughout, TF32 off: numerics-preserving)
O2  O1 + bf16 (fp16 where the device lacks bf16) + max-autotune within a compile budget (coordinate-
    descent tuning where there are matrix-vector products) + CUDA graphs
O3  O2 + quantized linear layers (int8/int4 weight-only where memory-bound, fp8/int8 dynamic where
    compute-bound; only what the device supports) + kernels from kernels/ where they measure faster + linear
    layers' GELUs in their GEMMs' epilogues (cuBLASLt, the tanh approximation) where that measures faster
Each level's artifact is loaded back and checked against eager fp32 by the pipeline's ladder.
"""

from __future__ import annotations

from kpt.gpu.compile import GpuInductorAOT
from kpt.gpu.epilogues import GeluEpilogue
from kpt.gpu.graphs import CudaGraphs
from kpt.gpu.passes import ChannelsLast, CustomKernels, ReducedPrecision, SdpaBackend
from kpt.gpu.quantize import QuantizeForDevice
from kpt.gpu.vendor import Precisions
from kpt.optimize.graph_passes import FoldConvBatchNorm, SaveExportedProgram
from kpt.optimize.passes import PassConfig

# Compile-time budget for max-autotune at O2/O3 (estimated before compiling, see compile.py): a job
# spends at most about this long tuning, on top of the default compile.
AUTOTUNE_BUDGET_S = 300.0


def levels(table: Precisions, autotune_budget_s: float | None = None,
           int4_ntile: int = 8, **tuned: bool | int | None) -> dict[str, tuple[PassConfig, ...]]:
    """The levels for a device with this precision table; autotune_budget_s defaults to AUTOTUNE_BUDGET_S as
    the module holds it when called (the GPU tests lower it for in-process jobs, see tests/gpu/conftest.py).
    tuned: O2's and O3's GpuInductorAOT options (persistent_tma, unfused_bias, realize_opcount; None: their
    settings or defaults)."""
    budget = AUTOTUNE_BUDGET_S if autotune_budget_s is None else autotune_budget_s
    compile_tuned = GpuInductorAOT(max_autotune="budget", autotune_budget_s=budget, **tuned)
    return {
        "LEVEL_O0": (SaveExportedProgram(),),
        "LEVEL_O1": (FoldConvBatchNorm(), ChannelsLast(), SdpaBackend(),
                     GpuInductorAOT(max_autotune="off", coordinate_descent="off")),
        "LEVEL_O2": (FoldConvBatchNorm(), ReducedPrecision(table.low), ChannelsLast(), SdpaBackend(),
                     compile_tuned, CudaGraphs()),
        "LEVEL_O3": (FoldConvBatchNorm(), ReducedPrecision(table.low), ChannelsLast(),
                     QuantizeForDevice(fp8=table.fp8, int4=table.int4, int4_ntile=int4_ntile), CustomKernels(),
                     GeluEpilogue(), SdpaBackend(), compile_tuned, CudaGraphs()),
    }
