"""A worker: pulls jobs for one target from the durable consumer all replicas share, runs each in
a child process, reports progress and the result, then acks.

Delivery rules (JetStream does the bookkeeping, nothing home-made):
- max_deliver = KPT_MAX_ATTEMPTS + 1. A replica that dies mid-job stops sending in_progress;
  after ack_wait the job is redelivered to another replica. The extra final delivery is never
  run: it marks the job FAILED with the reason, so a job whose every attempt killed its replica
  still ends, and nothing is lost silently.
- A terminal record is final: a redelivered job that already finished is acked and dropped, so a
  job has exactly one result.
- Stopping (SIGTERM): no new job is taken; the running one gets KPT_DRAIN_S to finish. Past that it is
  stopped and handed over: its record goes back to QUEUED and the job is published again as a new
  message (its delivery count starts afresh: a replica being stopped is not the job's failure), and the
  old message is acked. The grace periods of compose and Kubernetes exceed KPT_DRAIN_S.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from nats.js import api

from kpt import contract as c
from kpt.bus import records
from kpt.bus.core import CANCEL_SUBJECT, JOBS_STREAM, JOBS_SUBJECT, Bus
from kpt.errors import Cancelled, Internal, KptError, Unavailable, WorkerCrashed, cause
from kpt.worker import trim
from kpt.worker.process import Child

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    target: str  # cpu, nvidia, ...
    handler: str  # module:function that runs one job in the child
    capability: str  # module:function that returns TargetInfo as a dict, in the child
    service_id: str
    python: str
    ack_wait_s: float = 30.0
    max_attempts: int = 3
    job_timeout_s: float = 3600.0
    memory_bytes: int = 16 << 30
    child_env: dict[str, str] = field(default_factory=dict)  # e.g. CUDA_VISIBLE_DEVICES of this slot
    drain_s: float = 90.0  # on stop, how long the running job may go on before it is handed over
    cache_dir: str = ""  # KPT_CACHE_DIR, trimmed to cache_max_bytes after each job (kpt.worker.trim)
    cache_max_bytes: int = 0


class Worker:
    def __init__(self, bus: Bus, cfg: WorkerConfig) -> None:
        self.bus = bus
        self.cfg = cfg
        self.info = c.TargetInfo()
        self._warm: asyncio.Task | None = None  # the next job's child, starting in the background
        self._current: tuple[c.Job, Child] | None = None
        self._handing_over = False
        self.jobs_run = 0

    async def _spawn(self) -> Child:
        child = await Child.spawn(self.cfg.handler, self.cfg.capability, python=self.cfg.python,
                                  env=self.cfg.child_env, memory_bytes=self.cfg.memory_bytes)
        cap = await child.ready()
        info = c.from_dict(cap, c.TargetInfo)
        info.service_id = self.cfg.service_id
        self.info = info
        return child

    async def start(self) -> None:
        """Spawn the first warm child (it reports the capability) and announce the target."""
        self._warm = asyncio.create_task(self._spawn())
        await self._warm
        await records.heartbeat(self.bus, self.info)
        log.info("worker %s ready: %s (%s), available=%s", self.cfg.service_id, self.info.device_name,
                 self.info.device_kind, self.info.available)

    async def heartbeats(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await records.heartbeat(self.bus, self.info)

    async def _consumer(self):
        durable = f"svc_{self.cfg.target}"
        cfg = api.ConsumerConfig(
            durable_name=durable,
            filter_subject=JOBS_SUBJECT.format(target=self.cfg.target),
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.cfg.ack_wait_s,
            max_deliver=self.cfg.max_attempts + 1,
            max_ack_pending=-1,
        )
        await self.bus.js.add_consumer(JOBS_STREAM, cfg)
        return await self.bus.js.pull_subscribe_bind(durable=durable, stream=JOBS_STREAM)

    async def run(self, stop: asyncio.Event) -> None:
        sub = await self._consumer()
        cancel_sub = await self.bus.nc.subscribe(CANCEL_SUBJECT.format(tenant="*", job_id="*"), cb=self._on_cancel)
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(1, timeout=1.0)
                except TimeoutError:
                    continue
                for msg in msgs:
                    await self._handle_until_drained(msg, stop)
        finally:
            # The pull subscription too: NATS' drain otherwise waits out its 30 s timeout on it, and a stopped
            # service (SIGTERM from docker, Kubernetes or `kpt down`) hung past its grace period to a SIGKILL.
            await sub.unsubscribe()
            await cancel_sub.unsubscribe()
            if self._warm:
                child = await self._warm
                await child.close()

    async def _handle_until_drained(self, msg, stop: asyncio.Event) -> None:
        """Handle one job message; once `stop` is set, give it drain_s more, then hand the job over."""
        task = asyncio.create_task(self.handle(msg))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                log.info("stopping: job message %s may run %.0fs more before it is handed over",
                         msg.metadata.sequence.stream, self.cfg.drain_s)
                await asyncio.wait({task}, timeout=self.cfg.drain_s)
            if not task.done():
                self._handing_over = True  # a child started from now on is stopped at once (_run)
                if self._current:
                    self._current[1].cancel()
                await task  # the child is gone: _run hands the job over and returns
            task.result()
        except Exception:  # noqa: BLE001 - one job's trouble never stops the service
            log.exception("job message %s not handled; it is redelivered after ack_wait", msg.metadata.sequence.stream)
        finally:
            stopping.cancel()
            self._handing_over = False

    async def _on_cancel(self, msg) -> None:
        tenant, job_id = msg.subject.split(".")[-2:]
        current = self._current
        if current and (current[0].tenant, current[0].id) == (tenant, job_id):
            log.info("cancelling job %s of %s", job_id, tenant)
            current[1].cancel()

    async def handle(self, msg) -> None:
        try:
            job = c.Job.FromString(msg.data)
        except DecodeError as e:
            log.error("job message %s is not a Job (%s); dropping it", msg.metadata.sequence.stream, e)
            await msg.term()
            return
        attempt = msg.metadata.num_delivered
        try:
            current, rev = await records.get_job(self.bus, job.tenant, job.id)
        except KptError:
            log.warning("job %s has no record; dropping the message", job.id)
            await msg.term()
            return
        if current.state in c.TERMINAL:
            await msg.ack()  # finished (or cancelled) earlier: one result only
            return
        if attempt > self.cfg.max_attempts:
            reason = (f"gave up after {self.cfg.max_attempts} attempts: each ended without a result "
                      f"(the replica running it died or stopped reporting progress)")
            await self._fail(job, KptError(reason), msg, code="GAVE_UP")
            return
        if not self.info.available:
            await self._fail(job, Unavailable(f"{self.cfg.target} service {self.cfg.service_id} has no usable "
                                              f"device: {self.info.unavailable_reason}"), msg)
            return
        await self._run(current, rev, attempt, msg)

    async def _fail(self, job: c.Job, err: KptError, msg, code: str | None = None) -> None:
        detail = c.ErrorDetail(code=code or err.code, message=err.message, metadata=err.metadata)
        done = await records.update_job(self.bus, job.tenant, job.id, records.finish(c.JobState.JOB_STATE_FAILED, error=detail))
        await records.publish_event(self.bus, done, "failed", f"{detail.code}: {detail.message}", 1.0)
        await msg.term()

    async def _run(self, job: c.Job, rev: int, attempt: int, msg) -> None:
        def start(j: c.Job) -> bool:
            if j.state in c.TERMINAL:
                return False
            j.state, j.attempt, j.service_id = c.JobState.JOB_STATE_RUNNING, attempt, self.cfg.service_id
            j.started_at.CopyFrom(c.now())
            return True

        job = await records.update_job(self.bus, job.tenant, job.id, start, known=(job, rev))
        if job.state != c.JobState.JOB_STATE_RUNNING:
            await msg.ack()
            return
        await records.publish_event(self.bus, job, "started", f"attempt {attempt} on {self.cfg.service_id}", 0.0,
                                    wait=False)
        ticker = asyncio.create_task(self._keep_alive(msg))
        workdir = tempfile.mkdtemp(prefix=f"kpt-{job.id}-")
        try:
            child = await self._child()
            self._current = (job, child)
            if self._handing_over:
                child.cancel()
            result = await self._execute(job, child, workdir)
        except KptError as e:
            await self._after_error(job, e, attempt, msg)
        except Exception as e:  # noqa: BLE001 - the boundary: anything untyped fails the job as Internal, logged
            log.exception("job %s: untyped error", job.id)
            await self._after_error(job, Internal(cause(e)), attempt, msg)
        else:
            await self._succeed(job, result, msg)
        finally:
            self._current = None
            ticker.cancel()
            shutil.rmtree(workdir, ignore_errors=True)
            if self.cfg.cache_dir:
                await asyncio.to_thread(trim.trim, self.cfg.cache_dir, self.cfg.cache_max_bytes)
            self.jobs_run += 1
            if self._warm is None:
                self._warm = asyncio.create_task(self._spawn())

    async def _child(self) -> Child:
        warm, self._warm = self._warm, None
        try:
            return await (warm or self._spawn())
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            raise WorkerCrashed(f"could not start the job's process: {e}") from e

    async def _keep_alive(self, msg) -> None:
        while True:
            await asyncio.sleep(max(self.cfg.ack_wait_s / 3, 0.2))
            try:
                await msg.in_progress()
            except Exception as e:  # noqa: BLE001 - a missed beat is retried; JetStream redelivers after ack_wait
                log.warning("job message %s: in-progress heartbeat failed (%s); it may be redelivered",
                            msg.metadata.sequence.stream, cause(e))

    async def _execute(self, job: c.Job, child: Child, workdir: str) -> c.Result:
        model_path = None
        if job.spec.model.sha256:
            model_path = os.path.join(workdir, "model.bin")
            await records.publish_event(self.bus, job, "fetch", f"model {job.spec.model.sha256[:12]}", 0.01)
            await self.bus.blobs.get_to_file(job.spec.model.sha256, model_path)
        art_dir = os.path.join(workdir, "out")
        os.makedirs(art_dir)

        async def on_event(ev: dict) -> None:
            await records.publish_event(self.bus, job, ev.get("phase", ""), ev.get("message", ""),
                                        ev.get("progress", 0.0))

        payload = {"job": c.to_dict(job), "model_path": model_path, "workdir": art_dir}
        timeout = job.spec.timeout_s or self.cfg.job_timeout_s
        raw = await child.run(payload, on_event, timeout)
        result = c.from_dict(raw, c.Result)
        await records.publish_event(self.bus, job, "upload", f"{len(result.artifacts)} artifact(s)", 0.98)
        for art in result.artifacts:
            path = os.path.join(art_dir, os.path.basename(art.name))
            blob = await self.bus.blobs.put_file(path)
            art.sha256, art.size_bytes = blob.sha256, blob.size
        return result

    async def _after_error(self, job: c.Job, err: KptError, attempt: int, msg) -> None:
        if isinstance(err, Cancelled) and self._handing_over:
            await self._hand_over(job, msg)
            return
        if isinstance(err, Cancelled):
            await msg.ack()  # the record already says CANCELLED
            return
        if err.retryable and attempt < self.cfg.max_attempts:
            def requeue(j: c.Job) -> bool:
                if j.state in c.TERMINAL:
                    return False
                j.state = c.JobState.JOB_STATE_QUEUED
                return True

            job = await records.update_job(self.bus, job.tenant, job.id, requeue)
            await records.publish_event(self.bus, job, "retry", f"attempt {attempt} failed ({err}); retrying", 0.0)
            await msg.nak(delay=1)
            return
        await self._fail(job, err, msg)

    async def _hand_over(self, job: c.Job, msg) -> None:
        """The service is stopping and the job outlasted the drain: queue it again for another replica."""
        def requeue(j: c.Job) -> bool:
            if j.state in c.TERMINAL:
                return False
            j.state, j.service_id = c.JobState.JOB_STATE_QUEUED, ""
            return True

        job = await records.update_job(self.bus, job.tenant, job.id, requeue)
        if job.state == c.JobState.JOB_STATE_QUEUED:
            await records.enqueue(self.bus, job, handover=msg.metadata.sequence.stream)
            await records.publish_event(self.bus, job, "handover",
                                        f"{self.cfg.service_id} is stopping; the job is queued for another replica", 0.0)
            log.info("job %s handed over (service stopping)", job.id)
        await msg.ack_sync()

    async def _succeed(self, job: c.Job, result: c.Result, msg) -> None:
        done = await records.update_job(self.bus, job.tenant, job.id,
                                        records.finish(c.JobState.JOB_STATE_SUCCEEDED, result=result))
        if done.state == c.JobState.JOB_STATE_SUCCEEDED and done.result == result:
            key = records.cache_key(done.spec, done.target, self.info.toolchain_fingerprint)
            await records.remember(self.bus, key, done)
            await records.publish_event(self.bus, done, "done", f"speedup {result.speedup:.2f}x", 1.0)
        await msg.ack_sync()  # confirmed by the server before the next fetch
