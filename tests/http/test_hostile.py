"""Hostile bodies against the HTTP app in process (httpx over ASGI, a real JetStream behind the Api):
each gets a typed JSON error, and nothing is held in memory past a limit."""

import json

import httpx
import pytest

from kpt.bus import core
from kpt_gateway.api import Api
from kpt_gateway.auth import Tokens
from kpt_gateway.http import routes
from kpt_gateway.http.app import create_app
from tests.http import meshes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def http(nats_url):
    bus = await core.connect(nats_url)
    api = Api(bus, max_upload_bytes=1 << 20, require_live_target=False)
    await api.start()
    app = create_app(api, Tokens({"tok-alice": "alice"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                 headers=meshes.AUTH) as client:
        yield client
    await api.stop()
    await bus.close()


def error_of(r, status: int, code: str) -> dict:
    assert (r.status_code, r.headers["content-type"]) == (status, "application/json"), r.text
    assert r.json()["error"]["code"] == code, r.json()
    return r.json()["error"]


async def test_deeply_nested_json_is_invalid_argument(http):
    r = await http.post("/v1/jobs", content=b"[" * 100_000, headers={"content-type": "application/json"})
    error_of(r, 400, "INVALID_ARGUMENT")


async def test_json_body_past_the_limit_is_too_large(http):
    """Padding after a small valid spec: only a cap on the bytes read refuses it (gRPC's is MAX_MESSAGE)."""
    async def body():  # streamed: the limit must cut it off, not read it whole first
        yield json.dumps({"spec": meshes.quick_spec(), "targets": ["TARGET_TPU"]}).encode()
        for _ in range(routes.MAX_JSON_BYTES // (1 << 20) + 1):
            yield b" " * (1 << 20)

    r = await http.post("/v1/jobs", content=body(), headers={"content-type": "application/json"})
    error_of(r, 413, "TOO_LARGE")


async def test_submit_documents_too_large(http):
    assert "413" in (await http.get("/openapi.json")).json()["paths"]["/v1/jobs"]["post"]["responses"]
