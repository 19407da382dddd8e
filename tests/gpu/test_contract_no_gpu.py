"""Both GPU services in the contract, for everything that needs no GPU: without its GPU a service reports
UNAVAILABLE (TargetInfo.available=false and the reason) and every job fails with the typed Unavailable
error. The GPU is really absent (a CPU-only torch, or hidden with *_VISIBLE_DEVICES=""), never faked."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from google.protobuf import json_format

from kpt.errors import Unavailable
from kpt.gpu import device
from kpt.v1 import common_pb2, job_pb2
from kpt.worker.process import Child
from tests.gpu.helpers import SERVICES, make_job, pythonpath, upload, zoo

HIDDEN = {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": "", "ROCR_VISIBLE_DEVICES": ""}
KIND = {"nvidia": "cuda", "amd": "rocm"}
pytestmark = pytest.mark.timeout(180)


async def spawn(service: str, env: dict) -> Child:
    pkg = SERVICES[service][0]
    child = await Child.spawn(f"{pkg}.jobs:run", f"{pkg}.capability:capability", python=sys.executable,
                              env={"PYTHONPATH": pythonpath(), **env})
    await child.ready(120)
    return child


def check_unavailable(cap: dict, service: str) -> job_pb2.TargetInfo:
    msg = json_format.ParseDict(cap, job_pb2.TargetInfo())  # a valid TargetInfo, nothing extra
    assert msg.target == getattr(common_pb2, SERVICES[service][1]) and msg.device_kind == KIND[service]
    assert not msg.available and msg.unavailable_reason and msg.device_count == 0 and not msg.precisions
    assert msg.toolchain["torch"] and len(msg.toolchain_fingerprint) == 16
    assert "ARTIFACT_FORMAT_AOTI_PACKAGE" in cap["formats"]
    return msg


@pytest.mark.parametrize("service", ["nvidia", "amd"])
async def test_job_process_without_gpu_reports_unavailable_and_refuses_jobs(service, tmp_path):
    """The worker's real job process, with every GPU hidden: capability first, then one job."""
    child = await spawn(service, HIDDEN)
    msg = check_unavailable(child.capability, service)
    if service == "nvidia":
        assert "CUDA_VISIBLE_DEVICES=''" in msg.unavailable_reason or "CPU-only" in msg.unavailable_reason
    events = []

    async def on_event(ev):
        events.append(ev)

    job = make_job("JOB_KIND_OPTIMIZE", zoo("mlp"), level="LEVEL_O2")
    with pytest.raises(Unavailable, match=f"the {service} service has no usable GPU"):
        await child.run({"job": job, "model_path": None, "workdir": str(tmp_path)}, on_event, 120)
    assert events == [] and list(tmp_path.iterdir()) == []  # refused before any work


@pytest.mark.parametrize("service", ["nvidia", "amd"])
@pytest.mark.parametrize("kind, model", [("JOB_KIND_OPTIMIZE", zoo("mlp")), ("JOB_KIND_EXPORT", zoo("cnn")),
                                         ("JOB_KIND_BENCHMARK", upload("/nonexistent/model.pt2"))])
def test_run_refuses_every_job_kind_first(service, kind, model, tmp_path):
    """In this process (when it has no GPU of the service's kind): Unavailable before the spec or the model is
    even looked at; nothing runs on the CPU."""
    if not isinstance(device.probe(KIND[service]), str):
        pytest.skip(f"this process has a usable {KIND[service]} GPU; the job-process test above hides it")
    module = __import__(f"{SERVICES[service][0]}.jobs", fromlist=["run"])
    with pytest.raises(Unavailable) as e:
        module.run(make_job(kind, model, export_formats=["ARTIFACT_FORMAT_ONNX"]), "/nonexistent/model.pt2",
                   str(tmp_path / "work"), lambda *a: pytest.fail("no progress may be reported"))
    assert e.value.code == "UNAVAILABLE" and e.value.metadata == {"target": service}
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("service", ["nvidia", "amd"])
async def test_service_joins_the_mesh_unavailable_and_fails_jobs(service, nats_url, tmp_path):
    """The service process itself: it announces its target as unavailable with the reason, and a job queued
    for it ends FAILED with UNAVAILABLE (the worker refuses it without starting a job process)."""
    pytest.importorskip("nats", reason="the service process needs nats-py")
    pkg = SERVICES[service][0]
    probe = subprocess.run([sys.executable, "-c", f"import {pkg}"], capture_output=True, check=False,
                           env={"PATH": os.environ.get("PATH", "")})
    if probe.returncode != 0:
        pytest.skip(f"{pkg} is not installed in this interpreter (pip install -e services/{service}): the "
                    "worker's job processes import it without PYTHONPATH")
    from kpt import contract as c
    from kpt.bus import core, records

    env = {**os.environ, "PYTHONPATH": pythonpath(), "KPT_NATS_URL": nats_url, "KPT_SERVICE_ID": f"{service}-test",
           "KPT_CACHE_DIR": str(tmp_path / "cache"), "KPT_HEARTBEAT_S": "0.5", **HIDDEN}
    proc = subprocess.Popen([sys.executable, "-m", f"{pkg}.service"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "service.log", "wb"), start_new_session=True)
    bus = await core.connect(nats_url)
    try:
        target = getattr(c.Target, SERVICES[service][1])
        deadline = time.monotonic() + 120
        mine = []
        while not mine and time.monotonic() < deadline:
            mine = [t for t in await records.live_targets(bus) if t.service_id.startswith(f"{service}-test")]
            await asyncio.sleep(0.2)
        assert mine, (tmp_path / "service.log").read_text()[-3000:]
        assert all(t.target == target and not t.available and t.unavailable_reason for t in mine)
        job = c.Job(id=f"nogpu-{service}", tenant="t1", target=target, state=c.JobState.JOB_STATE_QUEUED,
                    spec=c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=c.ModelRef(format=3, name="mlp")))
        await records.create_job(bus, job)
        await records.enqueue(bus, job)
        final = None
        while time.monotonic() < deadline:
            final, _ = await records.get_job(bus, "t1", job.id)
            if final.state in c.TERMINAL:
                break
            await asyncio.sleep(0.2)
        assert final.state == c.JobState.JOB_STATE_FAILED and final.error.code == "UNAVAILABLE", final
        assert "no usable device" in final.error.message
    finally:
        await bus.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 0, "SIGTERM did not stop the service cleanly within 10 s"  # it hung ~30 s in drain


@pytest.mark.gpu
def test_hidden_gpu_on_a_gpu_host_is_unavailable(tmp_path):
    """On the H100 itself: the same job process with the GPU hidden reports UNAVAILABLE (the real driver path).
    Synchronous (asyncio.run): the GPU machine has no pytest-asyncio."""

    async def scenario():
        child = await spawn("nvidia", {"CUDA_VISIBLE_DEVICES": ""})
        msg = check_unavailable(child.capability, "nvidia")
        assert "no GPU is visible" in msg.unavailable_reason and "CUDA_VISIBLE_DEVICES=''" in msg.unavailable_reason

        async def on_event(ev):
            pass

        with pytest.raises(Unavailable):
            await child.run({"job": make_job("JOB_KIND_OPTIMIZE", zoo("mlp")), "model_path": None,
                             "workdir": str(tmp_path)}, on_event, 120)

    asyncio.run(scenario())
