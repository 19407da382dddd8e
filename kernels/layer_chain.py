"""A whole Llama decode layer at one row in one launch (reference: decode_layer.llama_layer's launches, which it
replaces): kernels/mlp_chain.py's scheme taken to the layer's six groups of programs,

    q/k/v (the input norm folded in, the rotary embedding applied, k and v written to the step's outputs)
    -> decode attention's chunks -> their merge per query head
    -> the output projection -> gate/up -> down (mlp_chain.py's groups),

each group waiting on the counter of the one before, its programs drawn by ticket so a program only ever waits
for tickets drawn before its own. The gemv groups load their weight tiles before they wait; the attention groups
are latency-bound and load after. The layer's counters must be zero when it starts (the layer path asks for
zeroed ones: one small fill launch a layer) and the last program leaves them zero.

Not yet run on a GPU (compiled for sm_90 offline: kernels.cubin --layer-chain); decode_layer.LAYER_CHAIN takes it,
bench/decode_mlp.py measures it as fused_layers+layer.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import decode, gemv, mlp_chain
from ._common import LOG2E, interpreting, launch, register_op
from .decode import merge_head, split_chunk
from .gemv import rope_rows, store_qkv
from .mlp_chain import _signal, _wait, down, gate_up, out_proj

COUNTERS = 7  # ticket, then rows or programs done: q/k/v, chunks, merged heads, output, activations, down


@triton.jit
def _qkv(h_ptr, w_ptr, g_ptr, pos_ptr, f_ptr, q_ptr, kn_ptr, vn_ptr, done_ptr, H, N, K_N, eps, tile,
         KH: tl.constexpr, BN: tl.constexpr, HEAD_DIM: tl.constexpr):
    """q/k/v columns [tile * BN, ...) of rmsnorm(h) [Wq; Wk; Wv]^T, q and k roped (gemv.py's form), to q_ptr and the
    new key and value."""
    kh = tl.arange(0, KH)
    kh_ok = kh < H
    offs_n = tile * BN + tl.arange(0, BN)
    q_n = N - 2 * K_N
    rn, rotating = rope_rows(offs_n, offs_n % N, tile * BN, q_n, K_N, HEAD_DIM)
    w = tl.load(w_ptr + rn[:, None] * H + kh[None, :], mask=kh_ok[None, :], other=0.0)
    x = tl.load(h_ptr + kh, mask=kh_ok, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / H + eps)
    xn = x * tl.load(g_ptr + kh, mask=kh_ok, other=0.0).to(tl.float32)
    y = tl.sum(w.to(tl.float32) * xn[None, :], 1) * rstd
    store_qkv(y, rn, offs_n, 0, rotating, pos_ptr, f_ptr, q_ptr, kn_ptr, vn_ptr, N, q_n, K_N, 0, 0, 0, HEAD_DIM, BN)
    _signal(done_ptr)


@triton.jit
def _layer_kernel(
    h_ptr, wqkv_ptr, gin_ptr, pos_ptr, f_ptr,  # layer input [H]; [q; k; v] weight [N, H]; input norm [H]; pos; inv_freq
    q_ptr, kn_ptr, vn_ptr,                     # workspace q [Hq * D]; the new key and value [Hkv * D] (outputs)
    kc_ptr, vc_ptr,                            # the layer's caches [1, Hkv, S, D]
    m_ptr, l_ptr, acc_ptr, a_ptr,              # chunk workspace (decode.py's); attention output [Hq * D]
    wo_ptr, gpost_ptr, wg_ptr, wu_ptr, wd_ptr, h1_ptr, act_ptr, out_ptr,  # mlp_chain.py's operands
    cnt_ptr, first,                            # COUNTERS int32 from cnt_ptr + first, zero
    H, N, K_N, N_I, eps_in, eps_post, Hkv, G, S, CHUNK, n_splits, qk_scale,
    stride_kh, stride_kn, stride_vh, stride_vn,
    HEAD_DIM: tl.constexpr, KH: tl.constexpr, KI: tl.constexpr, BN_H: tl.constexpr, BN_I: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, PRECISION: tl.constexpr,
    N_COUNTERS: tl.constexpr,
):
    qk_scale = tl.cast(qk_scale, tl.float32)  # Inductor passes floats as fp64 (kernels.cubin.fp64_rows)
    eps_in = tl.cast(eps_in, tl.float32)
    eps_post = tl.cast(eps_post, tl.float32)
    cnt_ptr += first
    p_qkv = tl.cdiv(N, BN_H)
    p_split = Hkv * n_splits
    p_merge = Hkv * G
    p_o = tl.cdiv(H, BN_H)
    p_gu = tl.cdiv(N_I, BN_H)
    p_d = tl.cdiv(H, BN_I)
    ticket = tl.atomic_add(cnt_ptr, 1, sem="relaxed", scope="gpu")
    t = ticket
    if t < p_qkv:
        _qkv(h_ptr, wqkv_ptr, gin_ptr, pos_ptr, f_ptr, q_ptr, kn_ptr, vn_ptr, cnt_ptr + 1, H, N, K_N, eps_in, t, KH,
             BN_H, HEAD_DIM)
    elif t < p_qkv + p_split:
        t -= p_qkv
        _wait(cnt_ptr + 1, p_qkv)  # every thread leaves the wait's loop after the look that saw it done
        split_chunk(q_ptr, kc_ptr, vc_ptr, pos_ptr, m_ptr, l_ptr, acc_ptr, (t // n_splits).to(tl.int64),
                    t % n_splits, n_splits, 0, HEAD_DIM, 0, stride_kh, stride_kn, 0, stride_vh, stride_vn, Hkv,
                    G, S, CHUNK, qk_scale, HEAD_DIM, BLOCK_G, BLOCK_N, PRECISION, "", ".cg")
        _signal(cnt_ptr + 2)
    elif t < p_qkv + p_split + p_merge:
        t -= p_qkv + p_split
        _wait(cnt_ptr + 2, p_split)
        merge_head(q_ptr, kn_ptr, vn_ptr, m_ptr, l_ptr, acc_ptr, a_ptr, t.to(tl.int64), 0, HEAD_DIM, 0,
                   HEAD_DIM, 0, HEAD_DIM, 0, HEAD_DIM, Hkv, G, n_splits, qk_scale, HEAD_DIM, BLOCK_S, ".cg")
        _signal(cnt_ptr + 3)
    elif t < p_qkv + p_split + p_merge + p_o:
        t -= p_qkv + p_split + p_merge
        out_proj(a_ptr, h_ptr, wo_ptr, h1_ptr, cnt_ptr + 3, p_merge, cnt_ptr + 4, H, t, KH, BN_H, True)
    elif t < p_qkv + p_split + p_merge + p_o + p_gu:
        t -= p_qkv + p_split + p_merge + p_o
        gate_up(gpost_ptr, wg_ptr, wu_ptr, h1_ptr, act_ptr, cnt_ptr + 4, p_o, cnt_ptr + 5, H, N_I, eps_post, t, KH,
                BN_H)
    else:
        t -= p_qkv + p_split + p_merge + p_o + p_gu
        down(wd_ptr, h1_ptr, act_ptr, out_ptr, cnt_ptr + 5, p_gu, cnt_ptr + 6, p_d, cnt_ptr, H, N_I, t, KI, BN_I,
             N_COUNTERS)


def _check(h, w_qkv, g_in, pos, inv_freq, k_cache, v_cache, k_new, v_new, wo, g_post, wg, wu, wd, counters,  # noqa: ANN001
           first) -> int:
    """The query columns, once the operands are checked: one row, a [1, Hkv, S, D] cache, heads * D == hidden."""
    q_cols = gemv._check_qkv(h, w_qkv, g_in, pos, inv_freq, k_new, v_new)
    H, D = h.shape[-1], 2 * inv_freq.numel()
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape or k_cache.shape[0] != 1 or k_cache.shape[3] != D \
            or k_cache.shape[1] * D != k_new.numel() or k_cache.dtype != h.dtype:
        raise ValueError(f"the caches must be [1, {k_new.numel() // D}, length, {D}] in {h.dtype}; got "
                         f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if D not in decode.HEAD_DIMS:
        raise ValueError(f"head dim {D} is not supported; use one of {decode.HEAD_DIMS}")
    if q_cols != H or q_cols % k_new.numel():
        raise ValueError(f"the query heads must fill the hidden width {H} and group the key/value heads evenly")
    mlp_chain._check(h, h, wo, g_post, wg, wu, wd, counters, first, COUNTERS)
    return q_cols


def _fake(h, w_qkv, g_in, eps_in, pos, inv_freq, k_cache, v_cache, k_new, v_new, wo, g_post, wg, wu, wd,  # noqa: ANN001, ANN202
          eps_post, counters, first=0):
    _check(h, w_qkv, g_in, pos, inv_freq, k_cache, v_cache, k_new, v_new, wo, g_post, wg, wu, wd, counters, first)
    return torch.empty_like(h, memory_format=torch.contiguous_format)


@register_op("kpt::layer_chain", _fake, mutates=("k_new", "v_new", "counters"))
def layer_chain(h: torch.Tensor, w_qkv: torch.Tensor, g_in: torch.Tensor, eps_in: float, pos: torch.Tensor,
                inv_freq: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_new: torch.Tensor,
                v_new: torch.Tensor, wo: torch.Tensor, g_post: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor,
                wd: torch.Tensor, eps_post: float, counters: torch.Tensor, first: int = 0) -> torch.Tensor:
    """The layer's output h [1, 1, H] for one token at pos, its new key and value written into k_new and v_new
    (gemv.gemv_qkv's operands, decode.decode_attention's cache, mlp_chain's weights); counters[first:first +
    COUNTERS] zero (left zero)."""
    q_cols = _check(h, w_qkv, g_in, pos, inv_freq, k_cache, v_cache, k_new, v_new, wo, g_post, wg, wu, wd, counters,
                    first)
    H, D, N_I = h.shape[-1], 2 * inv_freq.numel(), wg.shape[0]
    hkv, S = k_cache.shape[1], k_cache.shape[2]
    G = q_cols // D // hkv
    k_cache, v_cache = (t if t.stride(-1) == 1 else t.contiguous() for t in (k_cache, v_cache))
    block_n = 16 if interpreting() else 64
    n_splits, chunk = decode.splits(1, hkv, S, block_n) if S else (1, block_n)
    q = h.new_empty(q_cols)
    m = torch.empty(hkv * n_splits * G, dtype=torch.float32, device=h.device)
    sums, acc = torch.empty_like(m), torch.empty(hkv * n_splits * G * D, dtype=torch.float32, device=h.device)
    a, h1, act, out = h.new_empty(q_cols), h.new_empty(H), h.new_empty(N_I), h.new_empty(H)
    bn_h, bn_i, warps = mlp_chain.plan(H, N_I, min_rows=2)  # q/k/v blocks hold rotation pairs
    n_qkv = w_qkv.shape[0]
    programs = (triton.cdiv(n_qkv, bn_h) + hkv * n_splits + hkv * G + triton.cdiv(H, bn_h) + triton.cdiv(N_I, bn_h)
                + triton.cdiv(H, bn_i))
    qk_scale = LOG2E / math.sqrt(D)
    launch(_layer_kernel)[(programs,)](
        h.reshape(H).contiguous(), w_qkv, g_in, pos, inv_freq, q, k_new, v_new, k_cache, v_cache, m, sums, acc, a,
        wo, g_post, wg, wu, wd, h1, act, out, counters, first,
        H, n_qkv, k_new.numel(), N_I, eps_in, eps_post, hkv, G, S, chunk, n_splits, qk_scale,
        k_cache.stride(1), k_cache.stride(2), v_cache.stride(1), v_cache.stride(2),
        HEAD_DIM=D, KH=triton.next_power_of_2(H), KI=triton.next_power_of_2(N_I), BN_H=bn_h, BN_I=bn_i,
        BLOCK_G=max(16, triton.next_power_of_2(G)), BLOCK_N=block_n, BLOCK_S=triton.next_power_of_2(n_splits),
        PRECISION="ieee" if h.dtype == torch.float32 else "tf32", N_COUNTERS=COUNTERS,
        num_warps=warps)
    return out.reshape(h.shape)
