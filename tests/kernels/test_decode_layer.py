"""kernels/gemv.py's op with the RMSNorm folded in and the residual added, and kernels/decode_layer.py through
kpt.gpu.models.LlamaDecodeStep's decode_layer hook (under the Triton interpreter on CPU; on a GPU where CUDA is)."""

from __future__ import annotations

import pytest
import torch

from kernels import gemv
from tests.kernels.conftest import DEVICE, GEMM_DTYPES, check_2x


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("gated, norm, residual", [(False, True, False), (False, False, True), (True, True, False),
                                                   (True, True, True)])
def test_gemv_op_folds_the_norm_and_adds_the_residual(gated, norm, residual, dtype):
    K, N, eps = 97, 130, 1e-5  # a K tail, an N edge
    g = torch.Generator().manual_seed(K + N + 2 * gated + norm)
    x = (3 * torch.randn(1, 1, K, generator=g)).to(DEVICE, dtype)  # a scale the norm has to undo
    w, w2 = ((torch.randn(N, K, generator=g) / K ** 0.5).to(DEVICE, dtype) for _ in range(2))
    gw = (1 + 0.1 * torch.randn(K, generator=g)).to(DEVICE, dtype)
    r = torch.randn(1, 1, N, generator=g).to(DEVICE, dtype)
    args = (w, w2 if gated else None, gw if norm else None, r if residual else None, eps, "silu" if gated else "none")
    out = gemv.gemv_op(x, *args)
    assert out.shape == (1, 1, N) and out.dtype == dtype
    ref32 = gemv.reference(x.float(), *[t.float() if isinstance(t, torch.Tensor) else t for t in args])
    check_2x(out, ref32, None if dtype == torch.float32 else gemv.reference(x, *args))


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("norm", [False, True])
def test_gemv_op_applies_the_rotary_embedding_to_the_first_heads(norm, dtype):
    """q and k heads roped, v's columns (and a ragged edge past them) as they are: as the step's own rope."""
    K, D, eps = 97, 16, 1e-5
    N = 5 * D + 7  # three q heads and two k heads roped; 7 columns that are not
    g = torch.Generator().manual_seed(D + norm)
    x = (3 * torch.randn(1, 1, K, generator=g)).to(DEVICE, dtype)
    w = (torch.randn(N, K, generator=g) / K ** 0.5).to(DEVICE, dtype)
    gw = (1 + 0.1 * torch.randn(K, generator=g)).to(DEVICE, dtype) if norm else None
    angle = 37 * 10000.0 ** (-torch.arange(0, D, 2) / D)
    cos, sin = (f(torch.cat((angle, angle)))[None].to(DEVICE, dtype) for f in (torch.cos, torch.sin))
    args = (w, None, gw, None, eps, "none", cos, sin, 5 * D)
    out = gemv.gemv_op(x, *args)
    ref32 = gemv.reference(x.float(), *[t.float() if isinstance(t, torch.Tensor) else t for t in args])
    plain = gemv.reference(x.float(), *[t.float() if isinstance(t, torch.Tensor) else t for t in args[:6]])
    assert (ref32[..., :5 * D] - plain[..., :5 * D]).abs().max() > 0.1  # the embedding changes the heads
    torch.testing.assert_close(ref32[..., 5 * D:], plain[..., 5 * D:])
    check_2x(out, ref32, None if dtype == torch.float32 else gemv.reference(x, *args))


def test_gemv_op_rejects_mismatched_operands():
    x, w = torch.randn(1, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="norm weight"):
        gemv.gemv_op(x, w, None, torch.ones(7), None, 1e-6, "none")
    with pytest.raises(ValueError, match="residual"):
        gemv.gemv_op(x, w, None, None, torch.zeros(1, 5), 0.0, "none")
    with pytest.raises(ValueError, match="activation"):
        gemv.gemv_op(x, w, None, None, None, 0.0, "tanh")
    cos = torch.ones(1, 4)
    with pytest.raises(ValueError, match="together"):
        gemv.gemv_op(x, w, None, None, None, 0.0, "none", cos, None, 4)
    with pytest.raises(ValueError, match="whole 4-wide heads"):
        gemv.gemv_op(x, w, None, None, None, 0.0, "none", cos, cos, 2)
    with pytest.raises(ValueError, match="one even-length row"):
        gemv.gemv_op(x, w, None, None, None, 0.0, "none", torch.ones(2, 2), torch.ones(2, 2), 2)
    with pytest.raises(ValueError, match="plain projection"):
        gemv.gemv_op(x, w, None, None, torch.zeros(1, 4), 0.0, "none", cos, cos, 4)


def _step(context: int = 48):
    from tests.gpu.helpers import tiny_llama_decode

    step, spec, _ = tiny_llama_decode(context=context)
    return step.half().to(DEVICE), spec


def test_decode_step_runs_its_layers_through_the_hook(monkeypatch):
    """kernels.modules swaps the layer path into the step: four gemv launches a layer and one for the logits, the
    same logits and new cache entries as the step's own modules (fp16: the interpreter computes bf16 dot
    products wrongly), and export traces the ops."""
    from kernels import modules
    from kpt.optimize import inputs as inp

    step, spec = _step()
    ids, _, k_cache, v_cache = inp.generate(spec, seed=5)
    args = (ids.to(DEVICE), torch.tensor([29], device=DEVICE), k_cache.half().to(DEVICE), v_cache.half().to(DEVICE))
    assert modules.find_decode_layer_steps(step) == [""]
    calls, real = [], gemv.gemv_op
    monkeypatch.setattr(gemv, "gemv_op", lambda *a: calls.append(a[3] is not None) or real(*a))
    swapped = modules.swap_decode_layers(step)
    assert step.decode_layer is None and modules.find_decode_layer_steps(swapped) == []  # a new module
    # the hooks bypass every norm and MLP and set the attention: nothing left for the other swaps to try
    assert modules.find_norms(step) and modules.find_swiglu(step) and modules.find_decode_steps(step)
    assert not (modules.find_norms(swapped) or modules.find_swiglu(swapped) or modules.find_decode_steps(swapped))
    with torch.inference_mode():
        want, got = step(*args), swapped(*args)
    assert calls == [True, False, True, False] * 2 + [True]  # per layer: qkv and gate/up fold a norm, o and down
    # do not; the LM head folds the final norm
    for g, w in zip(got, want, strict=True):  # logits, then every layer's new entries: fp16 rounding apart
        assert (g.float() - w.float()).abs().max().item() <= 1e-2 * w.float().abs().max().item()
    monkeypatch.setattr(gemv, "gemv_op", real)
    ep = torch.export.export(swapped, args)
    assert sum(n.target == torch.ops.kpt.gemv.default for n in ep.graph.nodes) == 9


def test_layers_it_cannot_compute_exactly_are_not_offered():
    from kernels import decode_layer, modules

    step, _ = _step()
    step.model.layers[1].self_attn.k_proj.bias = torch.nn.Parameter(torch.zeros(64, dtype=torch.half, device=DEVICE))
    assert decode_layer.eligible(step.model.layers[0]) and not decode_layer.eligible(step.model.layers[1])
    assert modules.find_decode_layer_steps(step) == []
    step, _ = _step()
    step.lm_head.bias = torch.nn.Parameter(torch.zeros(step.lm_head.out_features, dtype=torch.half, device=DEVICE))
    assert not decode_layer.head_eligible(step)  # the layers still go through the hook, the head does not
    swapped = modules.swap_decode_layers(step)
    assert swapped.decode_layer is decode_layer.llama_layer and swapped.decode_head is None
