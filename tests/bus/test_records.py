"""Job records, events and targets on a real JetStream."""

import asyncio
import time

import pytest

from kpt import contract as c
from kpt.bus import records

pytestmark = pytest.mark.timeout(60)


def job(tenant="alice", job_id="j1", target=c.Target.TARGET_CPU):
    return c.Job(id=job_id, tenant=tenant, target=target, state=c.JobState.JOB_STATE_QUEUED,
                 spec=c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=c.ModelRef(format=3, name="mlp")))


async def test_create_is_once(bus):
    assert await records.create_job(bus, job(job_id="once")) is not None
    assert await records.create_job(bus, job(job_id="once")) is None


async def test_tenants_are_separate(bus):
    await records.create_job(bus, job("alice", "sep"))
    with pytest.raises(Exception) as e:
        await records.get_job(bus, "bob", "sep")
    assert e.value.code == "NOT_FOUND"
    mine = await records.list_jobs(bus, "alice")
    assert "sep" in {j.id for j in mine}
    assert "sep" not in {j.id for j in await records.list_jobs(bus, "bob")}


async def test_a_listing_holds_every_job_stored_before_it(bus):
    """Each job is listed as soon as it is stored, past one fetch batch (256), and a deleted one is not: kv.watch()
    could mark its replay done before delivering it (nats-io/nats.py#842) and listed nothing (CI, 2026-12-04)."""
    for i in range(300):
        await records.create_job(bus, job("many", f"m{i}"))
        if i % 60 == 0:  # listed right after it was stored
            assert f"m{i}" in {j.id for j in await records.list_jobs(bus, "many")}
    await bus.jobs.delete("many.m7")
    listed = [j.id for j in await records.list_jobs(bus, "many")]
    assert sorted(listed) == sorted(f"m{i}" for i in range(300) if i != 7)


async def test_terminal_is_final_under_races(bus):
    await records.create_job(bus, job(job_id="race"))
    done = records.finish(c.JobState.JOB_STATE_SUCCEEDED, result=c.Result(speedup=2.0))
    cancel = records.finish(c.JobState.JOB_STATE_CANCELLED)
    await asyncio.gather(*[records.update_job(bus, "alice", "race", f) for f in [done, cancel] * 5])
    final, _ = await records.get_job(bus, "alice", "race")
    assert final.state in (c.JobState.JOB_STATE_SUCCEEDED, c.JobState.JOB_STATE_CANCELLED)
    assert (final.state == c.JobState.JOB_STATE_SUCCEEDED) == (final.result.speedup == 2.0)


async def test_cache_key_depends_on_spec_target_and_toolchain(bus):
    j = job()
    k = records.cache_key(j.spec, c.Target.TARGET_CPU, "fp1")
    assert k == records.cache_key(j.spec, c.Target.TARGET_CPU, "fp1")
    assert k != records.cache_key(j.spec, c.Target.TARGET_CPU, "fp2")
    assert k != records.cache_key(j.spec, c.Target.TARGET_INTEL, "fp1")
    other = c.JobSpec()
    other.CopyFrom(j.spec)
    other.level = c.Level.LEVEL_O3
    assert k != records.cache_key(other, c.Target.TARGET_CPU, "fp1")
    await records.remember(bus, k, j)
    assert (await records.cached_job(bus, k)).id == j.id
    assert await records.cached_job(bus, "0" * 64) is None


async def test_a_cached_result_older_than_the_ttl_is_not_served(bus):
    j = job()
    j.finished_at.FromSeconds(int(time.time()) - 2 * 86400)
    k = records.cache_key(j.spec, c.Target.TARGET_CPU, "fp-ttl")
    await records.remember(bus, k, j)
    assert await records.cached_job(bus, k, max_age_s=86400) is None
    assert (await records.cached_job(bus, k, max_age_s=3 * 86400)).id == j.id
    assert (await records.cached_job(bus, k, max_age_s=0)).id == j.id  # 0: for ever
    assert (await records.cached_job(bus, k)).id == j.id  # the default: 30 days


async def test_upload_name_does_not_change_the_key():
    a = c.JobSpec(model=c.ModelRef(sha256="ab" * 32, name="a.pt2"))
    b = c.JobSpec(model=c.ModelRef(sha256="ab" * 32, name="b.pt2"))
    assert records.cache_key(a, 1, "f") == records.cache_key(b, 1, "f")
    za = c.JobSpec(model=c.ModelRef(format=3, name="mlp"))
    zb = c.JobSpec(model=c.ModelRef(format=3, name="cnn"))
    assert records.cache_key(za, 1, "f") != records.cache_key(zb, 1, "f")


async def test_targets_heartbeat(bus):
    info = c.TargetInfo(service_id="cpu-test", target=c.Target.TARGET_CPU, available=True)
    await records.heartbeat(bus, info)
    live = await records.live_targets(bus)
    assert any(i.service_id == "cpu-test" and i.last_seen.seconds > 0 for i in live)


async def test_ids_checked():
    with pytest.raises(Exception) as e:
        records.check_id("job id", "a.b>")
    assert e.value.code == "INVALID_ARGUMENT"
