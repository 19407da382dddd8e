"""kpt.gpu.epilogues on the CPU: a biased bf16 linear layer's GELU rewritten into aten._addmm_activation, which
AOTInductor calls through its C shim. On the CPU that op computes the exact GELU, so the rewritten graph matches
the original here; on CUDA (cuBLASLt's epilogue) it is the tanh approximation: the GPU test is in
tests/gpu/test_gpu_runtime.py."""

import zipfile

import pytest
import torch

from kpt.gpu import casts, epilogues
from kpt.gpu.epilogues import GeluEpilogue, candidates, fuse_gelus
from kpt.optimize import inputs as inp
from kpt.optimize.passes import Work, apply
from tests.gpu.helpers import tiny_bert

aten = torch.ops.aten


class _Mlp(torch.nn.Module):
    def __init__(self, bias: bool = True, residual: bool = False, approximate: str = "none") -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(64, 256, bias=bias), torch.nn.Linear(256, 64)
        self.residual, self.approximate = residual, approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        y = self.down(torch.nn.functional.gelu(h, approximate=self.approximate))
        return y + h[..., :64] if self.residual else y


def _export(model: torch.nn.Module, shape=(2, 48, 64), dtype=torch.bfloat16) -> torch.export.ExportedProgram:  # noqa: ANN001
    torch.manual_seed(0)
    model = model.to(dtype).eval()
    return torch.export.export(model, (torch.randn(*shape, dtype=dtype),))


def _targets(ep: torch.export.ExportedProgram) -> list:
    return [n.target for n in ep.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_a_linear_layers_gelu_becomes_one_addmm_activation(approximate):
    torch.manual_seed(0)
    model = _Mlp(approximate=approximate).to(torch.bfloat16).eval()
    x = torch.randn(2, 48, 64, dtype=torch.bfloat16)
    ep = torch.export.export(model, (x,))
    assert fuse_gelus(ep) == f"1 {epilogues.DONE}"
    targets = _targets(ep)
    assert aten._addmm_activation.default in targets and aten.gelu.default not in targets
    assert targets.count(aten.linear.default) == 1  # the down-projection, which no GELU follows
    with torch.inference_mode():
        want = model(x)
        got = ep.module()(x)
    # the CPU's op computes the GELU asked for (the exact one for "none") from the same bf16 products; the bias is
    # added in another order, so one bf16 rounding step apart at most
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_only_biased_reduced_precision_linears_read_by_the_gelu_alone_are_rewritten():
    assert candidates(_export(_Mlp(), dtype=torch.float32)) == []  # fp32: no reduced-precision GEMM to fuse
    assert candidates(_export(_Mlp(bias=False))) == []  # no bias: nothing for the epilogue to add
    assert candidates(_export(_Mlp(residual=True))) == []  # the linear's output is read twice
    assert candidates(_export(_Mlp(), shape=(1, 1, 64))) == []  # a matrix-vector product: Inductor's own kernel
    ep = _export(_Mlp(), shape=(casts.MIN_ROWS, 64))  # 2-D input: no flattening needed
    assert fuse_gelus(ep) == f"1 {epilogues.DONE}" and aten.reshape.default in _targets(ep)
    assert fuse_gelus(_export(_Mlp(bias=False))) == ""


def test_every_bert_layers_intermediate_gelu_is_found():
    model, spec = tiny_bert(batch=2, seq=32)
    x = inp.generate(spec, seed=0, for_export=True)
    ep = torch.export.export(model.to(torch.bfloat16).eval(), tuple(x))
    assert len(candidates(ep)) == 2  # one FFN up-projection a layer
    assert fuse_gelus(ep) == f"2 {epilogues.DONE}"
    with torch.inference_mode():
        torch.testing.assert_close(ep.module()(*x), model(*x), rtol=5e-2, atol=5e-2)


def test_the_rewritten_graph_compiles_with_aotinductor(tmp_path):
    """Inductor keeps aten._addmm_activation as an ATen call, which the package makes through the C shim."""
    torch.manual_seed(0)
    model = _Mlp().to(torch.bfloat16).eval()
    x = torch.randn(2, 48, 64, dtype=torch.bfloat16)
    ep = torch.export.export(model, (x,))
    fuse_gelus(ep)
    path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "mlp.pt2"))
    with zipfile.ZipFile(path) as z:
        wrapper = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".wrapper.cpp"))
    assert "aoti_torch_cpu__addmm_activation(up_bias," in wrapper  # the C shim's call, handed the 1-D bias itself
    with torch.inference_mode():
        torch.testing.assert_close(torch._inductor.aoti_load_package(path)(x), model(x), rtol=2e-2, atol=2e-2)


def test_support_is_read_from_the_c_shim(tmp_path):
    shim = tmp_path / "c_shim_cuda.h"
    shim.write_text("AOTI_TORCH_EXPORT AOTITorchError aoti_torch_cuda__addmm_activation(AtenTensorHandle self);\n")
    assert casts.declares("aoti_torch_cuda__addmm_activation", str(shim))
    assert not casts.declares("aoti_torch_cuda_mm_dtype_out", str(shim))
    assert not casts.declares("aoti_torch_cuda__addmm_activation", str(tmp_path / "missing.h"))


def test_the_pass_is_tried_on_gpus_only(tmp_path):
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(2), inp.Dim(48), inp.Dim(64))),))
    work = Work(_Mlp().to(torch.bfloat16).eval(), spec, "cpu", str(tmp_path))
    row = apply(GeluEpilogue(), work, "LEVEL_O3")
    assert not row["applied"] and row["reason"].startswith("GEMM epilogues are tried on GPUs only"), row
    assert not getattr(work.module, epilogues.ATTR, False)


@pytest.mark.parametrize(("trial_ms", "kept"), [(0.5, True), (0.995, False)])
def test_the_rewrite_is_kept_only_where_its_trial_measures_it_faster(monkeypatch, tmp_path, trial_ms, kept):
    """The pass's decision on the CPU, its trial's graph replay standing in (the trial itself needs a GPU: tests/gpu/
    test_gpu_runtime.py): the rewritten graph timed against the plain one, the rewrite kept for the compile's export
    at min_speedup or more, and a second job reusing the stored decision."""
    from kpt.gpu import passes

    timed = []

    def trial(base, candidate, x):  # noqa: ANN001, ANN202 - stands in for time_trial's compile and replay
        timed.append(tuple(aten._addmm_activation.default in {n.target for n in m.graph.nodes} for m in (base, candidate)))
        return {"base_ms": 1.0, "trial_ms": trial_ms, "compiled": 1, "graphs": 1}

    monkeypatch.setattr(passes, "on_gpu", lambda work: True)
    monkeypatch.setattr(passes, "time_trial", trial)
    monkeypatch.setattr(epilogues, "supported", lambda: True)
    monkeypatch.setenv("KPT_CACHE_DIR", str(tmp_path / "cache"))
    spec = inp.InputSpec((inp.TensorSpec("x", "bfloat16", (inp.Dim(2), inp.Dim(48), inp.Dim(64))),))
    for attempt in range(2):
        work = Work(_Mlp().to(torch.bfloat16).eval(), spec, "cpu", str(tmp_path / str(attempt)))
        row = apply(GeluEpilogue(), work, "LEVEL_O3")
        assert row["applied"] is kept and getattr(work.module, epilogues.ATTR, False) is kept, row
        assert row["reason"].startswith(f"1 {epilogues.DONE}: " if kept else f"1 {epilogues.DONE}: measured no faster")
        assert ("1.000 -> 0.995 ms" if not kept else "1.000 -> 0.500 ms") in row["reason"], row["reason"]
        assert ("(measured by an earlier job)" in row["reason"]) is bool(attempt), row["reason"]
    assert timed == [(False, True)]  # timed once: the plain graph against the rewritten one
