"""Names and set-up of every stream, KV bucket and object store, and the connection handles.

Streams and buckets are created idempotently by whichever process starts first (gateway or
service); their configs are here and nowhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats
from nats.js import api
from nats.js.kv import KeyValue

from kpt import settings
from kpt.bus.blobs import BlobStore
from kpt.errors import Unavailable

log = logging.getLogger(__name__)

JOBS_STREAM = "KPT_JOBS"  # work queue: kpt.jobs.<target>
EVENTS_STREAM = "KPT_EVENTS"  # kpt.events.<tenant>.<job id>
JOBS_SUBJECT = "kpt.jobs.{target}"
# Job ids are unique per tenant only: both subjects name the tenant, so one tenant never sees (or stops) another's
# job of the same id.
EVENTS_SUBJECT = "kpt.events.{tenant}.{job_id}"
CANCEL_SUBJECT = "kpt.cancel.{tenant}.{job_id}"  # core NATS: tells the running replica to stop
JOBS_KV = "kpt_jobs"  # <tenant>.<job id> -> Job
MODELS_KV = "kpt_models"  # <tenant>.<sha256> -> ModelRef (who may use which upload)
TARGETS_KV = "kpt_targets"  # <target>.<service id> -> TargetInfo, expires without heartbeats
CACHE_KV = "kpt_cache"  # <cache key> -> Job that produced the result
BLOB_BUCKET = "kpt_blobs"  # object store: name = sha256 of the bytes
EVENTS_MAX_AGE_S = 7 * 24 * 3600
DUPLICATE_WINDOW_S = 24 * 3600  # a resubmitted job id within a day is dropped by JetStream too
CONNECT_ATTEMPTS = 3  # a first connect that fails this many more times (2 s apart) is Unavailable


@dataclass
class Bus:
    nc: nats.NATS
    js: object  # nats.js.JetStreamContext
    jobs: KeyValue
    models: KeyValue
    targets: KeyValue
    cache: KeyValue
    blobs: BlobStore

    async def close(self) -> None:
        await self.nc.drain()


async def _stream(js, cfg: api.StreamConfig) -> None:
    try:
        await js.add_stream(cfg)
    except nats.js.errors.BadRequestError:
        # exists with another config (an older version): bring it up to date
        await js.update_stream(cfg)


async def _kv(js, bucket: str, **kw) -> KeyValue:
    try:
        return await js.create_key_value(bucket=bucket, **kw)
    except nats.js.errors.BadRequestError:
        return await js.key_value(bucket)


async def connect(url: str | None = None, name: str = "kpt") -> Bus:
    url = url or settings.get("KPT_NATS_URL")
    try:
        # nats-py applies max_reconnect_attempts to the first connect too, where -1 retries forever: bound the
        # first connect, then reconnect without limit.
        nc = await nats.connect(url, name=name, connect_timeout=5, max_reconnect_attempts=CONNECT_ATTEMPTS)
    except (OSError, nats.errors.NoServersError, TimeoutError) as e:
        raise Unavailable(f"cannot reach NATS at {url}: {e}; is it running? (kpt up starts one)") from None
    nc.options["max_reconnect_attempts"] = -1
    js = nc.jetstream(timeout=10)
    replicas = settings.get("KPT_STREAM_REPLICAS")
    storage = api.StorageType.FILE
    await _stream(
        js,
        api.StreamConfig(
            name=JOBS_STREAM,
            subjects=["kpt.jobs.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=storage,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
    )
    await _stream(
        js,
        api.StreamConfig(
            name=EVENTS_STREAM,
            subjects=["kpt.events.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=replicas,
            max_age=EVENTS_MAX_AGE_S,
        ),
    )
    kv = dict(storage=storage, replicas=replicas)
    blobs = BlobStore(js, bucket=BLOB_BUCKET, replicas=replicas)
    await blobs.ensure()
    return Bus(
        nc=nc,
        js=js,
        jobs=await _kv(js, JOBS_KV, history=1, **kv),
        models=await _kv(js, MODELS_KV, history=1, **kv),
        targets=await _kv(js, TARGETS_KV, history=1, ttl=settings.get("KPT_TARGET_TTL_S"), **kv),
        cache=await _kv(js, CACHE_KV, history=1, ttl=settings.get("KPT_RESULT_CACHE_TTL_S") or None, **kv),
        blobs=blobs,
    )
