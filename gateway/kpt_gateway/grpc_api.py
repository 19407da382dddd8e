"""kpt.v1.Gateway over gRPC: a thin adapter from the servicer to Api, and typed errors to status.

Each KptError becomes its gRPC status code with an ErrorDetail packed into
grpc-status-details-bin (google.rpc.Status), so clients rebuild the same typed error.
"""

from __future__ import annotations

import functools
import inspect
import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from kpt import contract as c
from kpt.errors import Internal, InvalidArgument, KptError
from kpt_gateway.api import Api
from kpt_gateway.auth import Tokens

log = logging.getLogger(__name__)


def _status(err: KptError) -> tuple[grpc.StatusCode, str, tuple]:
    code = grpc.StatusCode[err.grpc_status]
    detail = any_pb2.Any()
    detail.Pack(c.ErrorDetail(code=err.code, message=err.message, metadata=err.metadata))
    st = status_pb2.Status(code=code.value[0], message=err.message, details=[detail])
    return code, err.message, (("grpc-status-details-bin", st.SerializeToString()),)


async def _abort(context, err: KptError):
    if not isinstance(err, KptError):
        log.exception("untyped error in a handler", exc_info=err)
        err = Internal("internal error; see the gateway log")
    code, message, trailers = _status(err)
    context.set_trailing_metadata(trailers)
    await context.abort(code, message)


def rpc(fn):
    """Authenticate, run, and map typed errors, for unary and server-streaming handlers alike."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def stream(self, request, context):
            try:
                tenant = self.tenant(context)
                async for item in fn(self, tenant, request, context):
                    yield item
            except KptError as e:
                await _abort(context, e)
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as e:  # noqa: BLE001 - logged in full, the client gets INTERNAL
                await _abort(context, e)
        return stream

    @functools.wraps(fn)
    async def unary(self, request, context):
        try:
            return await fn(self, self.tenant(context), request, context)
        except KptError as e:
            await _abort(context, e)
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001 - logged in full, the client gets INTERNAL
            await _abort(context, e)
    return unary


class GatewayServicer(c.GatewayServicer):
    def __init__(self, api: Api, tokens: Tokens) -> None:
        self.api = api
        self.tokens = tokens

    def tenant(self, context) -> str:
        md = dict(context.invocation_metadata() or ())
        return self.tokens.tenant(md.get("authorization"))

    @rpc
    async def UploadModel(self, tenant, request_iterator, context):
        it = request_iterator.__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument("empty upload: send an UploadHeader first") from None
        if first.WhichOneof("part") != "header":
            raise InvalidArgument("the first upload message must be the UploadHeader")

        async def chunks():
            async for msg in it:
                if msg.WhichOneof("part") != "chunk":
                    raise InvalidArgument("only chunks may follow the header")
                yield msg.chunk

        return await self.api.upload(tenant, first.header, chunks())

    @rpc
    async def SubmitJob(self, tenant, request, context):
        return await self.api.submit(tenant, request)

    @rpc
    async def GetJob(self, tenant, request, context):
        return c.GetJobResponse(job=await self.api.get(tenant, request.job_id))

    @rpc
    async def ListJobs(self, tenant, request, context):
        return await self.api.list(tenant, request)

    @rpc
    async def WatchJob(self, tenant, request, context):
        async for update in self.api.watch(tenant, request.job_id):
            yield update

    @rpc
    async def CancelJob(self, tenant, request, context):
        return c.CancelJobResponse(job=await self.api.cancel(tenant, request.job_id))

    @rpc
    async def DownloadArtifact(self, tenant, request, context):
        async for part in self.api.download(tenant, request.job_id, request.sha256):
            yield part

    @rpc
    async def ListTargets(self, tenant, request, context):
        return await self.api.targets(tenant)
