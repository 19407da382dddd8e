"""A service replica killed with SIGKILL mid-job: the job is redelivered to another replica and
completes with exactly one result."""

import time

import pytest

from kpt.bus import core as bus_core
from tests.conftest import acheck_for
from tests.e2e import jobs_helpers as h
from tests.e2e import mesh as meshlib

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ACK_WAIT_S = 3


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = meshlib.start(str(tmp_path_factory.mktemp("redeliver")), replicas=2, KPT_ACK_WAIT_S=str(ACK_WAIT_S))
    yield m
    m.stop()


async def _consumer_state(url: str):
    bus = await bus_core.connect(url)
    try:
        info = await bus.js.consumer_info(bus_core.JOBS_STREAM, "svc_cpu")
        return info.num_pending, info.num_ack_pending
    finally:
        await bus.close()


async def _consumer_state_is(url: str, want) -> bool:
    return await _consumer_state(url) == want


async def test_sigkill_mid_job_redelivers_once(mesh, tmp_path):
    cnn = h.export_zoo("cnn", str(tmp_path / "cnn.pt2"))
    with mesh.client() as cl:
        job = cl.optimize(cl.upload(cnn), target="cpu", level="O1")
        events = job.events()
        started = next(e for e in events if e.phase == "started")
        victim_id = job.refresh().proto.service_id
        # wait until it is really working (compiling) before the kill
        next(e for e in events if e.phase in ("pass", "compile", "validate"))
        victim = {"cpu-0": "svc-cpu-0", "cpu-1": "svc-cpu-1"}[victim_id]
        t_kill = time.monotonic()
        mesh.kill(victim)
        phases = [started.phase] + [e.phase for e in events]
        job.wait(timeout=500)
        assert job.state == "succeeded"
        assert job.proto.attempt == 2 and job.proto.service_id != victim_id
        assert phases.count("started") == 2 and phases.count("done") == 1, phases
        assert time.monotonic() - t_kill >= ACK_WAIT_S * 0.5  # redelivered after ack_wait, not before
        assert len(job.result.artifacts) == 1
        # acked once, nothing left to deliver
        await acheck_for(10, lambda: _consumer_state_is(mesh.nats.url, (0, 0)))
