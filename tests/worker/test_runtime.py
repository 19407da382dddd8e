"""The worker runtime against a real JetStream: one job's failure is that job's typed error, never the service's."""

import asyncio
import os
import sys
import uuid

import pytest
from nats.js import api

from kpt import contract as c
from kpt.bus import core, records
from kpt.worker.runtime import Worker, WorkerConfig
from tests.conftest import acheck_for

HERE = os.path.dirname(__file__)
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def worker(bus):
    cfg = WorkerConfig(target="cpu", handler="handlers:by_model_name", capability="handlers:capability",
                       service_id="test-runtime", python=sys.executable, ack_wait_s=5.0, max_attempts=2,
                       memory_bytes=0, child_env={"PYTHONPATH": HERE}, drain_s=5.0)
    w = Worker(bus, cfg)
    await w.start()
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        yield w, task
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        await bus.js.delete_consumer(core.JOBS_STREAM, "svc_cpu")
        await bus.js.purge_stream(core.JOBS_STREAM, subject=core.JOBS_SUBJECT.format(target="cpu"))


async def submit(bus, handler: str, tenant: str = "rt", job_id: str = "") -> c.Job:
    job = c.Job(id=job_id or f"rt-{uuid.uuid4().hex[:12]}", tenant=tenant, target=c.Target.TARGET_CPU,
                state=c.JobState.JOB_STATE_QUEUED,
                spec=c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=c.ModelRef(format=3, name=handler)))
    await records.create_job(bus, job)
    await records.enqueue(bus, job)
    return job


async def finished(bus, job: c.Job) -> c.Job:
    async def done():
        j, _ = await records.get_job(bus, job.tenant, job.id)
        return j if j.state in c.TERMINAL else None

    return await acheck_for(30, done, interval=0.1)


async def test_an_untyped_error_fails_the_job_and_the_worker_goes_on(bus, worker):
    # The handler names an artifact it never wrote: uploading it raises FileNotFoundError in the service.
    _, task = worker
    bad = await finished(bus, await submit(bus, "missing_artifact"))
    assert bad.state == c.JobState.JOB_STATE_FAILED
    assert bad.error.code == "INTERNAL" and "FileNotFoundError" in bad.error.message
    assert not task.done()
    good = await finished(bus, await submit(bus, "ok"))
    assert good.state == c.JobState.JOB_STATE_SUCCEEDED and len(good.result.artifacts) == 1


async def test_a_malformed_job_message_is_dropped_and_the_worker_goes_on(bus, worker):
    _, task = worker
    ack = await bus.js.publish(core.JOBS_SUBJECT.format(target="cpu"), b"\xff not a job")

    async def gone():  # terminated: a work queue removes it
        try:
            await bus.js.get_msg(core.JOBS_STREAM, ack.seq)
        except Exception:  # noqa: BLE001 - not found is what is awaited
            return True
        return False

    await acheck_for(10, gone)
    assert not task.done()
    good = await finished(bus, await submit(bus, "ok"))
    assert good.state == c.JobState.JOB_STATE_SUCCEEDED


async def cancel(bus, tenant: str, job_id: str) -> None:
    """What the gateway does: the record first, then the word to the replica running it."""
    await records.update_job(bus, tenant, job_id, records.finish(c.JobState.JOB_STATE_CANCELLED))
    await records.request_cancel(bus, tenant, job_id)


async def test_cancel_stops_the_job_and_the_worker_goes_on(bus, worker):
    w, _ = worker
    job = await submit(bus, "sleep_forever")
    await acheck_for(10, lambda: _running(w, job))
    await cancel(bus, job.tenant, job.id)
    assert (await finished(bus, job)).state == c.JobState.JOB_STATE_CANCELLED
    assert (await finished(bus, await submit(bus, "ok"))).state == c.JobState.JOB_STATE_SUCCEEDED


async def test_a_cancel_of_another_tenants_job_with_the_same_id_leaves_this_one_running(bus, worker):
    # Job ids are unique per tenant only (a client may choose one): the cancel subject names the tenant too.
    w, _ = worker
    same = f"same-{uuid.uuid4().hex[:8]}"
    bobs = await submit(bus, "sleep_then_ok", tenant="bob", job_id=same)
    alices = c.Job(id=same, tenant="alice", target=c.Target.TARGET_CPU, state=c.JobState.JOB_STATE_QUEUED)
    await records.create_job(bus, alices)  # queued, not yet running anywhere
    await acheck_for(10, lambda: _running(w, bobs))
    await cancel(bus, "alice", same)
    assert (await finished(bus, bobs)).state == c.JobState.JOB_STATE_SUCCEEDED


async def _running(w: Worker, job: c.Job) -> bool:
    return w._current is not None and w._current[0].id == job.id and w._current[0].tenant == job.tenant


async def test_a_failed_heartbeat_is_logged_and_the_beats_go_on(bus, caplog):
    """msg.in_progress() can fail (the connection reconnecting, its buffer full): the job keeps its heartbeat task,
    which tries again at the next beat, and the failure is in the log."""
    cfg = WorkerConfig(target="cpu", handler="handlers:by_model_name", capability="handlers:capability",
                       service_id="test-beats", python=sys.executable, ack_wait_s=0.6)
    beats = []

    class Msg:  # the one call _keep_alive makes on a JetStream message
        class metadata:  # noqa: N801
            class sequence:  # noqa: N801
                stream = 7

        async def in_progress(self):
            beats.append(1)
            if len(beats) == 1:
                raise ConnectionError("reconnecting")

    task = asyncio.create_task(Worker(bus, cfg)._keep_alive(Msg()))
    await acheck_for(5, lambda: asyncio.sleep(0, len(beats) >= 3))
    assert not task.done()
    task.cancel()
    assert "heartbeat failed (ConnectionError: reconnecting)" in caplog.text


def _replica(bus, name: str, drain_s: float, **env) -> Worker:
    return Worker(bus, WorkerConfig(target="cpu", handler="handlers:by_model_name", capability="handlers:capability",
                                    service_id=name, python=sys.executable, ack_wait_s=5.0, max_attempts=2,
                                    memory_bytes=0, child_env={"PYTHONPATH": HERE, **env}, drain_s=drain_s))


async def test_a_stopping_replica_lets_its_job_finish_within_the_drain(bus):
    w = _replica(bus, "test-drain", drain_s=30)
    await w.start()
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        job = await submit(bus, "sleep_then_ok")
        await acheck_for(10, lambda: _running(w, job))
        stop.set()
        await asyncio.wait_for(task, 20)  # returns once the job is done, not at once and not after the drain
        done, _ = await records.get_job(bus, job.tenant, job.id)
        assert (done.state, done.service_id, done.attempt) == (c.JobState.JOB_STATE_SUCCEEDED, "test-drain", 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await bus.js.delete_consumer(core.JOBS_STREAM, "svc_cpu")


async def test_a_job_outlasting_the_drain_is_handed_to_another_replica(bus):
    """SIGTERM to a replica mid-job (a rollout, a scale-down): past KPT_DRAIN_S its job goes back to the queue as
    a new message, another replica runs it as attempt 1, and nothing of it is lost or charged."""
    stuck = _replica(bus, "test-stuck", drain_s=0.5, KPT_TEST_STUCK="1")
    await stuck.start()
    stop_stuck, stop_good = asyncio.Event(), asyncio.Event()
    stuck_task = asyncio.create_task(stuck.run(stop_stuck))
    good = _replica(bus, "test-good", drain_s=5)
    good_task = None
    try:
        job = await submit(bus, "stuck_on_a_then_ok")
        await acheck_for(10, lambda: _running(stuck, job))
        await good.start()  # the second replica joins only now, so the stuck one surely had the job
        good_task = asyncio.create_task(good.run(stop_good))
        stop_stuck.set()
        await asyncio.wait_for(stuck_task, 20)  # the stopping replica ends after the drain
        done = await finished(bus, job)
        assert done.state == c.JobState.JOB_STATE_SUCCEEDED
        assert (done.service_id, done.attempt) == ("test-good", 1)
        assert "handover" in await _phases(bus, job)
    finally:
        stop_stuck.set()
        stop_good.set()
        for t in (stuck_task, good_task):
            if t:
                await asyncio.wait_for(t, 30)
        await bus.js.delete_consumer(core.JOBS_STREAM, "svc_cpu")
        await bus.js.purge_stream(core.JOBS_STREAM, subject=core.JOBS_SUBJECT.format(target="cpu"))


async def _phases(bus, job: c.Job) -> list[str]:
    sub = await bus.js.subscribe(core.EVENTS_SUBJECT.format(tenant=job.tenant, job_id=job.id), ordered_consumer=True,
                                 deliver_policy=api.DeliverPolicy.ALL)
    phases = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1)
            phases.append(c.Event.FromString(msg.data).phase)
    except TimeoutError:
        return phases
    finally:
        await sub.unsubscribe()


async def test_the_compiler_caches_are_trimmed_after_a_job(bus, tmp_path):
    stale = tmp_path / "inductor" / "old"
    stale.parent.mkdir()
    stale.write_bytes(b"x" * 4096)
    os.utime(stale, (1, 1))  # unused for decades
    w = Worker(bus, WorkerConfig(target="cpu", handler="handlers:by_model_name", capability="handlers:capability",
                                 service_id="test-trim", python=sys.executable, ack_wait_s=5.0, memory_bytes=0,
                                 child_env={"PYTHONPATH": HERE}, drain_s=5, cache_dir=str(tmp_path),
                                 cache_max_bytes=1024))
    await w.start()
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        assert (await finished(bus, await submit(bus, "ok"))).state == c.JobState.JOB_STATE_SUCCEEDED
        await acheck_for(10, lambda: asyncio.sleep(0, not stale.exists()))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await bus.js.delete_consumer(core.JOBS_STREAM, "svc_cpu")
