"""uvicorn serving the FastAPI app inside the gateway's asyncio loop, next to the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from kpt_gateway.api import Api
from kpt_gateway.auth import Tokens
from kpt_gateway.http.app import create_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    def capture_signals(self):
        # The gateway's own loop handlers stop gRPC and HTTP together; uvicorn must not take SIGTERM.
        return contextlib.nullcontext()


def bind(addr: str) -> socket.socket:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise SystemExit(f"KPT_HTTP_ADDR={addr!r} is invalid; expected host:port, e.g. 127.0.0.1:8080")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        raise SystemExit(f"cannot bind the gateway's HTTP API to {addr}: {e}") from None
    return sock


class HttpServer:
    def __init__(self, api: Api, tokens: Tokens, addr: str) -> None:
        self.sock = bind(addr)
        config = uvicorn.Config(create_app(api, tokens), lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=3)
        self.server = _Server(config)
        self.task: asyncio.Task | None = None
        self.addr = addr

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises what stopped it
                raise SystemExit(f"the HTTP server on {self.addr} stopped while starting")
            await asyncio.sleep(0.02)
        log.info("gateway serving HTTP on http://%s/ (OpenAPI at /openapi.json)", self.addr)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task:
            await self.task
        self.sock.close()
