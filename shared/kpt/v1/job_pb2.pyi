import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from kpt.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "group_id", "tenant", "target", "spec", "state", "created_at", "started_at", "finished_at", "attempt", "service_id", "result", "error", "cache_hit", "cached_from")
    ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    CACHED_FROM_FIELD_NUMBER: _ClassVar[int]
    id: str
    group_id: str
    tenant: str
    target: _common_pb2.Target
    spec: _common_pb2.JobSpec
    state: _common_pb2.JobState
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    attempt: int
    service_id: str
    result: Result
    error: ErrorDetail
    cache_hit: bool
    cached_from: str
    def __init__(self, id: _Optional[str] = ..., group_id: _Optional[str] = ..., tenant: _Optional[str] = ..., target: _Optional[_Union[_common_pb2.Target, str]] = ..., spec: _Optional[_Union[_common_pb2.JobSpec, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ..., service_id: _Optional[str] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., error: _Optional[_Union[ErrorDetail, _Mapping]] = ..., cache_hit: _Optional[bool] = ..., cached_from: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("job_id", "seq", "time", "phase", "message", "progress", "state")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    phase: str
    message: str
    progress: float
    state: _common_pb2.JobState
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., phase: _Optional[str] = ..., message: _Optional[str] = ..., progress: _Optional[float] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("sha256", "name", "format", "size_bytes", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    name: str
    format: _common_pb2.ArtifactFormat
    size_bytes: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, sha256: _Optional[str] = ..., name: _Optional[str] = ..., format: _Optional[_Union[_common_pb2.ArtifactFormat, str]] = ..., size_bytes: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Accuracy(_message.Message):
    __slots__ = ("max_abs_err", "rel_l2", "cosine", "sqnr_db", "passed", "tolerances", "samples")
    MAX_ABS_ERR_FIELD_NUMBER: _ClassVar[int]
    REL_L2_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    SQNR_DB_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    TOLERANCES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    max_abs_err: float
    rel_l2: float
    cosine: float
    sqnr_db: float
    passed: bool
    tolerances: _common_pb2.Tolerances
    samples: int
    def __init__(self, max_abs_err: _Optional[float] = ..., rel_l2: _Optional[float] = ..., cosine: _Optional[float] = ..., sqnr_db: _Optional[float] = ..., passed: _Optional[bool] = ..., tolerances: _Optional[_Union[_common_pb2.Tolerances, _Mapping]] = ..., samples: _Optional[int] = ...) -> None: ...

class LatencyStats(_message.Message):
    __slots__ = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "iterations", "samples_ms")
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_MS_FIELD_NUMBER: _ClassVar[int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    iterations: int
    samples_ms: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, p50_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., mean_ms: _Optional[float] = ..., min_ms: _Optional[float] = ..., max_ms: _Optional[float] = ..., iterations: _Optional[int] = ..., samples_ms: _Optional[_Iterable[float]] = ...) -> None: ...

class VariantMetrics(_message.Message):
    __slots__ = ("variant", "latency", "throughput_per_s", "peak_memory_bytes", "compile_s", "accuracy", "error")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_S_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPILE_S_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    variant: str
    latency: LatencyStats
    throughput_per_s: float
    peak_memory_bytes: int
    compile_s: float
    accuracy: Accuracy
    error: str
    def __init__(self, variant: _Optional[str] = ..., latency: _Optional[_Union[LatencyStats, _Mapping]] = ..., throughput_per_s: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ..., compile_s: _Optional[float] = ..., accuracy: _Optional[_Union[Accuracy, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class PassReport(_message.Message):
    __slots__ = ("name", "level", "applied", "reason", "seconds", "config_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    level: _common_pb2.Level
    applied: bool
    reason: str
    seconds: float
    config_json: str
    def __init__(self, name: _Optional[str] = ..., level: _Optional[_Union[_common_pb2.Level, str]] = ..., applied: _Optional[bool] = ..., reason: _Optional[str] = ..., seconds: _Optional[float] = ..., config_json: _Optional[str] = ...) -> None: ...

class LevelAttempt(_message.Message):
    __slots__ = ("level", "accuracy", "passed", "note")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    level: _common_pb2.Level
    accuracy: Accuracy
    passed: bool
    note: str
    def __init__(self, level: _Optional[_Union[_common_pb2.Level, str]] = ..., accuracy: _Optional[_Union[Accuracy, _Mapping]] = ..., passed: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("kind", "artifacts", "variants", "passes", "accuracy", "requested_level", "achieved_level", "attempts", "fallback_reason", "speedup", "device", "backend", "environment")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    PASSES_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.JobKind
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    variants: _containers.RepeatedCompositeFieldContainer[VariantMetrics]
    passes: _containers.RepeatedCompositeFieldContainer[PassReport]
    accuracy: Accuracy
    requested_level: _common_pb2.Level
    achieved_level: _common_pb2.Level
    attempts: _containers.RepeatedCompositeFieldContainer[LevelAttempt]
    fallback_reason: str
    speedup: float
    device: str
    backend: str
    environment: _containers.ScalarMap[str, str]
    def __init__(self, kind: _Optional[_Union[_common_pb2.JobKind, str]] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., variants: _Optional[_Iterable[_Union[VariantMetrics, _Mapping]]] = ..., passes: _Optional[_Iterable[_Union[PassReport, _Mapping]]] = ..., accuracy: _Optional[_Union[Accuracy, _Mapping]] = ..., requested_level: _Optional[_Union[_common_pb2.Level, str]] = ..., achieved_level: _Optional[_Union[_common_pb2.Level, str]] = ..., attempts: _Optional[_Iterable[_Union[LevelAttempt, _Mapping]]] = ..., fallback_reason: _Optional[str] = ..., speedup: _Optional[float] = ..., device: _Optional[str] = ..., backend: _Optional[str] = ..., environment: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TargetInfo(_message.Message):
    __slots__ = ("service_id", "target", "device_name", "device_kind", "device_count", "memory_bytes", "precisions", "formats", "toolchain", "toolchain_fingerprint", "last_seen", "available", "unavailable_reason")
    class ToolchainEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    TOOLCHAIN_FIELD_NUMBER: _ClassVar[int]
    TOOLCHAIN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    target: _common_pb2.Target
    device_name: str
    device_kind: str
    device_count: int
    memory_bytes: int
    precisions: _containers.RepeatedScalarFieldContainer[_common_pb2.Precision]
    formats: _containers.RepeatedScalarFieldContainer[_common_pb2.ArtifactFormat]
    toolchain: _containers.ScalarMap[str, str]
    toolchain_fingerprint: str
    last_seen: _timestamp_pb2.Timestamp
    available: bool
    unavailable_reason: str
    def __init__(self, service_id: _Optional[str] = ..., target: _Optional[_Union[_common_pb2.Target, str]] = ..., device_name: _Optional[str] = ..., device_kind: _Optional[str] = ..., device_count: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., precisions: _Optional[_Iterable[_Union[_common_pb2.Precision, str]]] = ..., formats: _Optional[_Iterable[_Union[_common_pb2.ArtifactFormat, str]]] = ..., toolchain: _Optional[_Mapping[str, str]] = ..., toolchain_fingerprint: _Optional[str] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ...) -> None: ...
