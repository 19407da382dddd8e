"""The intel service's capability report, computed in its own environment (torch 2.8 + IPEX + OpenVINO)."""

import json
import re

import pytest

from kpt.optimize import env
from tests.intel.conftest import REPO, run_intel

pytestmark = pytest.mark.timeout(120)

REPORT = r"""
import json, sys, torch
from kpt_intel.capability import capability
print(json.dumps({"info": capability(*sys.argv[1:2]), "xpu": torch.xpu.is_available()}))
"""


def report(cpuinfo: str | None = None) -> dict:
    out = run_intel(["-c", REPORT] + ([cpuinfo] if cpuinfo else []), timeout=90)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pins() -> dict[str, str]:
    text = (REPO / "services" / "intel" / "requirements.txt").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M))


def test_capability_reports_cpu_isa_versions_and_xpu():
    got = report()
    info, tc = got["info"], got["info"]["toolchain"]
    host = env.cpu_info()
    assert info["target"] == "TARGET_INTEL" and info["available"] and not info["unavailable_reason"]
    assert info["device_name"] == host.model and info["device_kind"] == "cpu" and int(info["memory_bytes"]) > 0
    # the ISA features from /proc/cpuinfo, as the dev environment reads them
    assert tc["isa.avx2"].startswith("yes") == ("avx2" in host.flags)
    assert tc["isa.avx512"].startswith("yes") == ({"avx512f", "avx512bw", "avx512vl"} <= host.flags)
    assert tc["isa.avx512_bf16"].startswith("yes") == ("avx512_bf16" in host.flags)
    assert tc["isa.vnni"].startswith("yes") == bool({"avx512_vnni", "avx_vnni"} & host.flags)
    assert tc["isa.amx"].startswith("yes") == bool({"amx_tile", "amx_bf16", "amx_int8"} & host.flags)
    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & host.flags)
    assert ("PRECISION_BF16" in info["precisions"]) == native_bf16
    assert {"PRECISION_FP32", "PRECISION_INT8"} <= set(info["precisions"])
    assert {"ARTIFACT_FORMAT_TORCHSCRIPT", "ARTIFACT_FORMAT_ONNX", "ARTIFACT_FORMAT_OPENVINO_IR"} <= set(info["formats"])
    # versions are the pinned ones (torch's local version suffix aside)
    p = pins()
    assert tc["torch"].split("+")[0] == p["torch"] == "2.8.0"
    assert tc["intel_extension_for_pytorch"].split("+")[0] == p["intel_extension_for_pytorch"]
    assert tc["openvino"] == p["openvino"] and tc["transformers"] == p["transformers"]
    # XPU devices are listed exactly when torch's xpu backend has one (none on this host)
    assert tc["xpu_devices"].startswith("none") == (not got["xpu"])


def test_capability_without_native_bf16_or_avx2(tmp_path):
    flags = sorted(env.cpu_info().flags - {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})
    no_bf16 = tmp_path / "cpuinfo_no_bf16"
    no_bf16.write_text(f"model name\t: Test CPU\nflags\t\t: {' '.join(flags)}\n")
    info = report(str(no_bf16))["info"]
    assert info["available"] and "PRECISION_BF16" not in info["precisions"]
    assert info["toolchain"]["isa.avx512_bf16"] == "no" and info["toolchain"]["isa.amx"] == "no"
    old = tmp_path / "cpuinfo_old"
    old.write_text("model name\t: Old CPU\nflags\t\t: fpu sse sse2 sse4_2 avx\n")
    info = report(str(old))["info"]
    assert not info["available"] and "AVX2" in info["unavailable_reason"]
