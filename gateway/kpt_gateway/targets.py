"""The gateway's live view of the targets bucket: one KV watch kept open, instead of a bucket scan
per submit. Entries whose heartbeat is older than the TTL are left out (KV expiry is silent)."""

from __future__ import annotations

import asyncio
import logging
import time

from kpt import contract as c
from kpt import settings
from kpt.bus.core import Bus

log = logging.getLogger(__name__)


class TargetsView:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.ttl = settings.get("KPT_TARGET_TTL_S")
        self._infos: dict[str, c.TargetInfo] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch())
        await asyncio.wait_for(self._ready.wait(), 30)

    async def _watch(self) -> None:
        while True:
            watcher = None
            try:  # opening the watch can fail too (NATS reconnecting): retried like a broken watch
                watcher = await self.bus.targets.watchall()
                async for entry in watcher:
                    if entry is None:
                        self._ready.set()
                        continue
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        self._infos.pop(entry.key, None)
                    else:
                        self._infos[entry.key] = c.TargetInfo.FromString(entry.value)
                    if entry.delta == 0:
                        self._ready.set()
            except Exception:  # noqa: BLE001 - a broken watch is logged and re-opened
                log.exception("targets watch failed; re-opening")
                await asyncio.sleep(1)
            finally:
                if watcher is not None:
                    try:
                        await watcher.stop()
                    except Exception:  # noqa: BLE001 - a watch on a lost connection may not stop cleanly
                        log.warning("stopping the broken targets watch failed", exc_info=True)

    def live(self) -> list[c.TargetInfo]:
        cutoff = time.time() - self.ttl
        return [i for i in self._infos.values() if i.last_seen.seconds + i.last_seen.nanos / 1e9 >= cutoff]

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
