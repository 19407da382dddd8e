"""Typed JSON errors: every failure leaves as {"error": {code, message, metadata}} with the catalog's
HTTP status (kpt.errors), the same code a gRPC client gets in its ErrorDetail."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from kpt.errors import Internal, InvalidArgument, KptError, NotFound

log = logging.getLogger(__name__)

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"$ref": "#/components/schemas/kpt.v1.ErrorDetail"}},
    "additionalProperties": False,
}


def response(err: KptError, status: int | None = None) -> JSONResponse:
    return JSONResponse({"error": err.to_dict()}, status_code=status or err.http_status)


def _location(err: dict) -> str:
    where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
    return f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))


async def _kpt(request: Request, exc: KptError) -> JSONResponse:
    log.info("%s %s -> %s", request.method, request.url.path, exc)
    return response(exc)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    return response(InvalidArgument("; ".join(_location(e) for e in exc.errors()[:5])))


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    # Starlette's own refusals (no such route, wrong method): typed like the rest.
    err = NotFound(f"no route {request.url.path}") if exc.status_code == 404 else InvalidArgument(str(exc.detail))
    return response(err, exc.status_code)


async def _untyped(request: Request, exc: Exception) -> JSONResponse:
    log.error("untyped error in %s %s", request.method, request.url.path, exc_info=exc)
    return response(Internal("internal error; see the gateway log"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(KptError, _kpt)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _untyped)


def responses(*statuses: int) -> dict:
    """OpenAPI entries for the typed errors an operation may return (besides 401, which all may)."""
    return {s: {"description": "typed error (docs/errors.md)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for s in sorted({400, 401, 422, *statuses})}
