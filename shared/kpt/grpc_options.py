"""The gateway's gRPC channel settings, shared by its server and the client SDK.

A stream over a connection that died without a close (a peer's host lost, a NAT or load balancer dropping it
silently) never ends by itself: an upload or download of a multi-GB model would hang. HTTP/2 keepalive pings
find such a connection: each side pings after KPT_GRPC_KEEPALIVE_S without traffic and closes the connection
when no answer comes within as long again, failing its calls UNAVAILABLE; any ping in flight (gRPC's own
flow-control pings too, which otherwise wait 60 s) gets the same time. The server accepts pings that often (its
default would answer them with GOAWAY "too many pings"). Measured on loopback with the gateway stopped by SIGSTOP
mid-stream: the call failed 1.1 s after with KPT_GRPC_KEEPALIVE_S=1, 60.1 s after without the ping timeout.
"""

from __future__ import annotations

from kpt import settings

MAX_MESSAGE = 16 << 20  # upload/download chunks are a few MiB; headroom for large results


def _keepalive_ms() -> int:
    return int(settings.get("KPT_GRPC_KEEPALIVE_S") * 1000)


def _common() -> list[tuple[str, int]]:
    ms = _keepalive_ms()
    return [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.keepalive_time_ms", ms), ("grpc.keepalive_timeout_ms", ms),
            ("grpc.http2.max_pings_without_data", 0), ("grpc.http2.ping_timeout_ms", ms)]


def client() -> list[tuple[str, int]]:
    return _common()


def server() -> list[tuple[str, int]]:
    return [*_common(), ("grpc.http2.min_recv_ping_interval_without_data_ms", _keepalive_ms() // 2),
            ("grpc.http2.max_ping_strikes", 0)]
