"""The vendor-specific parts of each service: precision tables, driver/clock queries, onnxruntime
providers. Pure logic on given inputs (sample tool output), so the ROCm-only code is tested here without
AMD hardware; docs/gpu.md lists what has not run on it."""

import json
import subprocess

import pytest

from kpt.gpu.device import GpuInfo, gfx_target
from kpt.gpu.export import providers_for
from kpt.gpu.vendor import Precisions
from kpt_amd import vendor as amd
from kpt_nvidia import vendor as nvidia


def info(arch: str = "sm_90", major: int = 9, minor: int = 0, uuid: str = "GPU-3f0c-aa") -> GpuInfo:
    return GpuInfo(name="test", count=1, memory_bytes=80 << 30, arch=arch, major=major, minor=minor,
                   runtime="cuda 13.0", uuid=uuid, sm_count=132, l2_bytes=50 << 20, memory_clock_khz=2619000,
                   memory_bus_bits=5120)


@pytest.mark.parametrize("cc, bf16, fp8, int4, int8", [
    ((7, 0), False, "", False, False),  # V100
    ((7, 5), False, "", False, True),  # T4
    ((8, 0), True, "", True, True),  # A100
    ((8, 6), True, "", True, True),  # A10 / RTX 30
    ((8, 9), True, "float8_e4m3fn", True, True),  # L4 / L40S / RTX 40
    ((9, 0), True, "float8_e4m3fn", True, True),  # H100 / H200
    ((10, 0), True, "float8_e4m3fn", True, True),  # B200
])
def test_nvidia_precision_table(cc, bf16, fp8, int4, int8):
    t = nvidia.precisions(*cc)
    assert (t.bf16, t.fp8, t.int4, t.int8) == (bf16, fp8, int4, int8)
    assert ("PRECISION_FP8" in t.contract()) is bool(fp8) and t.contract()[0] == "PRECISION_FP32"
    assert t.low == ("bf16" if bf16 else "fp16")
    assert bool(t.why) is (cc < (8, 9))  # every precision left out says why


def test_h100_offers_every_contract_precision_with_e4m3fn():
    t = nvidia.precisions(9, 0)
    assert t.contract() == ["PRECISION_FP32", "PRECISION_BF16", "PRECISION_FP16", "PRECISION_INT8", "PRECISION_FP8",
                            "PRECISION_INT4"]
    assert t.fp8_format == "e4m3fn"


SMI = ("GPU-3f0c-aa, 570.86.15, 96.00.99.00.01, 1980, 2619, 1980, 2619, 1755, 700.00, 123.45, Enabled, P0, 41, "
       "Enabled, Disabled\n"
       "GPU-77bb-cc, 570.86.15, 96.00.99.00.01, 345, 2619, 1980, 2619, 1755, 700.00, 70.10, Enabled, P0, 33, "
       "[N/A], Disabled\n")


def test_nvidia_smi_row_is_matched_by_uuid():
    def run(argv, **kw):
        assert argv[0] == "nvidia-smi" and argv[-1] == "--format=csv,noheader,nounits"
        return subprocess.CompletedProcess(argv, 0, SMI, "")

    v = nvidia.versions(info(uuid="3f0c-aa"), run=run)  # torch may report the UUID without "GPU-"
    assert v["driver"] == "570.86.15" and v["clocks_sm_mhz"] == "1980" and v["power_limit_w"] == "700.00"
    assert v["clocks_max_sm_mhz"] == "1980" and v["persistence"] == "Enabled" and "uuid" not in v
    other = nvidia.versions(info(uuid="GPU-77bb-cc"), run=run)
    assert other["clocks_sm_mhz"] == "345" and "ecc" not in other  # [N/A] fields are left out
    unknown = nvidia.versions(info(uuid="GPU-none"), run=run)
    assert unknown == {"driver": "570.86.15", "clocks": "unmatched GPU"}


def test_nvidia_smi_missing_or_failing_is_reported_not_guessed():
    def missing(argv, **kw):
        raise FileNotFoundError(2, "No such file", "nvidia-smi")

    assert nvidia.versions(info(), run=missing) == {"driver": "unknown (nvidia-smi: FileNotFoundError)"}
    assert nvidia.versions(info(), run=lambda a, **k: subprocess.CompletedProcess(a, 6, "", "")) == {
        "driver": "unknown (nvidia-smi exit 6)"}


@pytest.mark.parametrize("arch, bf16, fp8, int4", [
    ("gfx906", False, "", False),
    ("gfx908", True, "", False),
    ("gfx90a", True, "", True),
    ("gfx942", True, "float8_e4m3fnuz", True),  # MI300X: the FNUZ fp8 encoding
    ("gfx950", True, "float8_e4m3fn", True),  # MI350: OCP fp8, as NVIDIA's
    ("gfx1100", True, "", False),
    ("gfx1201", True, "float8_e4m3fn", False),
])
def test_amd_precision_table(arch, bf16, fp8, int4):
    t = amd.precisions(arch)
    assert (t.bf16, t.fp8, t.int4, t.fp16, t.int8) == (bf16, fp8, int4, True, True)
    assert t.fp8_format == {"float8_e4m3fnuz": "e4m3fnuz", "float8_e4m3fn": "e4m3fn", "": "none"}[fp8]


def test_amd_unknown_target_is_conservative_and_says_so():
    t = amd.precisions("gfx1036")
    assert t.contract() == ["PRECISION_FP32", "PRECISION_FP16", "PRECISION_INT8"] and "gfx1036" in t.why[0]


@pytest.mark.parametrize("name, target", [("gfx942:sramecc+:xnack-", "gfx942"), ("gfx90a:sramecc+:xnack-", "gfx90a"),
                                          ("gfx1100", "gfx1100"), (" gfx950:xnack- ", "gfx950")])
def test_gfx_target_from_torch_arch_name(name, target):
    assert gfx_target(name) == target


ROCM_SMI = json.dumps({
    "card0": {"VBIOS version": "113-M3000100-101", "sclk clock level:": "(2100Mhz)", "mclk clock level:": "(1300Mhz)",
              "Max Graphics Package Power (W)": "750.0"},
    "card1": {"VBIOS version": "113-M3000100-101", "sclk clock level:": "(132Mhz)", "mclk clock level:": "(900Mhz)",
              "Max Graphics Package Power (W)": "750.0"},
    "system": {"Driver version": "6.10.5"},
})


def test_rocm_smi_card_of_this_worker(monkeypatch, tmp_path):
    def run(argv, **kw):
        assert argv[0] == "rocm-smi" and "--json" in argv
        return subprocess.CompletedProcess(argv, 0, ROCM_SMI, "")

    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "1")
    v = amd.versions(info("gfx942", 9, 4), run=run, module_version=str(tmp_path / "none"))
    assert v == {"gfx": "gfx942", "driver": "6.10.5", "vbios": "113-M3000100-101", "clocks_sm_mhz": "132",
                 "clocks_mem_mhz": "900", "power_limit_w": "750.0"}
    (tmp_path / "version").write_text("6.12.12\n")
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "GPU-abc")  # not an index: the card cannot be named
    v = amd.versions(info("gfx942", 9, 4), run=run, module_version=str(tmp_path / "version"))
    assert v == {"gfx": "gfx942", "driver": "6.12.12", "clocks": "unmatched GPU"}


def test_rocm_smi_missing():
    def missing(argv, **kw):
        raise FileNotFoundError(2, "No such file", "rocm-smi")

    v = amd.versions(info("gfx90a", 9, 0), run=missing, module_version="/nonexistent")
    assert v == {"gfx": "gfx90a", "driver": "unknown (rocm-smi: FileNotFoundError)"}


@pytest.mark.parametrize("available, expected", [
    (["MIGraphXExecutionProvider", "ROCMExecutionProvider", "CPUExecutionProvider"],
     ["MIGraphXExecutionProvider", "ROCMExecutionProvider", "CPUExecutionProvider"]),
    (["ROCMExecutionProvider", "CPUExecutionProvider"], ["ROCMExecutionProvider", "CPUExecutionProvider"]),
    (["CPUExecutionProvider"], ["CPUExecutionProvider"]),
])
def test_amd_onnx_validation_prefers_migraphx(available, expected):
    assert providers_for(amd.VENDOR.onnx_providers, available) == expected


def test_nvidia_onnx_validation_uses_cuda_when_present():
    assert providers_for(nvidia.VENDOR.onnx_providers, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for(nvidia.VENDOR.onnx_providers, ["TensorrtExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"]


def test_rocm_slot_env_and_vendor_shape():
    assert amd.SLOT_ENV == {"HIP_FORCE_DEV_KERNARG": "1"}
    assert (amd.VENDOR.kind, amd.VENDOR.target, nvidia.VENDOR.kind, nvidia.VENDOR.target) == (
        "rocm", "TARGET_AMD", "cuda", "TARGET_NVIDIA")
    with pytest.raises(ValueError, match="fp8"):
        Precisions(bf16=True, fp8="e5m2")


def test_peak_bandwidth_from_memory_clock_and_bus():
    # H100 SXM: 2619 MHz HBM3 on a 5120-bit bus, double data rate -> 3.35 TB/s
    assert info().peak_memory_bandwidth == pytest.approx(3.352e12, rel=1e-3)
