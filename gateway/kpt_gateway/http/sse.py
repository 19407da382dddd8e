"""Server-sent events from Api.watch: `event: event` frames while the job runs, one `event: job` frame
with the finished job last, `event: error` with a typed error if the watch fails midway, and a
comment line every KEEPALIVE_S so proxies keep a quiet stream (a long compile) open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import AsyncIterator

from kpt import contract as c
from kpt.errors import Internal, KptError

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0


def frame(event: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream(updates: AsyncIterator[c.WatchJobResponse]) -> AsyncIterator[bytes]:
    it = updates.__aiter__()
    nxt: asyncio.Future | None = None
    try:
        while True:
            nxt = asyncio.ensure_future(it.__anext__())
            while not (await asyncio.wait({nxt}, timeout=KEEPALIVE_S))[0]:
                yield b": keepalive\n\n"
            try:
                update = nxt.result()
            except StopAsyncIteration:
                return
            except KptError as e:
                yield frame("error", e.to_dict())
                return
            except Exception as e:  # noqa: BLE001 - logged in full; the client gets a typed INTERNAL
                log.error("watch failed", exc_info=e)
                yield frame("error", Internal("internal error; see the gateway log").to_dict())
                return
            if update.WhichOneof("update") == "event":
                yield frame("event", c.to_dict(update.event), update.event.seq)
            else:
                yield frame("job", c.to_dict(update.job))
    finally:
        # The client went away (or the watch ended): stop the pending step, then close the generator
        # so Api.watch unsubscribes from the events subject.
        if nxt is not None and not nxt.done():
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
        await it.aclose()
