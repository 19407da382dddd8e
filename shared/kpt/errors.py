"""The error catalog: one base exception with a code, thin subclasses.

Each error maps once to a gRPC status code and an HTTP status (see gateway/kpt_gateway/errors.py
and docs/errors.md). Jobs that fail carry the same code in Job.error, so a client sees one
vocabulary whether a call was refused at once or a job failed later.
"""

from __future__ import annotations

import os
import traceback


def cause(e: BaseException, limit: int = 300) -> str:
    """An exception in one line for a report: its type and its message's first line (at most limit characters)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:limit] if text else ''}"


def chain(e: BaseException) -> list[BaseException]:
    """e and what it was raised from or while handling (__cause__, else __context__), latest first, each once."""
    out: list[BaseException] = []
    while e is not None and all(e is not seen for seen in out):
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def first_cause(e: BaseException, limit: int = 300) -> str:
    """cause(e), and the earliest exception of its chain where that is another one: what failed first, when handling
    it raised e (a CUDA graph capture that ends in "operation failed due to a previous error during capture" after
    the operation that broke it)."""
    first = chain(e)[-1]
    return cause(e, limit) + (f" (first: {cause(first, limit)})" if first is not e else "")


def first_frames(e: BaseException, frames: int = 4) -> str:
    """Where the earliest exception of e's chain was raised: its traceback's last frames (file:line function: code),
    innermost first, in one line ("" where it has none). Says which call broke a CUDA graph capture, where the error
    CUDA reports names only what it forbids."""
    tb = chain(e)[-1].__traceback__
    if tb is None:
        return ""
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}: {(f.line or '').strip()[:120]}"
                       for f in reversed(traceback.extract_tb(tb)[-frames:]))


class KptError(Exception):
    code = "INTERNAL"
    grpc_status = "INTERNAL"  # grpc.StatusCode member name; grpc is not imported here
    http_status = 500
    retryable = False  # a retry of the same job could succeed (e.g. the worker crashed)

    def __init__(self, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = {k: str(v) for k, v in metadata.items()}

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "metadata": dict(self.metadata)}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgument(KptError):
    """A request field is malformed or out of range."""

    code, grpc_status, http_status = "INVALID_ARGUMENT", "INVALID_ARGUMENT", 400


class UnknownTarget(InvalidArgument):
    """A target that is not cpu, nvidia, amd, tpu, intel or auto."""

    code = "UNKNOWN_TARGET"


class UnknownLevel(InvalidArgument):
    """A level that is not O0..O3."""

    code = "UNKNOWN_LEVEL"


class InvalidInput(InvalidArgument):
    """Input spec or shapes the model cannot take."""

    code = "INVALID_INPUT"


class InvalidSetting(InvalidArgument):
    """A KPT_* environment setting that does not parse (a process exits with it at start; a library call raises it)."""

    code = "INVALID_SETTING"


class InvalidModel(KptError):
    """Truncated, corrupt, or not a model at all."""

    code, grpc_status, http_status = "INVALID_MODEL", "INVALID_ARGUMENT", 422


class UnsafeModel(InvalidModel):
    """A file that would run code or touch files when loaded: pickled Python objects outside weights_only rules, a .pt2
    whose guards, symbolic expressions or names are not what torch.export.save writes, a graph calling file
    operators, a zip member that inflates far past its size."""

    code = "UNSAFE_MODEL"


class TooLarge(KptError):
    """An upload past KPT_MAX_UPLOAD_BYTES (or past its announced size), a JSON body over 16 MiB, a spec over 1 MiB."""

    code, grpc_status, http_status = "TOO_LARGE", "RESOURCE_EXHAUSTED", 413


class Unauthenticated(KptError):
    """Missing, malformed or unknown bearer token."""

    code, grpc_status, http_status = "UNAUTHENTICATED", "UNAUTHENTICATED", 401


class NotFound(KptError):
    """Also what another tenant's ids get: their existence is not revealed."""

    code, grpc_status, http_status = "NOT_FOUND", "NOT_FOUND", 404


class AlreadyExists(KptError):
    """Something created twice where that is not idempotent."""

    code, grpc_status, http_status = "ALREADY_EXISTS", "ALREADY_EXISTS", 409


class Unavailable(KptError):
    """No live service for the target, or the hardware is missing."""

    code, grpc_status, http_status = "UNAVAILABLE", "UNAVAILABLE", 503


class Unsupported(KptError):
    """The target cannot do what the spec asks (format, precision, input kind)."""

    code, grpc_status, http_status = "UNSUPPORTED", "UNIMPLEMENTED", 422


class AccuracyFailed(KptError):
    """No level (or requested export) produced outputs within tolerance of eager fp32."""

    code, grpc_status, http_status = "ACCURACY_FAILED", "FAILED_PRECONDITION", 422


class Timeout(KptError):
    """The job ran past its time limit and was stopped."""

    code, grpc_status, http_status = "TIMEOUT", "DEADLINE_EXCEEDED", 504


class OutOfMemory(KptError):
    """The job's process ran out of memory (KPT_JOB_MEMORY_BYTES, or the machine's)."""

    code, grpc_status, http_status = "OUT_OF_MEMORY", "RESOURCE_EXHAUSTED", 507


class WorkerCrashed(KptError):
    """The job's process died without a result (a signal, a crash); retried on another attempt."""

    code, grpc_status, http_status = "WORKER_CRASHED", "INTERNAL", 500
    retryable = True


class DeviceFault(KptError):
    """The GPU faulted (an illegal memory access or instruction in a kernel being tried): the job's process can
    no longer use it. Retried in a fresh process, which skips what faulted (kpt.gpu.passes records it)."""

    code, grpc_status, http_status = "DEVICE_FAULT", "INTERNAL", 500
    retryable = True


class Cancelled(KptError):
    """The job was cancelled by its owner."""

    code, grpc_status, http_status = "CANCELLED", "CANCELLED", 409


class Internal(KptError):
    """A bug: the message points at the log."""


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


CATALOG: dict[str, type[KptError]] = {c.code: c for c in [KptError, *_all_subclasses(KptError)]}
CATALOG["INTERNAL"] = Internal


def from_dict(d: dict) -> KptError:
    """Rebuild a typed error from its dict form (ErrorDetail); unknown codes become Internal."""
    cls = CATALOG.get(d.get("code", ""), Internal)
    err = cls(d.get("message", ""))
    err.metadata = dict(d.get("metadata", {}))
    return err
