"""kernels/layer_chain.py against the launches it replaces (gemv.gemv_qkv, decode.decode_attention, then the
output projection, gate/up and down through gemv.py): the layer's output and its new key and value, GQA groups of
2 and 4, positions at the start and inside the cache, counters left zero, bad operands refused."""

from __future__ import annotations

import pytest
import torch

from kernels import decode, gemv, layer_chain
from tests.kernels.conftest import DEVICE, GEMM_DTYPES


def _layer(H, heads, kv, inter, S, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    D = H // heads
    w = {"qkv": torch.randn((heads + 2 * kv) * D, H, generator=g) / H ** 0.5,
         "g_in": 1 + 0.1 * torch.randn(H, generator=g), "o": torch.randn(H, H, generator=g) / H ** 0.5,
         "g_post": 1 + 0.1 * torch.randn(H, generator=g), "gate": torch.randn(inter, H, generator=g) / H ** 0.5,
         "up": torch.randn(inter, H, generator=g) / H ** 0.5, "down": torch.randn(H, inter, generator=g) / inter ** 0.5,
         "h": torch.randn(1, 1, H, generator=g), "k_cache": torch.randn(1, kv, S, D, generator=g),
         "v_cache": torch.randn(1, kv, S, D, generator=g)}
    w = {k: v.to(DEVICE, dtype) for k, v in w.items()}
    w["inv_freq"] = (10000.0 ** (-torch.arange(0, D, 2) / D)).to(DEVICE)
    return w, D


def _unchained(w, pos, heads, D, k_new, v_new):
    q = gemv.gemv_qkv(w["h"], w["qkv"], w["g_in"], 1e-5, pos, w["inv_freq"], k_new, v_new)
    att = decode.decode_attention(q.view(1, 1, heads, D).transpose(1, 2), w["k_cache"], w["v_cache"], k_new, v_new,
                                  pos)
    a = att.reshape(1, heads, 1, D).transpose(1, 2).reshape(1, 1, -1)
    h1 = gemv.gemv_op(a, w["o"], None, None, w["h"], 0.0, "none")
    act = gemv.gemv_op(h1, w["gate"], w["up"], w["g_post"], None, 1e-5, "silu")
    return gemv.gemv_op(act, w["down"], None, None, h1, 0.0, "none")


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("H, heads, kv, inter, S, pos", [(64, 4, 2, 96, 40, 17), (128, 8, 2, 80, 33, 0),
                                                         (96, 3, 1, 70, 64, 63)])
def test_one_launch_matches_the_launches_it_replaces(H, heads, kv, inter, S, pos, dtype):
    w, D = _layer(H, heads, kv, inter, S, dtype, seed=H + S + pos)
    p = torch.tensor([pos], device=DEVICE)
    k_new, v_new = (torch.full((1, kv, 1, D), float("nan"), device=DEVICE, dtype=dtype) for _ in range(2))
    counters = torch.zeros(layer_chain.COUNTERS + 1, dtype=torch.int32, device=DEVICE)
    out = layer_chain.layer_chain(w["h"], w["qkv"], w["g_in"], 1e-5, p, w["inv_freq"], w["k_cache"], w["v_cache"],
                                  k_new, v_new, w["o"], w["g_post"], w["gate"], w["up"], w["down"], 1e-5, counters, 1)
    assert int(counters.abs().sum()) == 0
    k_want, v_want = torch.empty_like(k_new), torch.empty_like(v_new)
    want = _unchained(w, p, heads, D, k_want, v_want)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for got, ref in ((k_new, k_want), (v_new, v_want), (out, want)):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol * ref.float().abs().max().item())


def test_bad_operands_are_refused():
    w, D = _layer(64, 4, 2, 96, 40, torch.float32, seed=3)
    p = torch.tensor([5], device=DEVICE)
    k_new, v_new = (torch.zeros(1, 2, 1, D, device=DEVICE) for _ in range(2))
    zero = torch.zeros(layer_chain.COUNTERS, dtype=torch.int32, device=DEVICE)
    args = [w["h"], w["qkv"], w["g_in"], 1e-5, p, w["inv_freq"], w["k_cache"], w["v_cache"], k_new, v_new, w["o"],
            w["g_post"], w["gate"], w["up"], w["down"], 1e-5, zero]
    with pytest.raises(ValueError, match="caches must be"):
        layer_chain.layer_chain(*args[:6], w["k_cache"][..., :8], *args[7:])
    with pytest.raises(ValueError, match="counters must"):
        layer_chain.layer_chain(*args[:-1], zero[:6])
