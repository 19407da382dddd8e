"""Spec validation: every bad field gets a typed error naming it."""

import pytest

from kpt import contract as c
from kpt.errors import InvalidArgument, InvalidInput, UnknownLevel, UnknownTarget
from kpt_gateway import validate

SHA = "ab" * 32


def spec(**kw):
    s = c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=c.ModelRef(sha256=SHA))
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_defaults_filled():
    out = validate.spec(spec())
    assert out.level == c.Level.LEVEL_O2 and out.spec_version == c.SPEC_VERSION


def test_unknown_level():
    with pytest.raises(UnknownLevel):
        validate.spec(spec(level=42))


def test_unknown_kind():
    with pytest.raises(InvalidArgument, match="kind"):
        validate.spec(spec(kind=0))


def test_bad_digest():
    s = spec()
    s.model.sha256 = "xyz"
    with pytest.raises(InvalidArgument, match="sha256"):
        validate.spec(s)


def test_zoo_names_checked():
    s = spec()
    s.model.CopyFrom(c.ModelRef(format=c.ModelFormat.MODEL_FORMAT_ZOO, name="resnet9000"))
    with pytest.raises(InvalidArgument, match="unknown zoo model"):
        validate.spec(s)
    s.model.name = "bert-base"
    assert validate.spec(s).model.name == "bert-base"


def test_export_needs_formats():
    with pytest.raises(InvalidArgument, match="at least one format"):
        validate.spec(spec(kind=c.JobKind.JOB_KIND_EXPORT))


@pytest.mark.parametrize("dims,match", [
    ([c.Dim(size=0)], "size must be > 0"),
    ([c.Dim(size=4, min=8, max=16)], "min <= size <= max"),
    ([c.Dim(size=1 << 20), c.Dim(size=1 << 20)], "elements"),
])
def test_bad_inputs(dims, match):
    s = spec()
    s.inputs.tensors.add(name="x", dtype="float32", dims=dims)
    with pytest.raises(InvalidInput, match=match):
        validate.spec(s)


def test_bad_dtype():
    s = spec()
    s.inputs.tensors.add(name="x", dtype="complex512", dims=[c.Dim(size=1)])
    with pytest.raises(InvalidInput, match="dtype"):
        validate.spec(s)


def test_targets():
    assert validate.targets([]) == [c.Target.TARGET_AUTO]
    assert validate.targets([1, 1, 2]) == [1, 2]
    with pytest.raises(UnknownTarget):
        validate.targets([99])


def test_zoo_catalog_matches_the_zoo():
    from kpt import catalog
    zoo = pytest.importorskip("kpt.optimize.zoo")
    assert set(catalog.ZOO) <= set(zoo.names())


@pytest.mark.parametrize("field,value", [
    ("tolerances.atol", float("nan")), ("tolerances.max_rel_l2", float("inf")), ("tolerances.min_sqnr_db", float("nan")),
    ("benchmark.time_budget_s", float("nan")), ("benchmark.stable_rel", float("nan")), ("benchmark.stable_rel", 1.0),
    ("timeout_s", float("nan")),
])
def test_non_finite_and_out_of_range_numbers(field, value):
    """What the service's own checks would refuse only after the job is queued, or (NaN, which compares false
    both ways) silently turn into a failed accuracy check: refused at submit."""
    s = spec()
    parent, _, name = field.rpartition(".")
    setattr(getattr(s, parent) if parent else s, name, value)
    with pytest.raises(InvalidArgument, match=name):
        validate.spec(s)

