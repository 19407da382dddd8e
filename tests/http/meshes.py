"""Meshes the HTTP and browser tests start: kpt.local.Mesh (real nats-server, gateway process, services),
reached over the gateway's HTTP address, plus SSE parsing shared by the tests."""

from __future__ import annotations

import io
import json
import os
import zipfile

import httpx

from tests.e2e import mesh as meshlib

TOKENS = meshlib.TOKENS
AUTH = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}


def start(tmp: str, cache_dir: str, targets=("cpu",), **env):
    """A mesh whose cpu service shares one compiler cache with the session's other meshes."""
    return meshlib.start(tmp, targets=targets, KPT_CACHE_DIR=cache_dir, **env)


def client(mesh, headers=AUTH) -> httpx.Client:
    return httpx.Client(base_url=mesh.http_url, headers=headers, timeout=30)


def pt2_bytes(payload: bytes = b"{}") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/archive_format", "pt2")
        z.writestr("m/models/model.json", payload)
    return buf.getvalue()


def sse_frames(lines) -> list[tuple[str, dict]]:
    """(event, data) of each frame of a text/event-stream, in order; keepalive comments dropped."""
    frames, event, data = [], "message", []
    for line in lines:
        if line == "":
            if data:
                frames.append((event, json.loads("\n".join(data))))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    return frames


def quick_spec(level: str = "LEVEL_O1") -> dict:
    """zoo mlp with a short benchmark: finishes in well under a minute on the cpu service."""
    return {"kind": "JOB_KIND_OPTIMIZE", "level": level, "model": {"format": "MODEL_FORMAT_ZOO", "name": "mlp"},
            "benchmark": {"warmup_iters": 3, "min_iters": 200, "max_iters": 400, "time_budget_s": 1.0}}


def cache_dir(tmp_path_factory) -> str:
    path = os.path.join(str(tmp_path_factory.getbasetemp()), "kpt-compile-cache")
    os.makedirs(path, exist_ok=True)
    return path
