"""The gateway process: `kpt-gateway` (or python -m kpt_gateway.server)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import grpc

from kpt import contract as c
from kpt import grpc_options, health, settings
from kpt.bus import core
from kpt_gateway.api import Api
from kpt_gateway.auth import Tokens
from kpt_gateway.grpc_api import GatewayServicer
from kpt_gateway.http.serve import HttpServer

log = logging.getLogger("kpt_gateway")


async def serve() -> None:
    logging.basicConfig(level=settings.get("KPT_LOG_LEVEL"), stream=sys.stderr,
                        format="%(asctime)s gateway %(name)s %(levelname)s %(message)s")
    tokens = Tokens.from_settings()
    bus = await core.connect(name="kpt-gateway")
    server = grpc.aio.server(options=grpc_options.server())
    api = Api(bus)
    await api.start()
    c.add_GatewayServicer_to_server(GatewayServicer(api, tokens), server)
    status = health.add(server)
    addr = settings.get("KPT_GATEWAY_ADDR")
    port = server.add_insecure_port(addr)
    if port == 0:
        raise SystemExit(f"cannot bind the gateway to {addr}")
    http_addr = settings.get("KPT_HTTP_ADDR")
    http = HttpServer(api, tokens, http_addr) if http_addr else None
    if http:
        await http.start()  # before gRPC answers: a client that sees gRPC up finds HTTP up too
    await server.start()
    await status.set("", health.SERVING)
    await status.set("kpt.v1.Gateway", health.SERVING)
    log.info("gateway serving gRPC on %s", addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await status.enter_graceful_shutdown()
    if http:
        await http.stop()
    await server.stop(5)
    await api.stop()
    await bus.close()


@settings.exit_on_invalid
def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()
