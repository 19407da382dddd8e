"""What O0-O3 mean on a TPU (or XLA's CPU device): each level is a list of pass configs, run in order.

O0  the exported program, unchanged (the baseline every report measures against; eager on the host)
O1  conv+bn folding, fused SDPA attention, then XlaCompile: the StableHLO artifact, run by dynamo's
    openxla backend, compiled once per shape bucket (fp32)
O2  O1 + bf16 matmuls/convs by explicit casts (the MXU's native input type)
O3  O1 + int8 weight-only Linear layers (torch_xla quantized_matmul). bf16 is not stacked under int8:
    torch_xla's per-channel int8 matmul takes the activation dtype as is, and fp32 keeps its error to
    the quantization's alone.
"""

from __future__ import annotations

from kpt.optimize.graph_passes import FoldConvBatchNorm, SaveExportedProgram, SdpaAttention
from kpt.optimize.passes import PassConfig
from kpt_tpu.passes import XlaBF16, XlaCompile, XlaInt8WeightOnly

LEVELS: dict[str, tuple[PassConfig, ...]] = {
    "LEVEL_O0": (SaveExportedProgram(),),
    "LEVEL_O1": (FoldConvBatchNorm(), SdpaAttention(), XlaCompile()),
    "LEVEL_O2": (FoldConvBatchNorm(), SdpaAttention(), XlaBF16(), XlaCompile()),
    "LEVEL_O3": (FoldConvBatchNorm(), SdpaAttention(), XlaInt8WeightOnly(), XlaCompile()),
}
