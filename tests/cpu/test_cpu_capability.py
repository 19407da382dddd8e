import os

from google.protobuf import json_format

from kpt.optimize import env
from kpt.v1 import common_pb2, job_pb2
from kpt_cpu import capability


def test_capability_describes_this_host_as_a_target_info():
    info = capability.capability()
    msg = json_format.ParseDict(info, job_pb2.TargetInfo())
    assert msg.target == common_pb2.TARGET_CPU and msg.device_kind == "cpu" and msg.available
    assert msg.device_name == env.cpu_info().model != "unknown cpu"
    assert msg.device_count == len(os.sched_getaffinity(0)) and msg.memory_bytes > 1 << 30
    assert "ARTIFACT_FORMAT_AOTI_PACKAGE" in info["formats"] and "ARTIFACT_FORMAT_STABLEHLO" not in info["formats"]
    for key in ("torch", "transformers", "onnxruntime", "torchao", "python", "compiler", "cpu_flags"):
        assert info["toolchain"][key], key
    assert info["toolchain"]["compiler"].startswith("gcc") or info["toolchain"]["compiler"] == "none"


def test_fingerprint_is_stable_and_short():
    a, b = capability.capability(), capability.capability()
    assert a["toolchain_fingerprint"] == b["toolchain_fingerprint"] and len(a["toolchain_fingerprint"]) == 16


def test_bf16_listed_iff_flag_present():
    flags = env.cpu_info().flags
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert ("PRECISION_BF16" in capability.capability()["precisions"]) is native
