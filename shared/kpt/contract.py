"""The one module that imports generated protobuf types; everything else imports from here.

Also the small conversions every process needs: enum names <-> short names ("cpu", "O2"),
proto <-> JSON dict, timestamps.
"""

from __future__ import annotations

import time

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from kpt.errors import InvalidArgument, UnknownLevel, UnknownTarget
from kpt.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, job_pb2
from kpt.v1.common_pb2 import (  # noqa: F401  (re-exported)
    ArtifactFormat,
    BenchmarkSettings,
    Dim,
    InputSpec,
    JobKind,
    JobSpec,
    JobState,
    Level,
    ModelFormat,
    ModelRef,
    Precision,
    Target,
    TensorSpec,
    Tolerances,
)
from kpt.v1.gateway_pb2 import (  # noqa: F401
    CancelJobRequest,
    CancelJobResponse,
    DownloadArtifactRequest,
    DownloadArtifactResponse,
    GetJobRequest,
    GetJobResponse,
    ListJobsRequest,
    ListJobsResponse,
    ListTargetsRequest,
    ListTargetsResponse,
    SubmitJobRequest,
    SubmitJobResponse,
    UploadHeader,
    UploadModelRequest,
    UploadModelResponse,
    WatchJobRequest,
    WatchJobResponse,
)
from kpt.v1.gateway_pb2_grpc import GatewayServicer, GatewayStub, add_GatewayServicer_to_server  # noqa: F401
from kpt.v1.job_pb2 import (  # noqa: F401
    Accuracy,
    Artifact,
    ErrorDetail,
    Event,
    Job,
    LatencyStats,
    LevelAttempt,
    PassReport,
    Result,
    TargetInfo,
    VariantMetrics,
)

SPEC_VERSION = 1
TERMINAL = (JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED)
CONCRETE_TARGETS = ("cpu", "nvidia", "amd", "tpu", "intel")
# Preference of `--target auto`: the most capable available hardware first.
AUTO_ORDER = ("nvidia", "amd", "tpu", "intel", "cpu")


def _short(enum, prefix: str, value: int) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def target_name(value: int) -> str:
    return _short(Target, "TARGET_", value)


def parse_target(name: str) -> int:
    try:
        return Target.Value("TARGET_" + name.strip().upper())
    except ValueError:
        raise UnknownTarget(
            f"unknown target {name!r}; choose one of {', '.join(CONCRETE_TARGETS + ('auto',))}"
        ) from None


def level_name(value: int) -> str:
    return Level.Name(value).removeprefix("LEVEL_")


def parse_level(name: str) -> int:
    try:
        return Level.Value("LEVEL_" + name.strip().upper())
    except ValueError:
        raise UnknownLevel(f"unknown level {name!r}; choose one of O0, O1, O2, O3") from None


def state_name(value: int) -> str:
    return _short(JobState, "JOB_STATE_", value)


def kind_name(value: int) -> str:
    return _short(JobKind, "JOB_KIND_", value)


def parse_kind(name: str) -> int:
    try:
        return JobKind.Value("JOB_KIND_" + name.strip().upper())
    except ValueError:
        raise InvalidArgument(f"unknown job kind {name!r}; choose optimize, export or benchmark") from None


def format_name(value: int) -> str:
    return _short(ArtifactFormat, "ARTIFACT_FORMAT_", value)


def parse_format(name: str) -> int:
    try:
        return ArtifactFormat.Value("ARTIFACT_FORMAT_" + name.strip().upper())
    except ValueError:
        names = [format_name(v) for v in ArtifactFormat.values() if v]
        raise InvalidArgument(f"unknown format {name!r}; choose among {', '.join(names)}") from None


def parse_precision(name: str) -> int:
    try:
        return Precision.Value("PRECISION_" + name.strip().upper())
    except ValueError:
        raise InvalidArgument(f"unknown precision {name!r}; choose fp32, bf16, fp16, int8, fp8 or int4") from None


def model_format_name(value: int) -> str:
    return _short(ModelFormat, "MODEL_FORMAT_", value)


def to_dict(msg) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def from_dict(d: dict, cls):
    """Strict: unknown fields raise InvalidArgument."""
    try:
        return json_format.ParseDict(d, cls())
    except json_format.ParseError as e:
        raise InvalidArgument(f"malformed {cls.DESCRIPTOR.name}: {e}") from None


def now() -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


def canonical_spec_bytes(spec: JobSpec, target: int) -> bytes:
    """Deterministic bytes of a spec + target: the result cache key is built from these."""
    s = JobSpec()
    s.CopyFrom(spec)
    if s.model.sha256:
        s.model.name = ""  # an upload's file name does not change the result; its digest does
    return target_name(target).encode() + b"\0" + s.SerializeToString(deterministic=True)


__all__ = [n for n in dir() if not n.startswith("_")] + ["common_pb2", "gateway_pb2", "gateway_pb2_grpc", "job_pb2"]
