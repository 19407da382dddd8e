"""Connecting to the bus."""

import socket

import pytest

from kpt.bus import core
from kpt.errors import Unavailable

pytestmark = pytest.mark.timeout(60)


async def test_no_server_is_unavailable_not_a_hang():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unavailable, match="cannot reach NATS"):
        await core.connect(f"nats://127.0.0.1:{port}")


async def test_a_connected_bus_reconnects_without_limit(nats_url):
    bus = await core.connect(nats_url)
    try:
        assert bus.nc.options["max_reconnect_attempts"] == -1
    finally:
        await bus.close()
