"""The FastAPI app: routes over kpt_gateway.api.Api, typed errors, the OpenAPI spec, the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from kpt import contract as c
from kpt_gateway.api import Api
from kpt_gateway.auth import Tokens
from kpt_gateway.http import errors, routes, schemas

WEB = Path(__file__).resolve().parent.parent / "web"
DESCRIPTION = """The KernelPyTorch Mesh gateway over HTTP: the same calls as the gRPC `kpt.v1.Gateway`
service, with the same handlers behind both. Bodies use the proto3 JSON mapping (proto field names,
enums by name, 64-bit integers as strings). Every call needs `Authorization: Bearer <token>`.
Errors are `{"error": {"code", "message", "metadata"}}` with the status of docs/errors.md."""
MESSAGES = (c.UploadModelResponse, c.SubmitJobRequest, c.SubmitJobResponse, c.GetJobResponse, c.ListJobsResponse,
            c.CancelJobResponse, c.ListTargetsResponse, c.WatchJobResponse, c.ErrorDetail)


def create_app(api: Api, tokens: Tokens) -> FastAPI:
    app = FastAPI(title="KernelPyTorch Mesh gateway", version="1", description=DESCRIPTION, redoc_url=None)
    app.state.api, app.state.tokens = api, tokens
    errors.install(app)
    app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            found = spec.setdefault("components", {}).setdefault("schemas", {})
            found.update(schemas.components(*MESSAGES))
            found["Error"] = errors.ERROR_SCHEMA
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi
    return app
