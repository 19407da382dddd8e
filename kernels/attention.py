"""Attention forward (FlashAttention-2 style, one program per query block and head): causal or not, GQA/MQA,
head dim 16..128, sliding window, ALiBi, soft-capping, document masking by a per-token document id.

Semantics (the reference below is the definition):
  * q [B, Hq, Nq, D], k/v [B, Hkv, Nk, D] (SDPA's layout), Hq a multiple of Hkv; output like q.
  * Query i sits at key position i + (Nk - Nq) (bottom-right alignment, as flash-attn; for Nq == Nk it is
    SDPA's is_causal). Key j is visible to query i when, with d = j - (i + Nk - Nq):
      causal: d <= 0;  window (left, right): -left <= d <= right (-1: unbounded on that side);
      document_id [B, Nk]: doc[j] == doc[i + Nk - Nq].
  * score = q.k * scale; soft-cap: cap * tanh(score / cap); ALiBi: - slope[h] * |d|; then softmax over the
    visible keys. A query that sees no key gets 0 (flash-attn's convention; SDPA would give NaN).

Per query block the key range splits into masked edges and an unmasked middle (three calls of _attn_inner
with MASKED constexpr), so the bulk of the blocks runs without mask arithmetic; blocks that no query of
the block can see (beyond the causal diagonal or outside the window) are never loaded.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import attention_split, attention_ws
from ._common import LOAD_MODES, LOG2E, configs, descriptor_loads, eager_call, launch, register_op, tanh

HEAD_DIMS = (16, 32, 64, 128)


def _cfg(bm: int, bn: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# Per head dim, the H100 candidates (bf16, 16k tokens): the FlashAttention-2 / Triton fused-attention
# tutorial choices (128x128 tiles, 8 warps for D=128; 4-stage pipelines for D=64 where K/V tiles are small),
# plus narrower BLOCK_N variants that relieve register pressure with soft-cap/ALiBi epilogues. The autotuner
# picks per (head dim, features, length bucket) once per process; TRITON_CACHE_DIR keeps the binaries.
_GPU = {
    128: [_cfg(128, 128, 8, 3), _cfg(128, 64, 8, 3), _cfg(128, 64, 4, 3), _cfg(128, 128, 8, 2), _cfg(64, 64, 4, 3)],
    64: [_cfg(128, 128, 8, 3), _cfg(128, 64, 4, 4), _cfg(128, 128, 4, 3), _cfg(128, 64, 8, 4), _cfg(64, 64, 4, 4)],
    32: [_cfg(128, 64, 4, 4), _cfg(64, 64, 4, 4)],
    16: [_cfg(128, 64, 4, 4), _cfg(64, 64, 4, 4)],
}
# Under the interpreter: BLOCK_M != BLOCK_N so the causal diagonal crosses block edges in tests.
_INTERP = [_cfg(32, 16, 4, 1)]


@triton.jit
def _attn_inner(
    acc, l_i, m_i,              # running output [BM, D] (fp32), row sums [BM], row maxima [BM] (log2 units)
    q,                          # [BM, D] query block
    k_base, v_base,             # K and V of this (batch, kv head): key j's row at base + j * stride
    stride_kn, stride_vn,
    doc_base,                   # this batch's document ids [Nk]; unused unless HAS_DOC
    q_pos, q_doc,               # [BM] key-space position and document id of each query row
    slope,                      # ALiBi slope of this head times log2(e); unused unless HAS_ALIBI
    lo, hi, Nk, wl, wr,         # key range [lo, hi), key count, window (left, right) in positions
    qk_scale, cap_scale, cap_inv,
    offs_d, offs_n,
    k_desc, v_desc,             # TMA: tensor descriptors of this head's K and V ([Nk, D], rows past Nk read 0)
    MASKED: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DOC: tl.constexpr, SOFTCAP: tl.constexpr,
    RAW: tl.constexpr,          # scores kept unscaled until exp2 (scale > 0, no soft-cap/ALiBi): one FMA per score
    TMA: tl.constexpr, WS: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):
    for n0 in tl.range(lo, hi, BLOCK_N, warp_specialize=WS):
        cols = n0 + offs_n
        if TMA:
            k = k_desc.load([n0, 0]).T
        else:
            k_ptrs = k_base + cols[None, :] * stride_kn + offs_d[:, None]
            if MASKED:
                k = tl.load(k_ptrs, mask=(cols < Nk)[None, :], other=0.0)
            else:
                k = tl.load(k_ptrs)
        s = tl.dot(q, k, input_precision=PRECISION)
        # .to(fp32): the running max, sums and accumulator must stay fp32 whatever type the scalars came in as.
        if SOFTCAP:
            s = (cap_scale * tanh(s * cap_inv)).to(tl.float32)  # cap * log2(e) * tanh(score * scale / cap)
        elif not RAW:
            s = (s * qk_scale).to(tl.float32)                  # score * scale * log2(e)
        d = cols[None, :] - q_pos[:, None]
        if HAS_ALIBI:
            s = s - slope * tl.abs(d).to(tl.float32)
        if MASKED:
            keep = (cols[None, :] < Nk) & (d <= wr) & (d >= -wl)
            if HAS_DOC:
                kd = tl.load(doc_base + cols, mask=cols < Nk, other=-1)
                keep = keep & (q_doc[:, None] == kd[None, :])
            s = tl.where(keep, s, float("-inf"))
        elif HAS_DOC:
            kd = tl.load(doc_base + cols)
            s = tl.where(q_doc[:, None] == kd[None, :], s, float("-inf"))
        if RAW:  # m in log2 units as always; the scale reaches the scores inside exp2's argument
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASKED or HAS_DOC:
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet: no NaN
        else:
            m_ref = m_new
        if RAW:
            p = tl.math.exp2(s * qk_scale - m_ref[:, None])
        else:
            p = tl.math.exp2(s - m_ref[:, None])
        alpha = tl.math.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        if TMA:
            v = v_desc.load([n0, 0])
        else:
            v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :]
            if MASKED:
                v = tl.load(v_ptrs, mask=(cols < Nk)[:, None], other=0.0)
            else:
                v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(
    q_ptr,      # [B, Hq, Nq, D] queries (unit stride along D)
    k_ptr,      # [B, Hkv, Nk, D] keys
    v_ptr,      # [B, Hkv, Nk, D] values
    o_ptr,      # [B, Hq, Nq, D] output
    slope_ptr,  # [Hq] fp32 ALiBi slopes; unused unless HAS_ALIBI
    doc_ptr,    # [B, Nk] int32 document id per key position; unused unless HAS_DOC
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, sdb,
    H, GROUP, Nq, Nk, off, wl, wr,  # heads, Hq // Hkv, lengths, Nk - Nq, window (huge where unbounded)
    qk_scale, cap_scale, cap_inv, BUCKET,  # BUCKET: length class, only an autotune key
    HEAD_DIM: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DOC: tl.constexpr, SOFTCAP: tl.constexpr,
    REVERSE: tl.constexpr,  # causal: the longest query blocks start first (they finish last otherwise)
    RAW: tl.constexpr, TMA: tl.constexpr, WS: tl.constexpr,  # see _attn_inner; WS: Triton's warp specialization
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # Inductor may type the float scalars fp64 when it compiles this kernel (torch.compile, AOTInductor): scale in
    # fp32 so the [BLOCK_M, BLOCK_N] score tiles stay fp32 (the cast below keeps them so whatever arrives).
    qk_scale = tl.cast(qk_scale, tl.float32)
    cap_scale = tl.cast(cap_scale, tl.float32)
    cap_inv = tl.cast(cap_inv, tl.float32)
    pid_m = tl.program_id(0)
    if REVERSE:
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    b64 = b.to(tl.int64)
    q_base = q_ptr + b64 * sqb + h.to(tl.int64) * sqh
    k_base = k_ptr + b64 * skb + hk.to(tl.int64) * skh
    v_base = v_ptr + b64 * svb + hk.to(tl.int64) * svh
    o_base = o_ptr + b64 * sob + h.to(tl.int64) * soh
    doc_base = doc_ptr + b64 * sdb
    row_ok = offs_m < Nq
    q = tl.load(q_base + offs_m[:, None] * sqm + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    q_pos = offs_m + off
    if HAS_DOC:
        q_doc = tl.load(doc_base + q_pos, mask=row_ok, other=-2)
    else:
        q_doc = q_pos
    if HAS_ALIBI:
        slope = tl.load(slope_ptr + h).to(tl.float32) * 1.4426950408889634
    else:
        slope = 0.0

    # Key blocks any query of this block can see: [lo, hi). Of those, [lo_full, hi_full) are visible to every
    # query of the block (no causal/window/edge mask needed).
    first = pid_m * BLOCK_M + off        # key position of the block's first query
    last = first + BLOCK_M - 1
    hi = tl.maximum(tl.minimum(Nk, last + wr + 1), 0)
    lo = tl.maximum(first - wl, 0) // BLOCK_N * BLOCK_N
    hi_full = tl.maximum(tl.minimum(first + wr + 1, Nk), 0) // BLOCK_N * BLOCK_N
    lo_full = (tl.maximum(last - wl, 0) + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    lo_full = tl.minimum(tl.maximum(lo_full, lo), hi)
    hi_full = tl.maximum(tl.minimum(hi_full, hi), lo_full)

    if TMA:  # device-side descriptors (the launcher checked 16-byte alignment of base and row stride)
        k_desc = tl.make_tensor_descriptor(k_base, [Nk, HEAD_DIM], [skn, 1], [BLOCK_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(v_base, [Nk, HEAD_DIM], [svn, 1], [BLOCK_N, HEAD_DIM])
    else:
        k_desc = k_base
        v_desc = v_base
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, svn, doc_base, q_pos, q_doc, slope,
                                lo, lo_full, Nk, wl, wr, qk_scale, cap_scale, cap_inv, offs_d, offs_n, k_desc, v_desc,
                                True, HAS_ALIBI, HAS_DOC, SOFTCAP, RAW, TMA, WS, PRECISION, BLOCK_N)
    acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, svn, doc_base, q_pos, q_doc, slope,
                                lo_full, hi_full, Nk, wl, wr, qk_scale, cap_scale, cap_inv, offs_d, offs_n, k_desc, v_desc,
                                False, HAS_ALIBI, HAS_DOC, SOFTCAP, RAW, TMA, WS, PRECISION, BLOCK_N)
    acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, svn, doc_base, q_pos, q_doc, slope,
                                hi_full, hi, Nk, wl, wr, qk_scale, cap_scale, cap_inv, offs_d, offs_n, k_desc, v_desc,
                                True, HAS_ALIBI, HAS_DOC, SOFTCAP, RAW, TMA, WS, PRECISION, BLOCK_N)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # rows that saw no key: acc is 0, the output is 0
    out = acc / l_safe[:, None]
    tl.store(o_base + offs_m[:, None] * som + offs_d[None, :], out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


_KEY = ["HEAD_DIM", "HAS_ALIBI", "HAS_DOC", "SOFTCAP", "REVERSE", "RAW", "TMA", "WS", "BUCKET"]


def _specializable(cfgs: list, named_args: dict, **kwargs) -> list:  # noqa: ANN003 - the autotuner's prune hook
    """With WS, the 8-warp configs: Triton 3.6 and 3.7 fail to compile the warp-specialized loop for sm_90 at 4
    warps ("PassManager::run failed", which stopped the whole autotuned launch on the H200), and at 8 warps leave
    it as plain TMA code (no warp_specialize op in the IR: `python -m kernels.cubin --attention`)."""
    if not kwargs.get("WS"):
        return cfgs
    return [c for c in cfgs if c.num_warps >= 8] or cfgs


_TUNED = {d: triton.autotune(configs(_GPU[d], _INTERP), key=_KEY, prune_configs_by={"early_config_prune": _specializable})(_attn_fwd)
          for d in HEAD_DIMS}


def _check(q, k, v, window_left, window_right, alibi_slopes, softcap, document_id):  # noqa: ANN001
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be [batch, heads, tokens, head_dim]")
    B, Hq, Nq, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must be [{B}, kv_heads, tokens, {D}]")
    if D not in HEAD_DIMS:
        raise ValueError(f"head dim {D} is not supported; use one of {HEAD_DIMS}")
    if Hq % k.shape[1]:
        raise ValueError(f"query heads ({Hq}) must be a multiple of key/value heads ({k.shape[1]})")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one of fp16/bf16/fp32, not {q.dtype}/{k.dtype}/{v.dtype}")
    if window_left < -1 or window_right < -1:
        raise ValueError("window sides are >= 0, or -1 for unbounded")
    if softcap < 0:
        raise ValueError(f"softcap must be >= 0 (0: off), not {softcap}")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) != (Hq,):
        raise ValueError(f"alibi_slopes must be [{Hq}], not {tuple(alibi_slopes.shape)}")
    if document_id is not None:
        if tuple(document_id.shape) != (B, k.shape[2]):
            raise ValueError(f"document_id must be [{B}, {k.shape[2]}] (one id per key position)")
        if Nq > k.shape[2]:
            raise ValueError("document masking needs Nq <= Nk (queries are the last Nq key positions)")


def _fake(q, k, v, causal, scale, window_left, window_right, alibi_slopes, softcap, document_id):  # noqa: ANN001, ANN202
    _check(q, k, v, window_left, window_right, alibi_slopes, softcap, document_id)
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@register_op("kpt::attention", _fake)
def attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None,
                 window_left: int, window_right: int, alibi_slopes: torch.Tensor | None, softcap: float,
                 document_id: torch.Tensor | None) -> torch.Tensor:
    return _run(q, k, v, causal, scale, window_left, window_right, alibi_slopes, softcap, document_id, MODE)


# How K and V reach the kernel (one of MODES, _common.LOAD_MODES); the op uses MODE where TMA applies. "gluon": the
# calls attention_ws.py covers go to that kernel (the non-causal ones to attention_split.py where its USE is on;
# eager calls only: Inductor and AOTInductor embed triton.jit kernels, not Gluon ones), the others take pointer loads.
# Traced calls run COMPILED_MODE whatever MODE says, and the registry times that (registry.attention_providers): its
# choices are for compiled models.
# "gluon" since the H200 measured it (2026-12-05, kernels-quick-attention-ws): 595/574 TFLOP/s non-causal/causal at
# b1 h16 n16384 d128 against cuDNN's 605/552 and the pointer kernel's 479/472 (fourteenth try), max error 1e-3.
MODES = LOAD_MODES + ("gluon",)
MODE = "gluon"
COMPILED_MODE = "ptr"


def _run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None, window_left: int,
         window_right: int, alibi_slopes: torch.Tensor | None, softcap: float, document_id: torch.Tensor | None,
         mode: str) -> torch.Tensor:
    _check(q, k, v, window_left, window_right, alibi_slopes, softcap, document_id)
    if mode == "gluon":
        plain = window_left < 0 and window_right < 0 and alibi_slopes is None and softcap == 0 and document_id is None
        if plain and eager_call(q, k, v) and attention_ws.supports(q, k, v, causal):
            if attention_split.USE and not causal:  # attention_split.supports(): attention_ws's calls, non-causal
                return attention_split.attention(q, k, v, scale)
            return attention_ws.attention(q, k, v, causal, scale)
        mode = COMPILED_MODE
    B, Hq, Nq, D = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty((B, Hq, Nq, D), dtype=q.dtype, device=q.device)
    sm_scale = scale if scale is not None else 1.0 / math.sqrt(D)
    unbounded = Nq + Nk + 1  # a window side no distance reaches
    wl = window_left if window_left >= 0 else unbounded
    wr = 0 if causal else (window_right if window_right >= 0 else unbounded)
    if causal and window_right >= 0:
        wr = min(wr, window_right)
    slopes = alibi_slopes.float().contiguous() if alibi_slopes is not None else out
    doc = document_id.to(torch.int32).contiguous() if document_id is not None else out
    tma = descriptor_loads(mode, q, k, v)
    if B * Hq * Nq == 0:
        return out
    kernel = _TUNED[D]
    launch(kernel, q, k, v)[lambda meta: (triton.cdiv(Nq, meta["BLOCK_M"]), B * Hq)](
        q, k, v, out, slopes, doc,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        doc.stride(0) if document_id is not None else 0,
        Hq, Hq // Hkv, Nq, Nk, Nk - Nq, wl, wr,
        sm_scale * LOG2E, softcap * LOG2E, (sm_scale / softcap) if softcap > 0 else 0.0,
        triton.next_power_of_2(max(Nq, Nk)),
        HEAD_DIM=D, HAS_ALIBI=alibi_slopes is not None, HAS_DOC=document_id is not None, SOFTCAP=softcap > 0,
        REVERSE=causal, RAW=softcap == 0 and alibi_slopes is None and sm_scale > 0, TMA=tma,
        WS=tma and mode == "tma_ws", PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, scale: float | None = None,
              window: tuple[int, int] = (-1, -1), alibi_slopes: torch.Tensor | None = None, softcap: float = 0.0,
              document_id: torch.Tensor | None = None) -> torch.Tensor:
    return attention_op(q, k, v, causal, scale, window[0], window[1], alibi_slopes, softcap, document_id)


def visible(Nq: int, Nk: int, causal: bool, window: tuple[int, int], document_id: torch.Tensor | None,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """[B or 1, 1, Nq, Nk] bool: which keys each query sees (the definition in the module docstring)."""
    qpos = torch.arange(Nq, device=device)[:, None] + (Nk - Nq)
    d = torch.arange(Nk, device=device)[None, :] - qpos
    ok = torch.ones(Nq, Nk, dtype=torch.bool, device=device)
    if causal:
        ok &= d <= 0
    if window[0] >= 0:
        ok &= d >= -window[0]
    if window[1] >= 0:
        ok &= d <= window[1]
    ok = ok[None, None]
    if document_id is not None:
        qdoc = document_id[:, Nk - Nq:]
        ok = ok & (qdoc[:, :, None] == document_id[:, None, :])[:, None]
    return ok


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, scale: float | None = None,
              window: tuple[int, int] = (-1, -1), alibi_slopes: torch.Tensor | None = None, softcap: float = 0.0,
              document_id: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Plain PyTorch in `dtype` (fp32: the accuracy reference; q's dtype: PyTorch's own low-precision run;
    fp64 on fp64 inputs: the reference of fp32 runs)."""
    B, Hq, Nq, D = q.shape
    Nk = k.shape[2]
    group = Hq // k.shape[1]
    qf, kf, vf = (t.to(dtype) for t in (q, k, v))
    kf, vf = kf.repeat_interleave(group, 1), vf.repeat_interleave(group, 1)
    s = (qf @ kf.transpose(-1, -2)) * (scale if scale is not None else 1.0 / math.sqrt(D))
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        d = torch.arange(Nk, device=q.device)[None, :] - (torch.arange(Nq, device=q.device)[:, None] + Nk - Nq)
        s = s - alibi_slopes.to(dtype)[None, :, None, None] * d.abs().to(dtype)
    ok = visible(Nq, Nk, causal, window, document_id, q.device)
    s = s.masked_fill(~ok, float("-inf"))
    # softmax in fp32 at least (fp64 stays fp64); a query that sees nothing gets 0
    p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), dim=-1).nan_to_num(0.0).to(dtype)
    return (p @ vf).to(q.dtype)


def alibi_slopes(heads: int) -> torch.Tensor:
    """The ALiBi paper's geometric slopes (2^(-8/n), 2^(-16/n), ...) for n heads, power of two or not."""
    n = 2 ** math.floor(math.log2(heads))
    base = [2 ** (-8 * (i + 1) / n) for i in range(n)]
    extra = [2 ** (-4 * (2 * i + 1) / n) for i in range(heads - n)]
    return torch.tensor(base + extra, dtype=torch.float32)
