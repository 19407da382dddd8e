"""A kpt.v1.JobSpec in protobuf JSON dict form, parsed into one validated dataclass.

The dict is what json_format.MessageToDict(preserving_proto_field_name=True) writes: enum
NAMES, int64 as strings, fields at their default OMITTED. Everything is read with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpt.errors import InvalidArgument, InvalidInput, UnknownLevel
from kpt.optimize import accuracy, bench
from kpt.optimize import inputs as inp

KINDS = ("JOB_KIND_OPTIMIZE", "JOB_KIND_EXPORT", "JOB_KIND_BENCHMARK")
LEVELS = ("LEVEL_O0", "LEVEL_O1", "LEVEL_O2", "LEVEL_O3")
DEFAULT_LEVEL = "LEVEL_O2"  # what the gateway applies to LEVEL_UNSPECIFIED
# Precision a job asks for -> reduced precisions its passes may use (fp32 is always allowed).
# The level still decides which passes run; a precision only rules reduced ones out.
PRECISIONS = {
    "PRECISION_UNSPECIFIED": frozenset({"fp32", "bf16", "fp16", "int8"}),
    "PRECISION_FP32": frozenset({"fp32"}),
    "PRECISION_BF16": frozenset({"fp32", "bf16"}),
    "PRECISION_FP16": frozenset({"fp32", "fp16"}),
    "PRECISION_INT8": frozenset({"fp32", "int8"}),
    "PRECISION_FP8": frozenset({"fp32", "fp8"}),
    "PRECISION_INT4": frozenset({"fp32", "int4"}),
}


@dataclass(frozen=True)
class JobRequest:
    kind: str
    model_format: str
    model_name: str
    model_sha256: str
    level: str
    precision: str
    inputs: inp.InputSpec | None
    tolerances: accuracy.Tolerances | None
    export_formats: tuple[str, ...]
    bench: bench.Settings
    timeout_s: float

    @property
    def allowed(self) -> frozenset[str]:
        return PRECISIONS[self.precision]


def parse(spec: dict, bench_defaults: bench.Settings = bench.Settings()) -> JobRequest:
    kind = spec.get("kind", "JOB_KIND_UNSPECIFIED")
    if kind not in KINDS:
        raise InvalidArgument(f"job kind {kind!r} is not one of {', '.join(KINDS)}")
    level = spec.get("level", "LEVEL_UNSPECIFIED")
    if level == "LEVEL_UNSPECIFIED":
        level = DEFAULT_LEVEL
    if level not in LEVELS:
        raise UnknownLevel(f"level {level!r} is not one of {', '.join(LEVELS)}")
    precision = spec.get("precision", "PRECISION_UNSPECIFIED")
    if precision not in PRECISIONS:
        raise InvalidArgument(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    model = spec.get("model", {})
    inputs = inp.parse(spec["inputs"]) if spec.get("inputs", {}).get("tensors") else None
    tol = None
    if spec.get("tolerances"):
        try:
            tol = accuracy.Tolerances(**{k: float(v) for k, v in spec["tolerances"].items()})
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"invalid tolerances {spec['tolerances']}: {e}") from e
    try:
        settings = bench.settings_from_dict(spec.get("benchmark", {}), bench_defaults)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"invalid benchmark settings {spec.get('benchmark')}: {e}") from e
    return JobRequest(kind=kind, model_format=model.get("format", "MODEL_FORMAT_UNSPECIFIED"),
                      model_name=model.get("name", ""), model_sha256=model.get("sha256", ""), level=level,
                      precision=precision, inputs=inputs, tolerances=tol,
                      export_formats=tuple(spec.get("export_formats", [])), bench=settings,
                      timeout_s=float(spec.get("timeout_s", 0) or 0))
