"""kpt.gpu.casts on the CPU: the fp32 cast of a bf16 LM head's logits becomes one GEMM that writes fp32.

aten.mm.dtype has no CPU kernel, so the rewritten graph runs here under an interpreter that computes it as what
cuBLAS computes (the bf16 operands' products summed in fp32); on the GPU, tests/gpu/test_gpu_runtime.py runs the
compiled package itself."""

import pytest
import torch

from kpt.gpu import casts, exported
from kpt.optimize import inputs as inp
from kpt.optimize.graph_passes import cast_module
from kpt.optimize.passes import Work

aten = torch.ops.aten


class _CpuMmDtype(torch.fx.Interpreter):
    def call_function(self, target, args, kwargs):  # noqa: ANN001 - torch.fx's protocol
        if target == aten.mm.dtype:
            a, b, dtype = args
            return torch.mm(a.to(dtype), b.to(dtype))
        return super().call_function(target, args, kwargs)


def _gpt2_lm(tmp_path, dims=(inp.Dim(2), inp.Dim(96)), vocab=304) -> Work:  # noqa: ANN001 - pytest's tmp_path
    from transformers import GPT2Config, GPT2LMHeadModel

    from kpt.optimize.zoo import HFTensors

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=vocab, n_positions=128, attn_implementation="sdpa",
                     use_cache=False, bos_token_id=0, eos_token_id=0)
    model = HFTensors(GPT2LMHeadModel(cfg), ("input_ids",), ("logits",)).eval()
    spec = inp.InputSpec((inp.TensorSpec("input_ids", "int64", dims, 0, vocab),))
    work = Work(model, spec, "cpu", str(tmp_path))
    cast_module(work, torch.bfloat16, "bf16")
    return work


def _first(out):  # noqa: ANN001, ANN202 - a tensor or a one-tensor tuple
    return out[0] if isinstance(out, (tuple, list)) else out


def _targets(ep: torch.export.ExportedProgram) -> list:
    return [n.target for n in ep.graph.nodes if n.op == "call_function"]


def test_torch_here_lowers_mm_out_dtype(monkeypatch, tmp_path):
    assert casts.supported()  # torch 2.13: tuned_mm(mat1, mat2, out_dtype=None, ...), aoti_torch_cuda_mm_dtype_out
    shim = tmp_path / "c_shim_cuda.h"
    shim.write_text("AOTI_TORCH_EXPORT AOTITorchError aoti_torch_cuda_mm_out(AtenTensorHandle out);\n")
    monkeypatch.setattr(casts, "SHIM", str(shim))
    assert not casts.supported()  # a torch whose packages cannot call mm.dtype keeps its casts
    monkeypatch.setattr(casts, "SHIM", str(tmp_path / "missing.h"))
    assert not casts.supported()


@pytest.mark.parametrize("vocab", [304, 300])
def test_lm_head_cast_becomes_one_gemm_with_the_same_logits(tmp_path, vocab):
    """300 is not a multiple of 8: the weight is padded to 304 rows and the logits are the first 300 columns."""
    work = _gpt2_lm(tmp_path, vocab=vocab)
    ep = work.export()
    x = work.example()
    with torch.no_grad():
        before = ep.module()(*x)
        assert casts.fuse_output_casts(ep) == "1 fp32 output cast(s) done by their GEMM"
        after = _CpuMmDtype(ep.module()).run(*x)
    targets = _targets(ep)
    assert targets.count(aten.mm.dtype) == 1 and aten.addmm.default in targets  # the blocks' Conv1D GEMMs stay
    assert aten.to.dtype not in targets[-4:]
    out = ep.graph.output_node().args[0][0]
    gemm = out.args[0]
    assert out.target == aten.reshape.default
    if vocab % casts.ALIGN:
        assert gemm.target == aten.slice.Tensor and gemm.args[1:] == (1, 0, vocab)
        assert aten.constant_pad_nd.default in targets
        gemm = gemm.args[0]
    assert gemm.target == aten.mm.dtype and gemm.meta["val"].shape[1] == 304
    before, after = _first(before), _first(after)
    assert after.dtype == torch.float32 and after.shape == before.shape == (2, 96, vocab)
    # The same products, summed in fp32 either way; before, the sum was rounded to bf16 once more.
    torch.testing.assert_close(after, before, rtol=2**-8, atol=1e-6)
    assert (after - before).abs().max() > 0  # the bf16 rounding of the logits is gone, not the computation


def test_a_dynamic_batch_keeps_its_symbolic_size(tmp_path):
    work = _gpt2_lm(tmp_path, (inp.Dim(2, min=1, max=16, name="batch"), inp.Dim(96)), vocab=300)
    ep = work.export()
    assert casts.fuse_output_casts(ep)
    assert aten.sym_size.int in _targets(ep)
    x = (torch.randint(0, 300, (5, 96)),)
    with torch.no_grad():
        ref = _first(work.module(*x))
        got = _first(_CpuMmDtype(ep.module()).run(*x))
    assert got.shape == (5, 96, 300)
    torch.testing.assert_close(got, ref, rtol=2**-8, atol=1e-6)


class _Head(torch.nn.Module):
    def __init__(self, bias: bool = False, rows_used: bool = False, depth: int = 64) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(depth, 200, bias=bias).to(torch.bfloat16)
        self.rows_used = rows_used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x.to(torch.bfloat16))
        return (y.float(), y) if self.rows_used else y.float()


@pytest.mark.parametrize("case, shape", [("bias", (4, 32, 64)), ("used twice", (4, 32, 64)), ("decode", (1, 1, 64)),
                                         ("fp32", (4, 32, 64)), ("unaligned depth", (4, 32, 62))])
def test_what_stays(case, shape):
    # "unaligned depth": padding it would copy the activations too; unpadded, cuBLAS runs its slow align-1 kernels
    model = _Head(bias=case == "bias", rows_used=case == "used twice", depth=shape[-1])
    if case == "fp32":
        model = torch.nn.Sequential(torch.nn.Linear(64, 200))  # no cast to rewrite
    ep = torch.export.export(model, (torch.randn(*shape),))
    before = _targets(ep)
    assert casts.fuse_output_casts(ep) == ""
    assert _targets(ep) == before


def test_the_exported_program_of_a_cpu_candidate_keeps_its_casts(tmp_path):
    work = _gpt2_lm(tmp_path)
    ep, done = exported.export_for_compile(work)
    assert aten.mm.dtype not in _targets(ep) and "output cast" not in done
    assert done == "attention masks: 1 causal mask(s) made is_causal"
