"""What this CPU host offers (kpt.v1.TargetInfo as a protobuf JSON dict). Cheap: no model imports;
versions come from package metadata."""

from __future__ import annotations

from kpt.optimize import env

FORMATS = ("ARTIFACT_FORMAT_AOTI_PACKAGE", "ARTIFACT_FORMAT_EXPORTED_PROGRAM", "ARTIFACT_FORMAT_ONNX",
           "ARTIFACT_FORMAT_TORCHSCRIPT")


def capability(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
    info = env.cpu_info(cpuinfo_path)
    precisions = env.cpu_precisions(info.flags)
    toolchain = env.toolchain()
    flags = [f for f in env.RELEVANT_FLAGS if f in info.flags]
    toolchain["cpu_flags"] = ",".join(flags)
    return env.cpu_target_info("TARGET_CPU", info, precisions, list(FORMATS), toolchain)
