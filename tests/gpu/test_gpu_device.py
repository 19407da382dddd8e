"""On the GPU: the capability report, the slot count, the environment fingerprint, and the benchmark
protocol's clock (device events) and memory (allocator) measurements."""

import os

import pytest
import torch
from google.protobuf import json_format

from kpt.gpu import bench as gpu_bench
from kpt.gpu import device, slots
from kpt.gpu import env as gpu_env
from kpt.optimize import bench
from kpt.v1 import job_pb2
from kpt_nvidia import capability, vendor

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]


def test_capability_reports_this_gpu():
    cap = capability.capability()
    msg = json_format.ParseDict(cap, job_pb2.TargetInfo())
    props = torch.cuda.get_device_properties(0)
    assert msg.available and not msg.unavailable_reason and msg.device_kind == "cuda"
    assert msg.device_name == props.name and msg.memory_bytes == props.total_memory
    assert msg.device_count == torch.cuda.device_count() >= 1
    assert cap["toolchain"]["arch"] == f"sm_{props.major}{props.minor}"
    assert cap["toolchain"]["compute_capability"] == f"{props.major}.{props.minor}"
    assert cap["precisions"] == vendor.precisions(props.major, props.minor).contract()
    assert cap["toolchain"]["cuda_runtime"] == torch.version.cuda and cap["toolchain"]["triton"]
    assert cap["toolchain"]["driver"][0].isdigit(), cap["toolchain"]  # read from nvidia-smi, not "unknown"
    if (props.major, props.minor) >= (8, 9):
        assert "PRECISION_FP8" in cap["precisions"] and cap["toolchain"]["fp8_format"] == "e4m3fn"


def test_slots_count_the_gpus_torch_sees():
    found = slots.nvidia_found()
    assert found.count is not None and found.count >= torch.cuda.device_count()
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        assert len(slots.nvidia_slots(os.environ, found)) == found.count == torch.cuda.device_count()


def test_environment_records_driver_and_clocks():
    info = device.probe("cuda")
    env = gpu_env.environment(vendor.VENDOR, info)
    for key in ("gpu.driver", "gpu.clocks_max_sm_mhz", "gpu.clocks_sm_mhz", "gpu.power_limit_w", "gpu.arch",
                "gpu.peak_memory_bandwidth_gbs", "toolchain.cuda_runtime", "toolchain.cudnn", "fingerprint"):
        assert env.get(key), key
    assert env["tf32"] in ("on", "off")
    again = gpu_env.environment(vendor.VENDOR, info)
    assert again["fingerprint"] == env["fingerprint"]  # current clocks and temperature are not in it


def test_device_events_time_what_the_gpu_does():
    """torch.cuda._sleep spins the GPU for a number of cycles: twice the cycles must time twice as long."""
    cycles = 2_000_000
    x = [(torch.zeros(1, device="cuda"),)]
    settings = bench.Settings(warmup_iters=2, min_iters=20, max_iters=100, time_budget_s=2.0, round_iters=5)
    times = gpu_bench.measure({"one": lambda t: torch.cuda._sleep(cycles), "two": lambda t: torch.cuda._sleep(2 * cycles)},
                              x, settings)
    one, two = (bench.percentile(sorted(times[k]), 0.5) for k in ("one", "two"))
    assert 1.8 < two / one < 2.2, (one, two)
    assert len(times["one"]) >= 20


def test_a_generation_loop_is_timed_per_step_with_the_host_never_waiting():
    """per_step_ms times a loop of steps as one span: a step that spins the GPU twice as long takes twice as long a
    step, and a step of the loop costs about what the GPU spins (the host's launches hide behind it)."""
    cycles = 2_000_000
    x = (torch.zeros(1, device="cuda"),)
    fns = {"one": lambda t: torch.cuda._sleep(cycles), "two": lambda t: torch.cuda._sleep(2 * cycles)}
    got = gpu_bench.per_step_ms(fns, x, lambda inputs, outputs: inputs, steps=8, reps=5)
    assert 1.8 < got["two"] / got["one"] < 2.2, got
    alone = gpu_bench.time_once(lambda: torch.cuda._sleep(cycles), reps=5)
    assert 0.8 < got["one"] / alone < 1.1, (got, alone)


def test_peak_memory_is_the_allocator_high_water_mark():
    def alloc(t):
        a = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
        b = torch.empty(32 << 20, dtype=torch.uint8, device="cuda")
        return (a, b)[1][:1]

    peak = gpu_bench.peak_memory(alloc, (None,))
    assert (96 << 20) <= peak < (100 << 20), peak
