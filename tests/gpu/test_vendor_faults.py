"""The vendor parts of both GPU services with bad surroundings: an AMD job process whose KPT_CACHE_DIR cannot be
written keeps running without the kept MIOpen/TunableOp results, and odd rocm-smi output is "unmatched", not a
crash of the capability report. The tool output is given as text; nothing here pretends to be a GPU."""

import os
import subprocess

import pytest
import torch

from kpt.gpu.device import GpuInfo
from kpt_amd import vendor as amd


def info(arch: str = "gfx000") -> GpuInfo:  # an arch outside HIPBLASLT: no BLAS library switch
    return GpuInfo(name="test", count=1, memory_bytes=64 << 30, arch=arch, major=9, minor=4, runtime="hip 7.0",
                   uuid="", sm_count=304, l2_bytes=4 << 20, memory_clock_khz=1300000, memory_bus_bits=8192)


@pytest.fixture
def tunable(monkeypatch):
    """torch.cuda.tunable's setters, recorded (this CPU build of torch has no TunableOp to switch)."""
    calls = []
    for name in ("enable", "tuning_enable", "set_max_tuning_duration", "set_filename"):
        monkeypatch.setattr(torch.cuda.tunable, name, lambda *a, name=name: calls.append((name, *a)))
    return calls


def test_amd_settings_without_a_writable_cache_dir(tmp_path, monkeypatch, tunable):
    for var in ("MIOPEN_USER_DB_PATH", "MIOPEN_CUSTOM_CACHE_DIR"):
        monkeypatch.setenv(var, "")  # recorded, so what configure sets is undone after the test
        monkeypatch.delenv(var)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")  # every folder under it fails with ENOTDIR
    done = amd.configure(str(blocker / "cache"), info())
    assert "MIOPEN_USER_DB_PATH" not in os.environ
    assert not [c for c in tunable if c[0] == "set_filename"]
    assert ("enable", True) in tunable and any("not kept" in d for d in done)


def test_amd_settings_with_a_cache_dir(tmp_path, monkeypatch, tunable):
    for var in ("MIOPEN_USER_DB_PATH", "MIOPEN_CUSTOM_CACHE_DIR"):
        monkeypatch.setenv(var, "")  # recorded, so what configure sets is undone after the test
        monkeypatch.delenv(var)
    amd.configure(str(tmp_path), info())
    assert (tmp_path / "miopen" / "db").is_dir() and (tmp_path / "tunableop").is_dir()
    assert ("set_filename", str(tmp_path / "tunableop" / "results_gfx000_all.csv")) in tunable


@pytest.mark.parametrize("text", ["[]", "null", '"x"', "[{\"card0\": {}}]", "{}"])
def test_rocm_smi_json_of_another_shape_is_unmatched(text, monkeypatch):
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "0")
    v = amd.versions(info("gfx942"), run=lambda argv, **kw: subprocess.CompletedProcess(argv, 0, text, ""),
                     module_version="/nonexistent")
    assert v == {"gfx": "gfx942", "driver": "unknown", "clocks": "unmatched GPU"}
