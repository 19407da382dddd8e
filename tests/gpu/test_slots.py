"""One worker per visible GPU: the slot logic of both services, from the visibility variables and what the
driver reports, and the rule that the service parent never imports torch."""

import subprocess
import sys

import pytest

from kpt.gpu import slots
from kpt.gpu.slots import Found
from tests.gpu.helpers import pythonpath


@pytest.mark.parametrize("value, expected", [
    (None, None),
    ("", []),
    ("0", ["0"]),
    ("0,1,2,3", ["0", "1", "2", "3"]),
    (" 2 , 5 ", ["2", "5"]),
    ("0,2,-1,3", ["0", "2"]),  # CUDA stops at the first invalid entry
    ("1,1,2", ["1"]),  # a repeat is invalid too
    ("-1", []),
    ("GPU-8f2a-11,MIG-3c0d-7", ["GPU-8f2a-11", "MIG-3c0d-7"]),
    ("0,abc,1", ["0"]),
])
def test_parse_visible_follows_cuda_semantics(value, expected):
    assert slots.parse_visible(value) == expected


@pytest.mark.parametrize("env, found, expected", [
    ({}, Found(4), ["0", "1", "2", "3"]),  # unset: every GPU the driver has
    ({"CUDA_VISIBLE_DEVICES": "3,1"}, Found(4), ["3", "1"]),  # the operator's order is kept
    ({"CUDA_VISIBLE_DEVICES": "1,7,2"}, Found(4), ["1"]),  # index 7 does not exist: CUDA ignores it and the rest
    ({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}, Found(2), ["GPU-aa", "GPU-bb"]),
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, Found(None, "nvidia-smi missing"), ["0", "1"]),  # unknown count: trust the list
    ({"CUDA_VISIBLE_DEVICES": "5"}, Found(None), ["5"]),
])
def test_nvidia_one_slot_per_visible_gpu(env, found, expected):
    assert slots.nvidia_slots(env, found) == [{"CUDA_VISIBLE_DEVICES": i} for i in expected]


@pytest.mark.parametrize("env, found", [
    ({}, Found(0)),
    ({}, Found(None, "nvidia-smi could not run")),
    ({"CUDA_VISIBLE_DEVICES": ""}, Found(8)),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, Found(8)),
    ({"CUDA_VISIBLE_DEVICES": "8"}, Found(8)),
])
def test_nvidia_without_gpus_runs_one_worker_with_every_gpu_hidden(env, found):
    assert slots.nvidia_slots(env, found) == [{"CUDA_VISIBLE_DEVICES": ""}]


def amd(*physical: str) -> list[dict]:
    return [{"ROCR_VISIBLE_DEVICES": p, "HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "0"} for p in physical]


@pytest.mark.parametrize("env, found, expected", [
    ({}, Found(8), amd(*"01234567")),
    ({"ROCR_VISIBLE_DEVICES": "4,5"}, Found(8), amd("4", "5")),
    ({"ROCR_VISIBLE_DEVICES": "4,5,6", "HIP_VISIBLE_DEVICES": "2,0"}, Found(8), amd("6", "4")),  # HIP indexes ROCR's list
    ({"HIP_VISIBLE_DEVICES": "1,3"}, Found(4), amd("1", "3")),
    ({"CUDA_VISIBLE_DEVICES": "2"}, Found(4), amd("2")),  # HIP honours CUDA_VISIBLE_DEVICES when its own is unset
    ({"HIP_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "0"}, Found(4), amd("1")),  # HIP's own wins
    ({"ROCR_VISIBLE_DEVICES": "GPU-4b5f,GPU-77aa"}, Found(2), amd("GPU-4b5f", "GPU-77aa")),
    ({"ROCR_VISIBLE_DEVICES": "0,1", "HIP_VISIBLE_DEVICES": "0,5"}, Found(8), amd("0")),  # 5 is past ROCR's list
])
def test_amd_one_slot_per_visible_gpu(env, found, expected):
    assert slots.amd_slots(env, found) == expected


@pytest.mark.parametrize("env, found", [({}, Found(0)), ({}, Found(None, "no KFD")), ({"ROCR_VISIBLE_DEVICES": ""}, Found(8)),
                                        ({"HIP_VISIBLE_DEVICES": "-1"}, Found(8))])
def test_amd_without_gpus_hides_every_gpu(env, found):
    assert slots.amd_slots(env, found) == [{"ROCR_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": "",
                                            "CUDA_VISIBLE_DEVICES": ""}]


def test_amd_counts_gpu_nodes_of_the_kfd_topology(tmp_path):
    for node, simds in (("0", 0), ("1", 304), ("2", 304), ("3", 0)):  # CPU nodes report simd_count 0
        (tmp_path / node).mkdir()
        (tmp_path / node / "properties").write_text(f"cpu_cores_count 0\nsimd_count {simds}\ngfx_target_version 90402\n")
    assert slots.amd_found(str(tmp_path)) == Found(2)
    missing = slots.amd_found(str(tmp_path / "nope"))
    assert missing.count is None and "KFD" in missing.note


def test_nvidia_count_from_nvidia_smi_output():
    def run(argv, **kw):
        assert argv[0] == "nvidia-smi" and "--query-gpu=uuid" in argv
        return subprocess.CompletedProcess(argv, 0, "GPU-1a2b\nGPU-3c4d\n\n", "")

    def fails(argv, **kw):
        return subprocess.CompletedProcess(argv, 9, "", "NVIDIA-SMI has failed because it couldn't communicate "
                                                        "with the NVIDIA driver.\n")

    def missing(argv, **kw):
        raise FileNotFoundError(2, "No such file or directory", "nvidia-smi")

    assert slots.nvidia_found(run) == Found(2)
    assert slots.nvidia_found(fails).count is None and "communicate" in slots.nvidia_found(fails).note
    assert slots.nvidia_found(missing).count is None and "FileNotFoundError" in slots.nvidia_found(missing).note


@pytest.mark.parametrize("service", ["kpt_nvidia.service", "kpt_amd.service"])
def test_service_parent_never_imports_torch(service):
    pytest.importorskip("nats", reason="the service parent needs nats-py (kpt.bus)")
    code = (f"import sys, {service} as s; from kpt.gpu import slots; "
            "print(len(slots.for_nvidia() if 'nvidia' in s.__name__ else slots.for_amd())); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         env={"PYTHONPATH": pythonpath(), "PATH": "/usr/bin:/bin"})
    count, modules = out.stdout.strip().splitlines()
    assert int(count) >= 1 and modules == "[]", out.stdout
