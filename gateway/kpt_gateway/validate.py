"""Checks of a submitted spec; each failure is a typed error that says what to send instead."""

from __future__ import annotations

import math

from kpt import catalog
from kpt.contract import SPEC_VERSION, ArtifactFormat, JobKind, JobSpec, Level, ModelFormat, Precision, Target
from kpt.errors import InvalidArgument, InvalidInput, TooLarge, UnknownLevel, UnknownTarget

MAX_DIMS = 8
MAX_ELEMENTS = 1 << 31
# A job record (spec + result) travels as one bus message (kpt.natsd.MAX_PAYLOAD, 8 MiB); a real spec
# is a few KiB, so 1 MiB leaves the result its room and refuses only what no model needs.
MAX_SPEC_BYTES = 1 << 20
DTYPES = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool"}


def spec(s: JobSpec) -> JobSpec:
    """Validate and fill defaults; returns the canonical spec the job keeps."""
    if s.ByteSize() > MAX_SPEC_BYTES:
        raise TooLarge(f"spec of {s.ByteSize()} bytes is over the {MAX_SPEC_BYTES}-byte limit")
    out = JobSpec()
    out.CopyFrom(s)
    out.spec_version = out.spec_version or SPEC_VERSION
    if out.spec_version != SPEC_VERSION:
        raise InvalidArgument(f"spec_version {out.spec_version} is not supported; this gateway speaks {SPEC_VERSION}")
    if out.kind not in JobKind.values() or out.kind == JobKind.JOB_KIND_UNSPECIFIED:
        raise InvalidArgument("kind must be optimize, export or benchmark")
    if out.level not in Level.values():
        raise UnknownLevel(f"unknown level {out.level}; choose O0, O1, O2 or O3")
    if out.level == Level.LEVEL_UNSPECIFIED:
        out.level = Level.LEVEL_O2
    if out.precision not in Precision.values():
        raise InvalidArgument(f"unknown precision {out.precision}")
    _model(out)
    _inputs(out)
    for f in out.export_formats:
        if f not in ArtifactFormat.values() or f == ArtifactFormat.ARTIFACT_FORMAT_UNSPECIFIED:
            raise InvalidArgument(f"unknown export format {f}")
    if out.kind == JobKind.JOB_KIND_EXPORT and not out.export_formats:
        raise InvalidArgument("an export job needs at least one format (onnx, torchscript, exported_program, ...)")
    t, b = out.tolerances, out.benchmark
    # NaN compares false both ways, so it would pass every check below (and fail every accuracy check).
    for name, value in (("tolerances.atol", t.atol), ("tolerances.max_rel_l2", t.max_rel_l2),
                        ("tolerances.min_cosine", t.min_cosine), ("tolerances.min_sqnr_db", t.min_sqnr_db),
                        ("benchmark.time_budget_s", b.time_budget_s), ("benchmark.stable_rel", b.stable_rel),
                        ("timeout_s", out.timeout_s)):
        if not math.isfinite(value):
            raise InvalidArgument(f"{name} must be a finite number, not {value}")
    if min(t.atol, t.max_rel_l2, t.min_sqnr_db) < 0 or not 0 <= t.min_cosine <= 1:
        raise InvalidArgument("tolerances must be >= 0 and min_cosine within [0, 1]")
    if min(b.warmup_iters, b.min_iters, b.max_iters, b.threads) < 0 or b.time_budget_s < 0 or b.stable_rel < 0:
        raise InvalidArgument("benchmark settings must be >= 0")
    if b.stable_rel >= 1:  # the services' bench.Settings takes (0, 1); 0 = their default
        raise InvalidArgument("benchmark.stable_rel must be below 1, e.g. 0.02")
    if b.max_iters and b.min_iters > b.max_iters:
        raise InvalidArgument("benchmark.min_iters must not exceed max_iters")
    if out.timeout_s < 0:
        raise InvalidArgument("timeout_s must be >= 0")
    return out


def is_sha256(value: str) -> bool:
    """64 lowercase hex digits: how the mesh names models and artifacts (the HTTP routes' SHA256 pattern)."""
    return len(value) == 64 and all(ch in "0123456789abcdef" for ch in value)


def _model(s: JobSpec) -> None:
    m = s.model
    if m.format == ModelFormat.MODEL_FORMAT_ZOO:
        if m.name not in catalog.ZOO:
            raise InvalidArgument(f"unknown zoo model {m.name!r}; choose one of {', '.join(catalog.ZOO)}")
        m.sha256 = ""
        return
    if not is_sha256(m.sha256):
        raise InvalidArgument("model.sha256 must be the 64 hex digits UploadModel returned (or use a zoo model)")


def _inputs(s: JobSpec) -> None:
    for t in s.inputs.tensors:
        where = f"input {t.name or '?'}"
        if t.dtype not in DTYPES:
            raise InvalidInput(f"{where}: dtype {t.dtype!r} unknown; use one of {', '.join(sorted(DTYPES))}")
        if not 0 < len(t.dims) <= MAX_DIMS:
            raise InvalidInput(f"{where}: needs 1 to {MAX_DIMS} dims")
        elements = 1
        for d in t.dims:
            if d.size <= 0:
                raise InvalidInput(f"{where}: dim {d.name or '?'} size must be > 0")
            if (d.min or d.max) and not 0 < d.min <= d.size <= d.max:
                raise InvalidInput(f"{where}: dim {d.name or '?'} needs 0 < min <= size <= max")
            elements *= max(d.size, d.max)
        if elements > MAX_ELEMENTS:
            raise InvalidInput(f"{where}: {elements} elements is more than the {MAX_ELEMENTS} allowed")
        if t.high and t.low >= t.high:
            raise InvalidInput(f"{where}: low must be below high")


def targets(values: list[int]) -> list[int]:
    if not values:
        return [Target.TARGET_AUTO]
    seen = []
    for v in values:
        if v not in Target.values() or v == Target.TARGET_UNSPECIFIED:
            raise UnknownTarget(f"unknown target {v}; choose cpu, nvidia, amd, tpu, intel or auto")
        if v not in seen:
            seen.append(v)
    return seen
