"""Suite-wide fixtures: a real nats-server with JetStream per test session, check_for(), and the session's
compiler cache (KPT_CACHE_DIR)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest

from kpt import natsd


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """Under pytest-xdist (make test), tests that share a node id would run once: its scheduler keys tests by id.
    schemathesis' per-operation tests do (the Makefile runs their file in a plain run), so such a collection is
    refused rather than silently cut."""
    twice = sorted(n for n, c in Counter(ids).items() if c > 1)
    if twice:
        raise pytest.UsageError(f"{len(twice)} node id(s) shared by several tests, which xdist would run once: "
                                f"{', '.join(twice[:5])}")


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
