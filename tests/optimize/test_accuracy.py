import math

import pytest
import torch

from kpt.errors import AccuracyFailed, InvalidInput
from kpt.optimize import accuracy as acc
from kpt.optimize import inputs as inp


def test_metrics_match_hand_computed_values():
    ref = torch.tensor([3.0, 4.0])  # ||ref|| = 5
    cand = torch.tensor([3.0, 4.5])  # diff (0, 0.5)
    m = acc.compare(cand, ref)
    assert m.max_abs_err == pytest.approx(0.5)
    assert m.rel_l2 == pytest.approx(0.1)
    assert m.cosine == pytest.approx((9 + 18) / (5 * math.sqrt(9 + 20.25)))
    assert m.sqnr_db == pytest.approx(20.0)  # 20 log10(5 / 0.5)


def test_nested_outputs_are_flattened_in_pytree_order():
    ref = {"a": torch.ones(2), "b": (torch.zeros(3), torch.full((1,), 2.0))}
    same = acc.compare({"a": torch.ones(2), "b": (torch.zeros(3), torch.full((1,), 2.0))}, ref)
    assert same.max_abs_err == 0 and same.rel_l2 == 0 and same.sqnr_db == math.inf
    off = acc.compare({"a": torch.ones(2), "b": (torch.zeros(3), torch.full((1,), 2.5))}, ref)
    assert off.max_abs_err == pytest.approx(0.5)
    # a list of tensors (what onnxruntime returns) compares against a tuple
    assert acc.compare([torch.ones(2), torch.zeros(3)], (torch.ones(2), torch.zeros(3))).max_abs_err == 0


def test_hf_model_output_is_flattened():
    from transformers.modeling_outputs import BaseModelOutput

    ref = BaseModelOutput(last_hidden_state=torch.ones(2, 3))
    assert acc.compare((torch.ones(2, 3) * 1.1,), ref).rel_l2 == pytest.approx(0.1, rel=1e-6)


def test_structure_mismatches_fail_loudly():
    with pytest.raises(AccuracyFailed, match="returns 1 tensors"):
        acc.compare(torch.ones(2), (torch.ones(2), torch.ones(2)))
    with pytest.raises(AccuracyFailed, match="shape"):
        acc.compare(torch.ones(3), torch.ones(2))


def test_nan_in_candidate_is_infinitely_wrong_but_matching_nonfinite_is_fine():
    ref = torch.tensor([1.0, float("inf"), 2.0])
    assert acc.compare(torch.tensor([1.0, float("inf"), 2.0]), ref).rel_l2 == 0
    bad = acc.compare(torch.tensor([1.0, float("inf"), float("nan")]), ref)
    assert bad.rel_l2 == math.inf and not acc.passes(bad, acc.DEFAULTS["fp32"], False)


def test_pass_rules_per_precision():
    tol = acc.DEFAULTS["fp32"]
    assert acc.passes(acc.Metrics(1e-3, 5e-6, 0.999999, 100), tol, False)
    assert not acc.passes(acc.Metrics(1e-3, 5e-5, 0.999999, 86), tol, False)
    assert acc.passes(acc.Metrics(5e-6, 1.0, 0.999999, 0), tol, False)  # tiny outputs: atol rescues rel_l2
    q = acc.DEFAULTS["int8"]
    assert acc.passes(acc.Metrics(1.0, 0.05, 0.999, 26.0), q, True)
    assert not acc.passes(acc.Metrics(1.0, 0.2, 0.98, 14.0), q, True)


def test_override_replaces_only_nonzero_fields():
    t = acc.tolerances_for("bf16", acc.Tolerances(max_rel_l2=0.5))
    assert t.max_rel_l2 == 0.5 and t.min_cosine == acc.DEFAULTS["bf16"].min_cosine
    with pytest.raises(ValueError):
        acc.Tolerances(min_cosine=2.0)


def test_check_reports_the_worst_sample_and_uses_fresh_inputs():
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(4, 1, 8, "b"), inp.Dim(5))),))
    model = torch.nn.Linear(5, 3)
    refs = acc.reference_outputs(model, spec, samples=4, seed=1)
    assert len(refs) == 4 and not torch.equal(refs[0][0][0][:1], inp.generate(spec, 0)[0][:1])
    calls = []

    def candidate(x):
        calls.append(x.shape[0])
        return model(x) + (0.01 if len(calls) == 3 else 0.0)

    rep = acc.check(candidate, refs, acc.DEFAULTS["fp32"])
    assert len(calls) == 4 and not rep.passed and rep.metrics.max_abs_err == pytest.approx(0.01, rel=1e-4)
    assert rep.to_dict()["samples"] == 4 and "FAIL" in rep.summary()


def test_reference_that_rejects_spec_inputs_is_invalid_input():
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(2), inp.Dim(7))),))
    with pytest.raises(InvalidInput, match="rejects inputs"):
        acc.reference_outputs(torch.nn.Linear(5, 3), spec, samples=1, seed=1)


def test_json_numbers_are_protobuf_json():
    assert acc.json_number(math.inf) == "Infinity" and acc.json_number(-math.inf) == "-Infinity"
    assert acc.json_number(float("nan")) == "NaN" and acc.json_number(1.5) == 1.5


def test_outputs_the_model_gives_in_bf16_are_judged_at_bf16s_tolerances():
    """A decode step returns fp32 logits and bf16 cache entries: an fp32 candidate that rounds one cache entry to
    the neighbouring bf16 value is right; one whose fp32 logits are off by 1e-3 is not."""
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(2), inp.Dim(64))),))

    def model(x):
        return x * 2.0, (x + 1.0).to(torch.bfloat16)

    refs = acc.reference_outputs(model, spec, samples=2, seed=1)

    def one_ulp_off(x):
        logits, cache = model(x)
        flipped = cache.view(torch.int16).clone()
        flipped[0, 0] += 1  # the next bf16 value: a relative change of up to 2**-7 in one element
        return logits, flipped.view(torch.bfloat16)

    rep = acc.check(one_ulp_off, refs, acc.DEFAULTS["fp32"])
    assert rep.passed and rep.low_outputs == ("bf16",) and "bf16 at that precision" in rep.summary()
    # The whole output vector misses fp32's bounds: without the split this candidate failed.
    assert rep.metrics.max_abs_err > acc.DEFAULTS["fp32"].atol
    rep = acc.check(lambda x: (model(x)[0] * 1.001, model(x)[1]), refs, acc.DEFAULTS["fp32"])
    assert not rep.passed  # the fp32 logits keep fp32's tolerances
    # Quantized checks stay on the whole vector's SQNR.
    rep = acc.check(one_ulp_off, refs, acc.DEFAULTS["int8"], quantized=True)
    assert rep.passed and rep.low_outputs == ()
