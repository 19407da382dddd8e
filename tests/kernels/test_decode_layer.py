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


@pytest.mark.parametrize("gated, K", [(False, 2100), (True, 1100), (True, 97)])
def test_gemv_loads_its_first_columns_early_and_the_rest_in_its_loop(gated, K):
    """The form a PDL launch takes (its first EARLY_ELEMS weight elements loaded before the wait), asked for without
    PDL: columns past the early ones through the loop (K over them), or all early (K 97), with the norm folded in
    and the residual added."""
    _check_one_row(130, K, gated, K + gated, early=8192)


def _check_one_row(N: int, K: int, gated: bool, seed: int, **run_kw) -> None:  # noqa: ANN003 - gemv.run's options
    """gemv.run at one row (fp32, the norm folded in, the residual added) against gemv.reference."""
    from kernels._common import ACTS, launch

    eps, act = 1e-5, "silu" if gated else "none"
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(1, K, generator=g)).to(DEVICE)
    w, w2 = ((torch.randn(N, K, generator=g) / K ** 0.5).to(DEVICE) for _ in range(2))
    gw = (1 + 0.1 * torch.randn(K, generator=g)).to(DEVICE)
    r = torch.randn(1, N, generator=g).to(DEVICE)
    out = torch.empty(1, N, device=DEVICE)
    gemv.run(launch, x, w, w2, w, w, out, False, ACTS[act], gated, gw, r, eps, **run_kw)
    torch.testing.assert_close(out, gemv.reference(x, w, w2 if gated else None, gw, r, eps, act), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gated, K, N, elems, rows", [(False, 97, 130, 512, 4), (True, 1100, 7, 4096, 1),
                                                     (False, 2048, 3, 16384, 4), (True, 97, 130, 100, None)])
def test_gemv_whole_rows_load_before_the_loop(gated, K, N, elems, rows):
    """whole_config's block (what a PDL launch of a large weight takes with WHOLE_ELEMS): as many rows as fit the
    elements asked, K padded to a power of 2 (masked), N's next power of 2 at most; where not even one row fits,
    the autotuner's configs run instead, equally correct."""
    block = gemv.whole_config(N, K, gated, None, elems)
    assert (block and block["BLOCK_N"]) == rows
    _check_one_row(N, K, gated, K + N, whole=elems)


def test_an_eager_pick_is_what_a_compile_is_offered(monkeypatch):
    """run() records the autotuner's pick of an eager call (gemv.PICKS); the prune hook a compile's tuning goes
    through then offers that config alone for the key, all fitting configs for any other key, or with PIN off."""
    from kernels._common import ACTS, launch

    monkeypatch.setattr(gemv, "PICKS", {})
    N, K = 40, 2048  # K long enough for several of the GPU's configs to fit
    x, w = torch.randn(1, K, device=DEVICE), torch.randn(N, K, device=DEVICE)
    out = torch.empty(1, N, device=DEVICE)
    gemv.run(launch, x, w, w, w, w, out, False, ACTS["none"], False)
    consts = {"HAS_BIAS": False, "ACT": ACTS["none"], "GATED": False, "NORM": False, "RES": False, "ROPE": False,
              "HEAD_DIM": 2, "PREFETCH": False, "ZERO": False}
    key = gemv._pick_key(x.dtype, N, K, consts)
    assert list(gemv.PICKS) == [key]  # what the autotuner ran (under the interpreter, its one config)
    args = {"x_ptr": x, "N": N, "K": K}
    every = gemv._fitting(gemv._GPU, args, **consts)
    assert len(every) > 1
    gemv.PICKS[key] = every[-1]  # as if the GPU's autotuner had picked it
    assert gemv._fitting(gemv._GPU, args, **consts) == [every[-1]]
    assert gemv._fitting(gemv._GPU, args, **{**consts, "NORM": True}) == every  # another key: not pinned
    monkeypatch.setattr(gemv, "PIN", False)
    assert gemv._fitting(gemv._GPU, args, **consts) == every


def test_whole_config_keeps_rotation_pairs_and_the_1b_llamas_blocks():
    """At 8192 elements: the 1B Llama's q/k/v and output projection 4 rows, gate/up 2, down 1 (its 5632-long rows
    padded to 8192); a q/k/v block is whole rotation pairs of a head or none."""
    blocks = {name: gemv.whole_config(n, k, gated, hd, 8192) for name, n, k, gated, hd in
              (("qkv", 2560, 2048, False, 64), ("o", 2048, 2048, False, None), ("gate_up", 5632, 2048, True, None),
               ("down", 2048, 5632, False, None))}
    assert {name: b["BLOCK_N"] for name, b in blocks.items()} == {"qkv": 4, "o": 4, "gate_up": 2, "down": 1}
    assert blocks["down"]["EARLY"] == 8192 and blocks["gate_up"]["EARLY"] == 8192
    assert gemv.whole_config(2560, 4096, False, 64, 8192)["BLOCK_N"] == 2
    assert gemv.whole_config(2560, 8192, False, 64, 8192) is None  # one row: not a rotation pair
    assert gemv.whole_config(2560, 4096, False, 6, 8192)["BLOCK_N"] == 2
    assert gemv.whole_config(2560, 2048, False, 6, 16384)["BLOCK_N"] == 2  # 8 rows fit; 6-wide heads take 2


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("norm, rows, whole", [(False, 1, False), (True, 1, True), (True, 2, True), (True, 2, False)])
def test_gemv_qkv_ropes_q_and_k_and_writes_k_and_v_out(norm, rows, whole, dtype):
    """Three q heads and two key/value heads of 16: q returned, k and v written into the given outputs (slices of
    a stacked buffer, or the stacked buffers whole with the slot, as the step passes them), q and k with the rotary
    embedding at the position given."""
    K, D, eps, kv = 97, 16, 1e-5, 2
    g = torch.Generator().manual_seed(D + norm + rows)
    x = (3 * torch.randn(rows, 1, K, generator=g)).to(DEVICE, dtype)
    w = (torch.randn((3 + 2 * kv) * D, K, generator=g) / K ** 0.5).to(DEVICE, dtype)
    gw = (1 + 0.1 * torch.randn(K, generator=g)).to(DEVICE, dtype) if norm else None
    pos, inv_freq = torch.tensor([37], device=DEVICE), (10000.0 ** (-torch.arange(0, D, 2) / D)).to(DEVICE)
    stacked = torch.full((3, 2, rows, kv, 1, D), float("nan"), device=DEVICE, dtype=dtype)  # k/v/spare, layers
    counters = torch.arange(-1, 130, dtype=torch.int32, device=DEVICE)  # 131: the first program zeroes two rounds
    outs = dict(k_out=stacked[0], v_out=stacked[1], slot=1) if whole else dict(k_out=stacked[0, 1], v_out=stacked[1, 1])
    q = gemv.gemv_qkv(x, w, gw, eps, pos, inv_freq, zero=counters if norm else None, **outs)
    assert q.shape == (rows, 1, 3 * D) and q.dtype == dtype
    assert (counters == 0).all().item() is norm  # zeroed where asked, untouched otherwise
    assert stacked[:, 0].isnan().all() and stacked[2].isnan().all()  # nothing written past the outputs given
    args = (w, gw, eps, pos, inv_freq, kv * D)
    ref32 = gemv.reference_qkv(x.float(), *[t.float() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                            else t for t in args])
    low = gemv.reference_qkv(x, *args) if dtype != torch.float32 else (None,) * 3
    plain = gemv.reference(x.float(), w.float(), None, None if gw is None else gw.float(), None, eps, "none")
    assert (ref32[0] - plain[..., :3 * D]).abs().max() > 0.1  # the embedding changes the heads
    torch.testing.assert_close(ref32[2], plain[..., 5 * D:])  # and leaves v alone
    for got, want, lo in zip((q, stacked[0, 1], stacked[1, 1]), ref32, low, strict=True):
        check_2x(got.reshape(want.shape), want, lo)


def test_gemv_op_rejects_mismatched_operands():
    x, w = torch.randn(1, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="norm weight"):
        gemv.gemv_op(x, w, None, torch.ones(7), None, 1e-6, "none")
    with pytest.raises(ValueError, match="residual"):
        gemv.gemv_op(x, w, None, None, torch.zeros(1, 5), 0.0, "none")
    with pytest.raises(ValueError, match="activation"):
        gemv.gemv_op(x, w, None, None, None, 0.0, "tanh")
    kv, pos, f = torch.empty(1, 1, 1, 2), torch.tensor([3]), torch.ones(1)
    w6 = torch.randn(6, 8)
    assert gemv.gemv_qkv(x, w6, None, 0.0, pos, f, kv, kv.clone()).shape == (1, 2)
    with pytest.raises(ValueError, match="one integer position"):
        gemv.gemv_qkv(x, w6, None, 0.0, torch.tensor([3.0]), f, kv, kv.clone())
    with pytest.raises(ValueError, match="whole 2-wide q heads"):
        gemv.gemv_qkv(x, w6[:5], None, 0.0, pos, f, kv, kv.clone())
    with pytest.raises(ValueError, match="k_out must hold whole 2-wide heads"):
        gemv.gemv_qkv(x, w6, None, 0.0, pos, f, torch.empty(1, 3), kv)
    with pytest.raises(ValueError, match="contiguous rows"):
        gemv.gemv_qkv(x, w6, None, 0.0, pos, f, torch.empty(1, 1, 4)[..., ::2], kv)
    with pytest.raises(ValueError, match="contiguous rows"):  # no view of it is one row: reshape would copy
        gemv.gemv_qkv(x, w6, None, 0.0, pos, f, torch.empty(1, 2, 2).transpose(1, 2), kv)
    with pytest.raises(ValueError, match="slot 2 must index"):
        gemv.gemv_qkv(x, w6, None, 0.0, pos, f, kv.expand(2, -1, -1, -1), kv.expand(2, -1, -1, -1), slot=2)


def test_prefetch_operands_are_the_first_bytes_of_a_contiguous_tensor(monkeypatch):
    from kernels import _common

    w = torch.empty(10, 8, dtype=torch.float16)
    assert _common.prefetch_args(None, 1.0) == (None, 0)
    monkeypatch.setattr(_common, "interpreting", lambda: False)
    assert _common.prefetch_args(w, 0.5) == (w, 80) and _common.prefetch_args(w, 2.0) == (w, 160)
    assert _common.prefetch_args(w, 0.0) == (None, 0)
    with pytest.raises(ValueError, match="contiguous"):
        _common.prefetch_args(w.t(), 1.0)


def test_pdl_code_where_asked_on_sm90_and_the_launch_attribute_only_where_triton_launches(monkeypatch):
    """kernels._common: the PDL code only where the op is asked (its pdl argument), on sm_90+, outside the
    interpreter, traced or not; the launch attribute only where Triton's own launcher runs the kernel (a trace would
    pass launch keywords to the kernel as arguments; Inductor's and AOTInductor's launchers set none)."""
    from types import SimpleNamespace

    from torch._library.triton import set_wrap_triton_enabled

    from kernels import _common

    on_gpu = SimpleNamespace(is_cuda=True, device="cuda:0")
    monkeypatch.setattr(_common, "interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with set_wrap_triton_enabled(False):  # as inside a triton_op run on real tensors
        assert not _common.pdl_code(on_gpu, False) and not _common.pdl_launch(on_gpu, False)  # not asked for
        assert _common.pdl_launch(on_gpu, True) and _common.pdl_options(True) == {"launch_pdl": True}
        assert not _common.pdl_code(torch.empty(1), True) and _common.pdl_options(False) == {}
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
        assert not _common.pdl_code(on_gpu, True)  # no griddepcontrol before Hopper
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert _common.pdl_code(on_gpu, True) and not _common.pdl_launch(on_gpu, True)  # traced: the code only
    monkeypatch.setattr(_common, "interpreting", lambda: True)
    assert not _common.pdl_code(on_gpu, True)


def test_a_step_asked_for_pdl_passes_it_to_every_launch(monkeypatch):
    """decode_layer.PDL set on a step (modules.swap_decode_pdl sets it on sm_90+): each of its layer launches and the
    logits' are asked for PDL (under the interpreter the kernels then run as plain launches: the same results), and
    export traces the ops with it."""
    from kernels import decode, decode_layer, modules
    from kpt.optimize import inputs as inp

    step, spec = _step()
    ids, _, k_cache, v_cache = inp.generate(spec, seed=5)
    args = (ids.to(DEVICE), torch.tensor([29], device=DEVICE), k_cache.half().to(DEVICE), v_cache.half().to(DEVICE))
    swapped = modules.swap_decode_layers(step)
    assert modules.find_decode_pdl_steps(swapped) == []  # CPU tensors: no programmatic dependent launch here
    pdl = modules.swap_decode_layers(step)
    setattr(pdl, decode_layer.PDL, ("_gemv_kernel",))
    asked, real_op, real_qkv, real_attention = [], gemv.gemv_op, gemv.gemv_qkv, decode.decode_attention
    monkeypatch.setattr(gemv, "gemv_op", lambda *a: asked.append(a[-1]) or real_op(*a))
    monkeypatch.setattr(gemv, "gemv_qkv", lambda *a, **k: asked.append(a[-1]) or real_qkv(*a, **k))
    monkeypatch.setattr(decode, "decode_attention", lambda *a: asked.append(a[-1]) or real_attention(*a))
    with torch.inference_mode():
        want, got = swapped(*args), pdl(*args)
    assert asked == [False] * 11 + [True] * 11  # 5 launches a layer, 2 layers, the logits
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    monkeypatch.setattr(gemv, "gemv_op", real_op)
    monkeypatch.setattr(gemv, "gemv_qkv", real_qkv)
    monkeypatch.setattr(decode, "decode_attention", real_attention)
    ep = torch.export.export(pdl, args)
    flags = [n.args[-2] if n.target is torch.ops.kpt.gemv_qkv.default else n.args[-1] for n in ep.graph.nodes
             if n.target in (torch.ops.kpt.gemv.default, torch.ops.kpt.gemv_qkv.default)]  # gemv_qkv's slot follows
    assert len(flags) == 2 * 4 + 1 and all(f is True for f in flags), flags


def _step(context: int = 48):
    from tests.gpu.helpers import tiny_llama_decode

    step, spec, _ = tiny_llama_decode(context=context)
    return step.half().to(DEVICE), spec


@pytest.mark.parametrize("launches, chain", [(1, False), (2, False), (1, True), (2, True), (1, "layer")])
def test_decode_step_runs_its_layers_through_the_hook(monkeypatch, launches, chain):
    """kernels.modules swaps the layer path into the step: four gemv launches a layer and one for the logits, the
    same logits and new cache entries as the step's own modules (fp16: the interpreter computes bf16 dot
    products wrongly), and export traces the ops. Decode attention in one launch (the counters gemv_qkv zeroes)
    or two; the output projection, gate/up and down in three launches or one (kernels/mlp_chain.py); or the whole
    layer in one (kernels/layer_chain.py)."""
    from kernels import decode, decode_layer, layer_chain, mlp_chain, modules
    from kpt.optimize import inputs as inp

    step, spec = _step()
    ids, _, k_cache, v_cache = inp.generate(spec, seed=5)
    args = (ids.to(DEVICE), torch.tensor([29], device=DEVICE), k_cache.half().to(DEVICE), v_cache.half().to(DEVICE))
    assert modules.find_decode_layer_steps(step) == [""]
    calls, real, real_qkv, real_attention = [], gemv.gemv_op, gemv.gemv_qkv, decode.decode_attention
    real_chain, real_layer = mlp_chain.mlp_chain, layer_chain.layer_chain
    monkeypatch.setattr(decode_layer, "ATTENTION_LAUNCHES", launches)
    monkeypatch.setattr(decode_layer, "MLP_CHAIN", chain is True)
    monkeypatch.setattr(decode_layer, "LAYER_CHAIN", chain == "layer")
    monkeypatch.setattr(mlp_chain, "mlp_chain", lambda *a: calls.append("chain") or real_chain(*a))
    monkeypatch.setattr(layer_chain, "layer_chain", lambda *a: calls.append("layer") or real_layer(*a))
    monkeypatch.setattr(gemv, "gemv_op", lambda *a: calls.append(a[3] is not None) or real(*a))
    monkeypatch.setattr(gemv, "gemv_qkv", lambda *a, **k: calls.append("qkv") or real_qkv(*a, **k))
    monkeypatch.setattr(decode, "decode_attention", lambda *a: calls.append(a[9] is not None) or real_attention(*a))
    swapped = modules.swap_decode_layers(step)
    assert step.decode_layer is None and modules.find_decode_layer_steps(swapped) == []  # a new module
    # the hooks bypass every norm and MLP and set the attention: nothing left for the other swaps to try
    assert modules.find_norms(step) and modules.find_swiglu(step) and modules.find_decode_steps(step)
    assert not (modules.find_norms(swapped) or modules.find_swiglu(swapped) or modules.find_decode_steps(swapped))
    with torch.inference_mode():
        want, got = step(*args), swapped(*args)
    one = launches == 1  # per layer: q/k/v, attention (given counters in one launch), then o and down without a
    # norm, gate/up with one (or the three chained); the LM head folds the final norm
    per_layer = ["layer"] if chain == "layer" else ["qkv", one, *(["chain"] if chain else [False, True, False])]
    assert calls == per_layer * 2 + [True]
    for g, w in zip(got, want, strict=True):  # logits, then every layer's new entries: fp16 rounding apart
        assert (g.float() - w.float()).abs().max().item() <= 1e-2 * w.float().abs().max().item()
    monkeypatch.setattr(gemv, "gemv_op", real)
    monkeypatch.setattr(gemv, "gemv_qkv", real_qkv)
    monkeypatch.setattr(decode, "decode_attention", real_attention)
    monkeypatch.setattr(mlp_chain, "mlp_chain", real_chain)
    monkeypatch.setattr(layer_chain, "layer_chain", real_layer)
    assert modules.find_decode_prefetch_steps(step) == [] and modules.find_decode_prefetch_steps(swapped) == [""]
    swapped = modules.swap_decode_prefetch(swapped)  # hints only: the same results
    assert modules.find_decode_prefetch_steps(swapped) == []
    with torch.inference_mode():
        fetched = swapped(*args)
    for g, f in zip(got, fetched, strict=True):
        torch.testing.assert_close(f, g, rtol=0, atol=0)
    ep = torch.export.export(swapped, args)
    count = {op: sum(n.target == getattr(torch.ops.kpt, op).default for n in ep.graph.nodes)
             for op in ("gemv", "mlp_chain", "gemv_qkv", "layer_chain")}
    assert count == ({"gemv": 1, "mlp_chain": 0, "gemv_qkv": 0, "layer_chain": 2} if chain == "layer" else
                     {"gemv": 1 if chain else 7, "mlp_chain": 2 if chain else 0, "gemv_qkv": 2, "layer_chain": 0})
    got = ep.module()(*args)
    for g, w in zip(got, want, strict=True):
        assert (g.float() - w.float()).abs().max().item() <= 1e-2 * w.float().abs().max().item()


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
