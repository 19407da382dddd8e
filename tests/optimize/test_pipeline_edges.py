"""Edges of the optimize pipeline: speedup from degenerate timings, benchmark settings, onnxruntime dtypes."""

import math

import pytest
import torch

from kpt.errors import Unsupported
from kpt.optimize import bench, jobspec, ort, pipeline, source
from kpt.optimize.graph_passes import SaveExportedProgram

FAST = bench.Settings(warmup_iters=1, min_iters=5, max_iters=50, time_budget_s=0.5)
LEVELS = {"LEVEL_O0": (SaveExportedProgram(),), "LEVEL_O1": (SaveExportedProgram(),)}


def fixed_timing(p50: dict):
    """A device timing that reports the given latency for each variant (as a coarse device clock could)."""
    def timing(fns, spec, settings, device):
        return {n: [p50[n]] * 5 for n in fns}, {}
    return timing


@pytest.mark.parametrize("p50", [{"kpt_O0": 1.0, "kpt_O1": 0.0}, {"kpt_O0": 0.0, "kpt_O1": 0.0},
                                 {"kpt_O0": math.nan, "kpt_O1": 1.0}], ids=["zero", "both-zero", "nan"])
def test_speedup_from_unusable_latencies_is_not_invented(tmp_path, p50):
    """A p50 of zero (below a device clock's resolution) or NaN gives no ratio: the job still finishes, and the
    speedup is left unset (0, shown as '-') instead of a ZeroDivisionError or a NaN/inf in the report."""
    src = source.from_zoo("mlp", None)
    result = pipeline.optimize(src, LEVELS, "LEVEL_O1", "TARGET_CPU", "cpu", frozenset({"fp32"}), None, FAST,
                               str(tmp_path), lambda *a: None, timing=fixed_timing(p50))
    assert result["achieved_level"] == "LEVEL_O1"
    assert result["speedup"] == 0.0 and result["artifacts"][0]["metadata"]["speedup"] == "0.0000"


def test_speedup_is_the_ratio_of_the_two_p50s(tmp_path):
    src = source.from_zoo("mlp", None)
    result = pipeline.optimize(src, LEVELS, "LEVEL_O1", "TARGET_CPU", "cpu", frozenset({"fp32"}), None, FAST,
                               str(tmp_path), lambda *a: None, timing=fixed_timing({"kpt_O0": 3.0, "kpt_O1": 1.5}))
    assert result["speedup"] == 2.0


def test_max_iters_alone_below_the_default_min_iters_is_accepted():
    """The gateway accepts benchmark.max_iters=10 (min_iters unset); the service must not refuse it because its
    own default min_iters (20) is higher, as it already lowers nothing when min_iters alone exceeds max_iters."""
    s = bench.settings_from_dict({"max_iters": 10})
    assert (s.min_iters, s.max_iters) == (10, 10)
    req = jobspec.parse({"kind": "JOB_KIND_BENCHMARK", "benchmark": {"max_iters": 10}})
    assert req.bench.max_iters == 10
    with pytest.raises(ValueError):  # both given and contradictory: still refused
        bench.settings_from_dict({"min_iters": 30, "max_iters": 10})


def _onnx(tmp_path, in_type, out_type, op, **attrs):
    import onnx
    from onnx import helper

    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g",
                          [helper.make_tensor_value_info("x", in_type, [2, 3])],
                          [helper.make_tensor_value_info("y", out_type, [2, 3])])
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_bfloat16_inputs_or_outputs_in_onnxruntime_are_a_typed_error(tmp_path):
    """onnxruntime's Python API has no numpy type for bfloat16: a model taking or returning bf16 (an ONNX upload
    being benchmarked) failed with a bare TypeError/RuntimeError, i.e. INTERNAL."""
    from onnx import TensorProto

    sess = ort.session(_onnx(tmp_path, TensorProto.BFLOAT16, TensorProto.BFLOAT16, "Identity"))
    with pytest.raises(Unsupported, match="bfloat16"):
        ort.run(sess, [torch.randn(2, 3).to(torch.bfloat16)])
    sess = ort.session(_onnx(tmp_path, TensorProto.FLOAT, TensorProto.BFLOAT16, "Cast", to=TensorProto.BFLOAT16))
    with pytest.raises(Unsupported, match="bfloat16"):
        ort.run(sess, [torch.randn(2, 3)])
    sess = ort.session(_onnx(tmp_path, TensorProto.FLOAT, TensorProto.FLOAT, "Identity"))
    x = torch.randn(2, 3)
    assert torch.equal(ort.run(sess, [x])[0], x)


def test_cpu_fingerprint_changes_with_the_cores_jobs_run_on(monkeypatch):
    """The result cache is keyed by the service's toolchain fingerprint: latencies and speedups measured on 2
    cores must not be served to a job on the same CPU model given 16 (a resized container or pod)."""
    from kpt.optimize import env

    info = env.CpuInfo("Same CPU", frozenset({"avx2"}))
    fps = []
    for cores in (2, 16):
        monkeypatch.setattr(env.os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        fps.append(env.cpu_target_info("TARGET_CPU", info, [], [], {"torch": "2.x"})["toolchain_fingerprint"])
    assert fps[0] != fps[1]


def test_the_toolchain_fingerprint_follows_kpts_own_code(tmp_path, monkeypatch):
    """A result cached before the passes changed must not be served after: the toolchain (hence every service's
    fingerprint and the cache key) carries a digest of the code, which any edit of a package's .py files changes."""
    from kpt.optimize import env

    pkg = tmp_path / "kpt_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "passes.py").write_text("LEVEL = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = env.code_digest_of(("kpt_probe_pkg",))
    assert env.code_digest_of(("kpt_probe_pkg",)) == before  # the same code, the same digest
    (pkg / "passes.py").write_text("LEVEL = 2\n")
    assert env.code_digest_of(("kpt_probe_pkg",)) != before
    assert env.code_digest_of(("no_such_package_here",)) == env.code_digest_of(())
    assert env.toolchain()["kpt_code"] == env.code_digest_of(env.CODE_PACKAGES)
