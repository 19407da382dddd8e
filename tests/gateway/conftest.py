"""The gateway's Api on the session's real JetStream, with one live cpu target."""

import asyncio

import pytest

from kpt import contract as c
from kpt.bus import records
from kpt_gateway.api import Api
from tests.conftest import acheck_for


@pytest.fixture
async def api(bus, request):
    """Api with a live cpu target whose toolchain fingerprint is the test module's FINGERPRINT ("fp" by default):
    a module caching results under its own fingerprint never meets another module's entries."""
    service = f"cpu-{request.module.__name__.rsplit('.', 1)[-1]}"
    a = Api(bus, max_upload_bytes=1 << 20, require_live_target=True)
    await a.start()
    await records.heartbeat(bus, c.TargetInfo(target=c.Target.TARGET_CPU, service_id=service, available=True,
                                              last_seen=c.now(),
                                              toolchain_fingerprint=getattr(request.module, "FINGERPRINT", "fp")))
    await acheck_for(10, lambda: asyncio.sleep(0, [i for i in a.view.live() if i.service_id == service]))
    yield a
    await a.stop()
