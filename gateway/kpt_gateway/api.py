"""The gateway's handlers, independent of the protocol: gRPC (and HTTP) adapters call these.

All state lives in JetStream (records, events, blobs), so any number of gateways can run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import uuid
from typing import AsyncIterator

import nats
from nats.js import api as js_api

from kpt import contract as c
from kpt import settings
from kpt.bus import records
from kpt.bus.core import EVENTS_SUBJECT, Bus
from kpt.errors import InvalidArgument, NotFound, TooLarge, Unavailable, Unsupported
from kpt_gateway import sniff, validate
from kpt_gateway.targets import TargetsView

log = logging.getLogger(__name__)


class Api:
    def __init__(self, bus: Bus, max_upload_bytes: int | None = None, require_live_target: bool | None = None) -> None:
        self.bus = bus
        self.max_upload = max_upload_bytes or settings.get("KPT_MAX_UPLOAD_BYTES")
        self.require_live = settings.get("KPT_REQUIRE_LIVE_TARGET") if require_live_target is None else require_live_target
        self.view = TargetsView(bus)

    async def start(self) -> None:
        await self.view.start()

    async def stop(self) -> None:
        await self.view.stop()

    # -- models ---------------------------------------------------------------------------
    async def upload(self, tenant: str, header: c.UploadHeader, chunks: AsyncIterator[bytes]) -> c.UploadModelResponse:
        if header.size_bytes > self.max_upload:
            raise TooLarge(f"model of {header.size_bytes} bytes is over the {self.max_upload}-byte upload limit")
        if header.format not in c.ModelFormat.values():
            raise InvalidArgument(f"unknown model format {header.format}; send exported_program, onnx or unspecified")
        h, size = hashlib.sha256(), 0
        fd, path = tempfile.mkstemp(prefix="kpt-upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_upload:
                        raise TooLarge(f"upload passed the {self.max_upload}-byte limit; refused")
                    if header.size_bytes and size > header.size_bytes:
                        raise InvalidArgument(f"upload is longer than the announced {header.size_bytes} bytes")
                    h.update(chunk)
                    f.write(chunk)
            digest = h.hexdigest()
            if header.size_bytes and size != header.size_bytes:
                raise InvalidArgument(f"upload ended after {size} of the announced {header.size_bytes} bytes")
            if header.sha256 and header.sha256.lower() != digest:
                raise InvalidArgument(f"sha256 mismatch: announced {header.sha256}, received {digest}")
            fmt = await asyncio.to_thread(sniff.sniff, path, header.format)  # up to 1 MiB parsed: off the event loop
            present = await self.bus.blobs.info(digest) is not None
            if not present:
                await self.bus.blobs.put_file(path, digest)
        finally:
            os.unlink(path)
        ref = c.ModelRef(sha256=digest, format=fmt, size_bytes=size, name=os.path.basename(header.name)[:200])
        await self.bus.models.put(f"{tenant}.{digest}", ref.SerializeToString())
        log.info("tenant %s uploaded %s (%d bytes, %s)", tenant, digest[:12], size, c.model_format_name(fmt))
        return c.UploadModelResponse(model=ref, already_present=present)

    async def _own_model(self, tenant: str, spec: c.JobSpec) -> None:
        if not spec.model.sha256:
            return
        try:
            entry = await self.bus.models.get(f"{tenant}.{spec.model.sha256}")
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            raise NotFound(f"no uploaded model {spec.model.sha256[:12]}…; upload it first") from None
        ref = c.ModelRef.FromString(entry.value)
        spec.model.format, spec.model.size_bytes = ref.format, ref.size_bytes
        spec.model.name = spec.model.name or ref.name

    # -- jobs -----------------------------------------------------------------------------
    async def submit(self, tenant: str, req: c.SubmitJobRequest) -> c.SubmitJobResponse:
        spec = validate.spec(req.spec)
        wanted = validate.targets(list(req.targets))
        if req.job_id:
            records.check_id("job id", req.job_id)
        await self._own_model(tenant, spec)
        live = self.view.live()
        group = req.job_id or uuid.uuid4().hex[:20]
        # Every target is resolved and every id checked before the first job is stored: a refused
        # fan-out leaves nothing queued behind it.
        planned = []
        for target in wanted:
            target, info = self._resolve(target, live)
            self._supports(spec, target, info)
            job_id = req.job_id if len(wanted) == 1 and req.job_id else (
                f"{req.job_id}-{c.target_name(target)}" if req.job_id else uuid.uuid4().hex[:20])
            planned.append((records.check_id("job id", job_id), target, info))
        jobs = [await self._submit_one(tenant, job_id, group, target, spec, info, req.bypass_cache)
                for job_id, target, info in planned]
        return c.SubmitJobResponse(group_id=group, jobs=jobs)

    def _resolve(self, target: int, live: list[c.TargetInfo]) -> tuple[int, c.TargetInfo | None]:
        if target == c.Target.TARGET_AUTO:
            for name in c.AUTO_ORDER:
                t = c.parse_target(name)
                if any(i.target == t and i.available for i in live):
                    return self._resolve(t, live)
            raise Unavailable("target auto: no service with a usable device is online")
        mine = [i for i in live if i.target == target]
        usable = [i for i in mine if i.available]
        if usable:
            return target, usable[0]
        if mine:
            raise Unavailable(f"target {c.target_name(target)} is online but unusable: {mine[0].unavailable_reason}")
        if self.require_live:
            raise Unavailable(f"no {c.target_name(target)} service is online; start one (kpt up) or pick another target")
        return target, None

    @staticmethod
    def _supports(spec: c.JobSpec, target: int, info: c.TargetInfo | None) -> None:
        if info is None:
            return
        missing = [f for f in spec.export_formats if f not in info.formats]
        if missing:
            names = ", ".join(c.format_name(f) for f in missing)
            raise Unsupported(f"target {c.target_name(target)} cannot export {names}; it offers "
                              f"{', '.join(c.format_name(f) for f in info.formats)}")

    async def _submit_one(self, tenant, job_id, group, target, spec, info, bypass_cache) -> c.Job:
        job = c.Job(id=job_id, group_id=group, tenant=tenant, target=target, spec=spec,
                    state=c.JobState.JOB_STATE_QUEUED, created_at=c.now())
        key = records.cache_key(spec, target, info.toolchain_fingerprint) if info else ""
        hit = None if (bypass_cache or not key) else await records.cached_job(self.bus, key)
        if hit is not None:
            job.state, job.cache_hit, job.cached_from = c.JobState.JOB_STATE_SUCCEEDED, True, hit.id
            job.result.CopyFrom(hit.result)
            for art in job.result.artifacts:  # the key leaves an upload's name out: the hit's is not this job's
                if "source_name" in art.metadata:
                    art.metadata["source_name"] = spec.model.name
            job.started_at.CopyFrom(job.created_at)
            job.finished_at.CopyFrom(job.created_at)
        if await records.create_job(self.bus, job) is None:
            existing, _ = await records.get_job(self.bus, tenant, job_id)
            if existing.state == c.JobState.JOB_STATE_QUEUED:
                await records.enqueue(self.bus, existing)  # same Nats-Msg-Id: JetStream drops a duplicate
            return existing
        if hit is not None:
            await records.publish_event(self.bus, job, "done", f"cache hit: result of job {hit.id}", 1.0)
            return job
        await records.publish_event(self.bus, job, "queued", f"on {c.target_name(target)}", 0.0, wait=False)
        await records.enqueue(self.bus, job)
        return job

    async def get(self, tenant: str, job_id: str) -> c.Job:
        return (await records.get_job(self.bus, tenant, job_id))[0]

    async def list(self, tenant: str, req: c.ListJobsRequest) -> c.ListJobsResponse:
        if req.page_size < 0:
            raise InvalidArgument("page_size must be >= 0")
        if req.state not in c.JobState.values():
            raise InvalidArgument(f"unknown job state {req.state}")
        jobs = await records.list_jobs(self.bus, tenant)
        jobs = [j for j in jobs if (not req.group_id or j.group_id == req.group_id)
                and (not req.state or j.state == req.state)]
        jobs.sort(key=lambda j: (j.created_at.ToNanoseconds(), j.id), reverse=True)
        size = min(req.page_size or 100, 1000)
        try:
            start = int(req.page_token or 0)
        except ValueError:
            start = -1
        if start < 0:
            raise InvalidArgument("page_token is not one this gateway returned")
        page = jobs[start:start + size]
        nxt = str(start + size) if start + size < len(jobs) else ""
        return c.ListJobsResponse(jobs=page, next_page_token=nxt)

    async def cancel(self, tenant: str, job_id: str) -> c.Job:
        job = await records.update_job(self.bus, tenant, job_id, records.finish(c.JobState.JOB_STATE_CANCELLED))
        if job.state == c.JobState.JOB_STATE_CANCELLED:
            await records.request_cancel(self.bus, tenant, job_id)
            await records.publish_event(self.bus, job, "cancelled", "cancelled by the user", 1.0)
        return job

    async def watch(self, tenant: str, job_id: str) -> AsyncIterator[c.WatchJobResponse]:
        job = await self.get(tenant, job_id)
        sub = await self.bus.js.subscribe(EVENTS_SUBJECT.format(tenant=tenant, job_id=job_id), ordered_consumer=True,
                                          deliver_policy=js_api.DeliverPolicy.ALL)
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=2.0)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    job = await self.get(tenant, job_id)
                    if job.state in c.TERMINAL:
                        yield c.WatchJobResponse(job=job)
                        return
                    continue
                ev = c.Event.FromString(msg.data)
                ev.seq = msg.metadata.sequence.stream
                yield c.WatchJobResponse(event=ev)
                if ev.state in c.TERMINAL or ev.phase in ("done", "failed", "cancelled"):
                    yield c.WatchJobResponse(job=await self.get(tenant, job_id))
                    return
        finally:
            await sub.unsubscribe()

    async def download(self, tenant: str, job_id: str, sha256: str) -> AsyncIterator[c.DownloadArtifactResponse]:
        if not validate.is_sha256(sha256):
            raise InvalidArgument("sha256 must be the 64 lowercase hex digits of one of the job's artifacts")
        job = await self.get(tenant, job_id)
        arts = [a for a in job.result.artifacts if a.sha256 == sha256]
        if not arts:
            raise NotFound(f"job {job_id} has no artifact {sha256[:12]}…")
        yield c.DownloadArtifactResponse(artifact=arts[0])
        async for chunk in self.bus.blobs.iter_chunks(sha256):
            yield c.DownloadArtifactResponse(chunk=chunk)

    async def targets(self, tenant: str) -> c.ListTargetsResponse:
        infos = self.view.live()
        infos.sort(key=lambda i: (i.target, i.service_id))
        return c.ListTargetsResponse(targets=infos)
