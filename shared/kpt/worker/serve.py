"""The main of every optimizer service process: bus, health, heartbeats, and its workers.

One worker per slot: a slot is a set of environment variables for the job's child (e.g.
CUDA_VISIBLE_DEVICES=1), so one process serves a node with any number of devices.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from kpt import health, settings
from kpt.bus import core
from kpt.worker.runtime import Worker, WorkerConfig

log = logging.getLogger(__name__)


def setup_logging(name: str) -> None:
    logging.basicConfig(level=settings.get("KPT_LOG_LEVEL"), stream=sys.stderr,
                        format=f"%(asctime)s {name} %(name)s %(levelname)s %(message)s")


def default_service_id(target: str) -> str:
    host = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in socket.gethostname())
    return f"{target}-{host}-{os.getpid()}"


async def serve(target: str, handler: str, capability: str, slots: list[dict[str, str]] | None = None) -> None:
    setup_logging(f"svc-{target}")
    bus = await core.connect(name=f"kpt-{target}")
    server, status, port = await health.serve(settings.get("KPT_HEALTH_ADDR"))
    await status.set("", health.NOT_SERVING)
    base_id = settings.get("KPT_SERVICE_ID") or default_service_id(target)
    slots = slots or [{}]
    workers = []
    for i, env in enumerate(slots):
        cfg = WorkerConfig(
            target=target, handler=handler, capability=capability,
            service_id=base_id if len(slots) == 1 else f"{base_id}-{i}",
            python=sys.executable,
            ack_wait_s=settings.get("KPT_ACK_WAIT_S"),
            max_attempts=settings.get("KPT_MAX_ATTEMPTS"),
            job_timeout_s=settings.get("KPT_JOB_TIMEOUT_S"),
            memory_bytes=settings.get("KPT_JOB_MEMORY_BYTES"),
            child_env=env,
            drain_s=settings.get("KPT_DRAIN_S"),
            cache_dir=settings.get("KPT_CACHE_DIR"),
            cache_max_bytes=settings.get("KPT_COMPILER_CACHE_MAX_BYTES"),
        )
        workers.append(Worker(bus, cfg))
    await asyncio.gather(*(w.start() for w in workers))
    await status.set("", health.SERVING)
    log.info("%s service %s serving (%d worker(s)); health on port %d", target, base_id, len(workers), port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    every = settings.get("KPT_HEARTBEAT_S")
    beats = [asyncio.create_task(w.heartbeats(every)) for w in workers]
    try:
        await asyncio.gather(*(w.run(stop) for w in workers))
    finally:
        for b in beats:
            b.cancel()
        await status.set("", health.NOT_SERVING)
        await server.stop(1)
        await bus.close()


def run(target: str, handler: str, capability: str, slots: list[dict[str, str]] | None = None) -> None:
    settings.exit_on_invalid(lambda: asyncio.run(serve(target, handler, capability, slots)))()
