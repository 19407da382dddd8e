"""The HTTP routes: each one authenticates, converts JSON <-> proto, and calls the same Api handler
the gRPC adapter calls. No job logic lives here."""

from __future__ import annotations

import json
import re
from typing import Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kpt import catalog
from kpt import contract as c
from kpt.errors import InvalidArgument, TooLarge
from kpt_gateway.api import Api
from kpt_gateway.http import sse
from kpt_gateway.http.errors import responses
from kpt_gateway.http.schemas import ref
from kpt_gateway.http.upload import FilePart

router = APIRouter(prefix="/v1")
bearer = HTTPBearer(auto_error=False, description="a token from the gateway's KPT_TOKENS / KPT_TOKENS_FILE")

ModelFormatName = Literal[tuple(c.ModelFormat.keys())]  # type: ignore[valid-type]
JobStateName = Literal[tuple(c.JobState.keys())]  # type: ignore[valid-type]
JOB_ID = Path(max_length=200, description="a job id (1-64 of A-Z a-z 0-9 _ -)")
SHA256 = "^[0-9a-f]{64}$"
MAX_JSON_BYTES = 16 << 20  # a JSON body's cap: the gRPC adapter's message cap (kpt.grpc_options.MAX_MESSAGE)


def tenant(request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:
    # The raw header, not HTTPBearer's parse: a malformed one must fail exactly as over gRPC.
    return request.app.state.tokens.tenant(request.headers.get("authorization"))


def _api(request: Request) -> Api:
    return request.app.state.api


def _proto(msg) -> JSONResponse:
    return JSONResponse(c.to_dict(msg))


def _ok(name: str, media: str = "application/json") -> dict:
    schema = ref(name) if media == "application/json" else {"type": "string", "format": "binary"}
    return {200: {"description": "OK", "content": {media: {"schema": schema}}}}


def _json_body(name: str) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref(name)}}}}


async def _parse(request: Request, cls):
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: an endless body is never held whole
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise TooLarge(f"the body is over the {MAX_JSON_BYTES}-byte limit")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting deeper than json allows
        raise InvalidArgument(f"the body is not JSON; send a {cls.DESCRIPTOR.name} object") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"the body must be a JSON object ({cls.DESCRIPTOR.name})")
    try:
        return c.from_dict(data, cls)
    except (ValueError, TypeError) as e:  # what json_format lets through (e.g. unencodable strings)
        raise InvalidArgument(f"malformed {cls.DESCRIPTOR.name}: {e}") from None


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "the model (.pt2 or .onnx)"}}}}}}}


@router.post("/models", summary="Upload a model (UploadModel)", openapi_extra=UPLOAD_BODY,
             responses={**_ok("kpt.v1.UploadModelResponse"), **responses(413)})
async def upload(request: Request, who: str = Depends(tenant),
                 format: ModelFormatName = Query("MODEL_FORMAT_UNSPECIFIED", description="declared format; the bytes decide"),
                 sha256: str = Query("", pattern=f"{SHA256}|^$", description="checked against the bytes received"),
                 size_bytes: int = Query(0, ge=0, le=2**63 - 1, description="announced size; refused past it")):
    part = await FilePart(request).open()
    header = c.UploadHeader(name=part.filename or "model", format=c.ModelFormat.Value(format),
                            sha256=sha256, size_bytes=size_bytes)
    return _proto(await _api(request).upload(who, header, part.chunks()))


@router.post("/jobs", summary="Submit a job, or one per target (SubmitJob)", openapi_extra=_json_body("kpt.v1.SubmitJobRequest"),
             responses={**_ok("kpt.v1.SubmitJobResponse"), **responses(404, 413, 503)})
async def submit(request: Request, who: str = Depends(tenant)):
    req = await _parse(request, c.SubmitJobRequest)
    return _proto(await _api(request).submit(who, req))


@router.get("/jobs", summary="List jobs, newest first (ListJobs)", responses={**_ok("kpt.v1.ListJobsResponse"), **responses()})
async def list_jobs(request: Request, who: str = Depends(tenant), group_id: str = Query("", max_length=200),
                    state: JobStateName = Query("JOB_STATE_UNSPECIFIED"), page_size: int = Query(0, ge=0, le=1000),
                    page_token: str = Query("", max_length=20)):
    req = c.ListJobsRequest(group_id=group_id, state=c.JobState.Value(state), page_size=page_size, page_token=page_token)
    return _proto(await _api(request).list(who, req))


@router.get("/jobs/{job_id}", summary="Get a job (GetJob)", responses={**_ok("kpt.v1.GetJobResponse"), **responses(404)})
async def get_job(request: Request, job_id: str = JOB_ID, who: str = Depends(tenant)):
    return _proto(c.GetJobResponse(job=await _api(request).get(who, job_id)))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job (CancelJob)",
             responses={**_ok("kpt.v1.CancelJobResponse"), **responses(404)})
async def cancel(request: Request, job_id: str = JOB_ID, who: str = Depends(tenant)):
    return _proto(c.CancelJobResponse(job=await _api(request).cancel(who, job_id)))


@router.get("/jobs/{job_id}/events", summary="Watch a job as server-sent events (WatchJob)",
            responses={**_ok("", "text/event-stream"), **responses(404)})
async def watch(request: Request, job_id: str = JOB_ID, who: str = Depends(tenant)):
    api = _api(request)
    await api.get(who, job_id)  # typed errors (404, 400) as a status, before the stream starts
    return StreamingResponse(sse.stream(api.watch(who, job_id)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/jobs/{job_id}/artifacts/{sha256}", summary="Download an artifact (DownloadArtifact)",
            responses={**_ok("", "application/octet-stream"), **responses(404)})
async def download(request: Request, job_id: str = JOB_ID, sha256: str = Path(pattern=SHA256),
                   who: str = Depends(tenant)):
    parts = _api(request).download(who, job_id, sha256).__aiter__()
    art = (await parts.__anext__()).artifact  # typed errors before any byte is sent

    async def body():
        try:
            async for p in parts:
                yield p.chunk
        finally:
            await parts.aclose()

    name = re.sub(r"[^A-Za-z0-9._-]", "_", art.name) or art.sha256
    return StreamingResponse(body(), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(art.size_bytes),
        "ETag": f'"{art.sha256}"'})


@router.get("/targets", summary="Targets online (ListTargets)", responses={**_ok("kpt.v1.ListTargetsResponse"), **responses()})
async def targets(request: Request, who: str = Depends(tenant)):
    return _proto(await _api(request).targets(who))


ZOO_SCHEMA = {"type": "object", "properties": {"models": {"type": "array", "items": {
    "type": "object", "properties": {"name": {"type": "string"}, "description": {"type": "string"}}}}}}


@router.get("/zoo", summary="Zoo models a job may name instead of an upload (HTTP only: the page's picker)",
            responses={200: {"description": "OK", "content": {"application/json": {"schema": ZOO_SCHEMA}}}, **responses()})
async def zoo(who: str = Depends(tenant)):
    return {"models": [{"name": n, "description": d} for n, d in catalog.ZOO.items()]}
