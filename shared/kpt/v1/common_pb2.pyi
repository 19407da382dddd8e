from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Target(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_UNSPECIFIED: _ClassVar[Target]
    TARGET_CPU: _ClassVar[Target]
    TARGET_NVIDIA: _ClassVar[Target]
    TARGET_AMD: _ClassVar[Target]
    TARGET_TPU: _ClassVar[Target]
    TARGET_INTEL: _ClassVar[Target]
    TARGET_AUTO: _ClassVar[Target]

class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEVEL_UNSPECIFIED: _ClassVar[Level]
    LEVEL_O0: _ClassVar[Level]
    LEVEL_O1: _ClassVar[Level]
    LEVEL_O2: _ClassVar[Level]
    LEVEL_O3: _ClassVar[Level]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]
    PRECISION_INT8: _ClassVar[Precision]
    PRECISION_FP8: _ClassVar[Precision]
    PRECISION_INT4: _ClassVar[Precision]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_OPTIMIZE: _ClassVar[JobKind]
    JOB_KIND_EXPORT: _ClassVar[JobKind]
    JOB_KIND_BENCHMARK: _ClassVar[JobKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class ModelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORMAT_UNSPECIFIED: _ClassVar[ModelFormat]
    MODEL_FORMAT_EXPORTED_PROGRAM: _ClassVar[ModelFormat]
    MODEL_FORMAT_ONNX: _ClassVar[ModelFormat]
    MODEL_FORMAT_ZOO: _ClassVar[ModelFormat]

class ArtifactFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_FORMAT_UNSPECIFIED: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_AOTI_PACKAGE: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_EXPORTED_PROGRAM: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_ONNX: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_TORCHSCRIPT: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_STABLEHLO: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_OPENVINO_IR: _ClassVar[ArtifactFormat]
TARGET_UNSPECIFIED: Target
TARGET_CPU: Target
TARGET_NVIDIA: Target
TARGET_AMD: Target
TARGET_TPU: Target
TARGET_INTEL: Target
TARGET_AUTO: Target
LEVEL_UNSPECIFIED: Level
LEVEL_O0: Level
LEVEL_O1: Level
LEVEL_O2: Level
LEVEL_O3: Level
PRECISION_UNSPECIFIED: Precision
PRECISION_FP32: Precision
PRECISION_BF16: Precision
PRECISION_FP16: Precision
PRECISION_INT8: Precision
PRECISION_FP8: Precision
PRECISION_INT4: Precision
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_OPTIMIZE: JobKind
JOB_KIND_EXPORT: JobKind
JOB_KIND_BENCHMARK: JobKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
MODEL_FORMAT_UNSPECIFIED: ModelFormat
MODEL_FORMAT_EXPORTED_PROGRAM: ModelFormat
MODEL_FORMAT_ONNX: ModelFormat
MODEL_FORMAT_ZOO: ModelFormat
ARTIFACT_FORMAT_UNSPECIFIED: ArtifactFormat
ARTIFACT_FORMAT_AOTI_PACKAGE: ArtifactFormat
ARTIFACT_FORMAT_EXPORTED_PROGRAM: ArtifactFormat
ARTIFACT_FORMAT_ONNX: ArtifactFormat
ARTIFACT_FORMAT_TORCHSCRIPT: ArtifactFormat
ARTIFACT_FORMAT_STABLEHLO: ArtifactFormat
ARTIFACT_FORMAT_OPENVINO_IR: ArtifactFormat

class ModelRef(_message.Message):
    __slots__ = ("sha256", "format", "size_bytes", "name")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    format: ModelFormat
    size_bytes: int
    name: str
    def __init__(self, sha256: _Optional[str] = ..., format: _Optional[_Union[ModelFormat, str]] = ..., size_bytes: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Dim(_message.Message):
    __slots__ = ("name", "size", "min", "max")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    min: int
    max: int
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., min: _Optional[int] = ..., max: _Optional[int] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "dims", "low", "high")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    dims: _containers.RepeatedCompositeFieldContainer[Dim]
    low: int
    high: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., dims: _Optional[_Iterable[_Union[Dim, _Mapping]]] = ..., low: _Optional[int] = ..., high: _Optional[int] = ...) -> None: ...

class InputSpec(_message.Message):
    __slots__ = ("tensors",)
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class Tolerances(_message.Message):
    __slots__ = ("atol", "max_rel_l2", "min_cosine", "min_sqnr_db")
    ATOL_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_L2_FIELD_NUMBER: _ClassVar[int]
    MIN_COSINE_FIELD_NUMBER: _ClassVar[int]
    MIN_SQNR_DB_FIELD_NUMBER: _ClassVar[int]
    atol: float
    max_rel_l2: float
    min_cosine: float
    min_sqnr_db: float
    def __init__(self, atol: _Optional[float] = ..., max_rel_l2: _Optional[float] = ..., min_cosine: _Optional[float] = ..., min_sqnr_db: _Optional[float] = ...) -> None: ...

class BenchmarkSettings(_message.Message):
    __slots__ = ("warmup_iters", "min_iters", "max_iters", "time_budget_s", "stable_rel", "threads")
    WARMUP_ITERS_FIELD_NUMBER: _ClassVar[int]
    MIN_ITERS_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERS_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    STABLE_REL_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    warmup_iters: int
    min_iters: int
    max_iters: int
    time_budget_s: float
    stable_rel: float
    threads: int
    def __init__(self, warmup_iters: _Optional[int] = ..., min_iters: _Optional[int] = ..., max_iters: _Optional[int] = ..., time_budget_s: _Optional[float] = ..., stable_rel: _Optional[float] = ..., threads: _Optional[int] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("spec_version", "kind", "model", "level", "precision", "inputs", "tolerances", "export_formats", "benchmark", "timeout_s")
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCES_FIELD_NUMBER: _ClassVar[int]
    EXPORT_FORMATS_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    spec_version: int
    kind: JobKind
    model: ModelRef
    level: Level
    precision: Precision
    inputs: InputSpec
    tolerances: Tolerances
    export_formats: _containers.RepeatedScalarFieldContainer[ArtifactFormat]
    benchmark: BenchmarkSettings
    timeout_s: float
    def __init__(self, spec_version: _Optional[int] = ..., kind: _Optional[_Union[JobKind, str]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., level: _Optional[_Union[Level, str]] = ..., precision: _Optional[_Union[Precision, str]] = ..., inputs: _Optional[_Union[InputSpec, _Mapping]] = ..., tolerances: _Optional[_Union[Tolerances, _Mapping]] = ..., export_formats: _Optional[_Iterable[_Union[ArtifactFormat, str]]] = ..., benchmark: _Optional[_Union[BenchmarkSettings, _Mapping]] = ..., timeout_s: _Optional[float] = ...) -> None: ...
