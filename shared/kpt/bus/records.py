"""Job records (KV), job events (stream) and targets (KV with TTL): the state every process shares.

Records are updated with compare-and-set on the KV revision, so a cancel and a completion racing
each other never overwrite one another, and a terminal state is final.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Callable

import nats
from nats.js import api

from kpt import settings
from kpt.bus.core import CANCEL_SUBJECT, EVENTS_SUBJECT, JOBS_KV, JOBS_SUBJECT, TARGETS_KV, Bus
from kpt.contract import TERMINAL, Event, Job, JobSpec, JobState, TargetInfo, canonical_spec_bytes, now, target_name
from kpt.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(kind: str, value: str) -> str:
    if not ID_RE.match(value or ""):
        raise InvalidArgument(f"{kind} {value!r} is not valid: use 1-64 of A-Z a-z 0-9 _ -")
    return value


def job_key(tenant: str, job_id: str) -> str:
    return f"{tenant}.{job_id}"


async def get_job(bus: Bus, tenant: str, job_id: str) -> tuple[Job, int]:
    check_id("job id", job_id)
    try:
        entry = await bus.jobs.get(job_key(tenant, job_id))
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        raise NotFound(f"no job {job_id!r}") from None
    return Job.FromString(entry.value), entry.revision


async def create_job(bus: Bus, job: Job) -> Job | None:
    """Store a new record; returns None when a job with this id already exists for the tenant."""
    try:
        await bus.jobs.create(job_key(job.tenant, job.id), job.SerializeToString())
    except nats.js.errors.KeyWrongLastSequenceError:
        return None
    return job


async def update_job(bus: Bus, tenant: str, job_id: str, change: Callable[[Job], bool],
                     known: tuple[Job, int] | None = None) -> Job:
    """Apply change(job) -> bool (False: leave as is) with compare-and-set; retried on conflict.
    `known` is a (record, revision) just read, saving the first read."""
    for _ in range(50):
        job, rev = known or await get_job(bus, tenant, job_id)
        known = None
        if not change(job):
            return job
        try:
            await bus.jobs.update(job_key(tenant, job_id), job.SerializeToString(), last=rev)
            return job
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
    raise RuntimeError(f"job {job_id}: too many concurrent updates")


async def _scan(bus: Bus, bucket: str, pattern: str, parse: Callable[[bytes], object]) -> list:
    """Every current value under a key pattern of a KV bucket, read with an ephemeral pull consumer of each key's
    last message, which counts what it holds before anything is fetched. Not kv.watch(): nats-py's watcher can
    mark its initial replay done before the replay has been delivered (nats-io/nats.py#842), and a job listed
    right after it was stored came back missing (tests/e2e/test_gateway.py in CI, 2026-12-04)."""
    sub = await bus.js.pull_subscribe(
        f"$KV.{bucket}.{pattern}", stream=f"KV_{bucket}",
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT, ack_policy=api.AckPolicy.NONE,
                                  inactive_threshold=60.0))
    out = []
    try:
        left = (await sub.consumer_info()).num_pending
        while left > 0:
            try:
                msgs = await sub.fetch(min(left, 256), timeout=5)
            except nats.errors.TimeoutError:  # removed (expired, deleted) between the count and the fetch
                break
            left -= len(msgs)
            out.extend(parse(m.data) for m in msgs if not _removed(m))
    finally:
        await sub.unsubscribe()
    return out


def _removed(msg: object) -> bool:
    """A KV delete or purge marker (KV-Operation), or a marker the server placed (Nats-Marker-Reason)."""
    headers = msg.headers or {}
    return headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers


async def list_jobs(bus: Bus, tenant: str) -> list[Job]:
    return await _scan(bus, JOBS_KV, f"{tenant}.*", Job.FromString)


async def publish_event(bus: Bus, job: Job, phase: str, message: str = "", progress: float = 0.0,
                        wait: bool = True) -> None:
    """Append an event to the job's history. wait=False does not wait for the stream's ack (on the hot
    path of submit and start); order is still kept, and a failed ack is logged."""
    ev = Event(job_id=job.id, time=now(), phase=phase, message=message, progress=progress, state=job.state)
    subject = EVENTS_SUBJECT.format(tenant=job.tenant, job_id=job.id)
    if wait:
        await bus.js.publish(subject, ev.SerializeToString())
        return
    fut = await bus.js.publish_async(subject, ev.SerializeToString())
    fut.add_done_callback(lambda f: f.cancelled() or f.exception() is None
                          or log.warning("event %s of job %s not stored: %s", phase, job.id, f.exception()))


async def enqueue(bus: Bus, job: Job, handover: int = 0) -> None:
    """Publish the job for its target's workers. JetStream drops a second message of the same id within the
    duplicate window; a handover (a stopping replica queueing its job again) is a new message, named by the
    stream sequence of the one it replaces."""
    msg_id = job_key(job.tenant, job.id) + (f".handover.{handover}" if handover else "")
    await bus.js.publish(
        JOBS_SUBJECT.format(target=target_name(job.target)),
        job.SerializeToString(),
        headers={"Nats-Msg-Id": msg_id},
    )


async def request_cancel(bus: Bus, tenant: str, job_id: str) -> None:
    await bus.nc.publish(CANCEL_SUBJECT.format(tenant=tenant, job_id=job_id), b"")


def finish(state: int, **fields) -> Callable[[Job], bool]:
    """A change that moves a non-terminal job to a terminal state (and never a terminal one)."""

    def change(job: Job) -> bool:
        if job.state in TERMINAL:
            return False
        job.state = state
        job.finished_at.CopyFrom(now())
        for name, value in fields.items():
            getattr(job, name).CopyFrom(value) if hasattr(value, "CopyFrom") else setattr(job, name, value)
        return True

    return change


async def live_targets(bus: Bus) -> list[TargetInfo]:
    return await _scan(bus, TARGETS_KV, ">", TargetInfo.FromString)


async def heartbeat(bus: Bus, info: TargetInfo) -> None:
    info.last_seen.CopyFrom(now())
    await bus.targets.put(f"{target_name(info.target)}.{info.service_id}", info.SerializeToString())


def cache_key(spec: JobSpec, target: int, toolchain_fingerprint: str) -> str:
    """Same model digest + canonical spec + the service's toolchain -> the same result."""
    h = hashlib.sha256(canonical_spec_bytes(spec, target))
    h.update(b"\0" + toolchain_fingerprint.encode())
    return h.hexdigest()


async def cached_job(bus: Bus, key: str, max_age_s: float | None = None) -> Job | None:
    """The job whose result answers this key, if one finished within max_age_s (KPT_RESULT_CACHE_TTL_S; 0:
    any age). The bucket's own TTL reclaims the space; this check also holds where the bucket was created
    before the setting changed."""
    max_age_s = settings.get("KPT_RESULT_CACHE_TTL_S") if max_age_s is None else max_age_s
    try:
        entry = await bus.cache.get(key)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    job = Job.FromString(entry.value)
    if max_age_s and job.HasField("finished_at") and time.time() - job.finished_at.ToSeconds() > max_age_s:
        return None
    return job


async def remember(bus: Bus, key: str, job: Job) -> None:
    await bus.cache.put(key, job.SerializeToString())


__all__ = [
    "cache_key",
    "cached_job",
    "remember",
    "JobState",
    "check_id",
    "create_job",
    "enqueue",
    "finish",
    "get_job",
    "heartbeat",
    "job_key",
    "list_jobs",
    "live_targets",
    "publish_event",
    "request_cancel",
    "update_job",
]
