"""grpc.health.v1 on every process (Kubernetes probes it; `kpt status` reads it)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def add(server: grpc.aio.Server) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def serve(addr: str) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """A gRPC server with only the health service (for processes that serve no other gRPC)."""
    server = grpc.aio.server()
    servicer = add(server)
    port = server.add_insecure_port(addr)
    await server.start()
    return server, servicer, port


async def check(addr: str, timeout: float = 2.0) -> str:
    async with grpc.aio.insecure_channel(addr) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
