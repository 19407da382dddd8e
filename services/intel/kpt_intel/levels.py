"""What O0-O3 mean on the intel service: each level is a list of pass configs, run in order.

O0  the exported program, unchanged (the baseline every report measures against)
O1  ipex.optimize fp32 (weight prepacking, conv+bn folding, oneDNN fusion) + TorchScript trace and freeze,
    raced against OpenVINO fp32 (INFERENCE_PRECISION_HINT=f32): the faster artifact that passes is kept
O2  O1 in bf16 where the CPU has native bf16 (avx512_bf16 / amx_bf16), skipped with the reason otherwise;
    OpenVINO races with INFERENCE_PRECISION_HINT=bf16
O3  IPEX static int8 (calibrated on generated inputs, judged by SQNR) + TorchScript freeze. OpenVINO int8
    would need NNCF, so the race reports itself skipped.
"""

from __future__ import annotations

from kpt.optimize.graph_passes import SaveExportedProgram
from kpt.optimize.passes import PassConfig
from kpt_intel.passes import IpexJit, IpexStaticInt8, NativeBF16, OpenVinoRace

LEVELS: dict[str, tuple[PassConfig, ...]] = {
    "LEVEL_O0": (SaveExportedProgram(),),
    "LEVEL_O1": (IpexJit(), OpenVinoRace()),
    "LEVEL_O2": (NativeBF16(), IpexJit(), OpenVinoRace()),
    "LEVEL_O3": (IpexStaticInt8(), IpexJit(), OpenVinoRace()),
}
