"""Suite-wide fixtures: a real nats-server with JetStream per test session, check_for(), and the session's
compiler cache (KPT_CACHE_DIR)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from kpt import natsd


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    server = natsd.start(str(tmp_path_factory.mktemp("nats")))
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture
async def bus(nats_url):
    """A kpt bus (kpt.bus.core.connect: streams, buckets, object store) on the session's NATS server."""
    from kpt.bus import core

    b = await core.connect(nats_url)
    yield b
    await b.close()


def check_for(timeout: float, fn, interval: float = 0.05):
    """Poll fn() until it returns a truthy value; raise with the last error when time runs out."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - kept and re-raised as the failure reason
            last = e
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s; last: {last!r}")


async def acheck_for(timeout: float, fn, interval: float = 0.05):
    """Async check_for: fn is an async callable."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = await fn()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - kept and re-raised as the failure reason
            last = e
        await asyncio.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s; last: {last!r}")


@pytest.fixture(scope="session")
def kpt_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One compiler cache for the session (cold at its start), like a service's KPT_CACHE_DIR."""
    path = str(tmp_path_factory.mktemp("kpt-cache"))
    old = os.environ.get("KPT_CACHE_DIR")
    os.environ["KPT_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("KPT_CACHE_DIR", None)
    else:
        os.environ["KPT_CACHE_DIR"] = old
