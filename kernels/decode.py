"""Decode attention (flash-decoding): the query heads of one new token against a static key/value cache plus the
token's own key and value, without writing the cache.

Semantics (the reference below is the definition):
  * q [B, Hq, 1, D]; k_cache/v_cache [B, Hkv, S, D]; k_new/v_new [B, Hkv, 1, D]; pos [1] (int): the new
    token's position. Query head h uses key/value head h // (Hq // Hkv) (HF's repeat_kv).
  * The token sees cache positions j < pos and itself: exactly `k_cache.index_copy(2, pos, k_new)` attended
    with the mask j <= pos, which is what a decode step writes out (kpt.gpu.models.LlamaDecodeStep). Cache
    entries at j >= pos are never read, so the cache need not be copied to write the new entry first.

A decode step has one query row per head, so a kernel per (batch, head) would leave most of the GPU idle and a
fused SDPA kernel pays its fixed cost 22 times a step (the 1B Llama's decode step spent 0.96 of its 2.1 ms in
cuDNN attention on the H200). Here the cache is split along S: each program takes one key/value head, all its
query heads (padded to 16 rows for tl.dot), and one chunk of keys, and writes its partial softmax (row maximum,
row sum, unnormalized output) to a workspace; a second kernel, one program per query head, merges the chunks
with the new token's own term. Given zeroed counters, one launch does both: each program counts its chunk done
(an atomic per key/value head) and the last to finish merges the head's chunks (a decode layer's q/k/v
projection zeroes the counters, kernels/decode_layer.py; the merge kernel's launch was 22 of the 1B Llama's
195 a step on the H200, 2026-12-04).
The split count depends on S only, never on pos, so the launch is the same at every step (CUDA graphs).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (
    LOG2E,
    STREAM_POLICY,
    check_counters,
    interpreting,
    launch,
    pdl_code,
    pdl_launch,
    pdl_options,
    pdl_start,
    pdl_wait,
    prefetch_args,
    prefetch_l2,
    prefetch_rows,
    register_op,
)

HEAD_DIMS = (16, 32, 64, 128)
TARGET_PROGRAMS = 256  # chunks x (batch, kv head): about two programs per SM on an H100/H200 (132 SMs)


@triton.jit
def _split_kernel(
    q_ptr, k_ptr, v_ptr, pos_ptr,  # q [B, Hq, 1, D]; k/v cache [B, Hkv, S, D]; pos [1]
    m_ptr, l_ptr, acc_ptr,         # workspace: [B*Hkv, SPLITS, G] maxima and sums, [.., G, D] unnormalized outputs
    pf_ptr,                        # pf_bytes a later launch reads, asked into L2 (_common.prefetch_l2), if PREFETCH
    kn_ptr, vn_ptr, out_ptr,       # MERGE only: the new key/value [B, Hkv, 1, D], the output [B, Hq, 1, D],
    cnt_ptr,                       # and [B*Hkv] int32 counters of finished chunks, zero at the start (and the end)
    stride_qb, stride_qh, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_knb, stride_knh, stride_vnb, stride_vnh, stride_ob, stride_oh,
    Hkv, G, S, CHUNK, qk_scale, pf_bytes,
    HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    PREFETCH: tl.constexpr, MERGE: tl.constexpr, BLOCK_GM: tl.constexpr,
    BLOCK_SC: tl.constexpr, PDL: tl.constexpr, LINE: tl.constexpr, LINES: tl.constexpr,  # PDL: _common.pdl_code; LINE:
    # a cache row's elements in a 128-byte line, LINES: its lines
):
    # Inductor passes a user kernel's float scalars as fp64: fp32 here, so the loop-carried maxima and sums keep
    # one type (kernels/attention.py does the same).
    qk_scale = tl.cast(qk_scale, tl.float32)
    bh = tl.program_id(0).to(tl.int64)  # 64-bit offsets: a cache of several GB per layer stays addressable
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    go = 0  # the zero of the asm steps below (_common: the work after them sits in `if go == 0:`)
    if PDL:  # the cache before pos was written by no launch of this step: the chunk heads for L2 meanwhile (all
        # of it: pos itself may be what the launch before writes)
        started = pdl_start()
        go = pdl_wait(
            _prefetch_chunk(k_ptr + (bh // Hkv) * stride_kb + (bh % Hkv) * stride_kh, stride_kn, split * CHUNK,
                            tl.minimum(split * CHUNK + CHUNK, S), started, HEAD_DIM, BLOCK_N, LINE, LINES)
            + _prefetch_chunk(v_ptr + (bh // Hkv) * stride_vb + (bh % Hkv) * stride_vh, stride_vn, split * CHUNK,
                              tl.minimum(split * CHUNK + CHUNK, S), started, HEAD_DIM, BLOCK_N, LINE, LINES))
    stream: tl.constexpr = STREAM_POLICY if PREFETCH else ""  # as in gemv.py: the cache streams past the prefetch
    if PREFETCH:
        go += prefetch_l2(pf_ptr, pf_bytes, tl.program_id(0) * n_splits + split, tl.num_programs(0) * n_splits)
    if go == 0:
        _split_body(q_ptr, k_ptr, v_ptr, pos_ptr, m_ptr, l_ptr, acc_ptr, kn_ptr, vn_ptr, out_ptr, cnt_ptr, bh, split,
                    n_splits, stride_qb, stride_qh, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                    stride_knb, stride_knh, stride_vnb, stride_vnh, stride_ob, stride_oh, Hkv, G, S, CHUNK, qk_scale,
                    HEAD_DIM, BLOCK_G, BLOCK_N, PRECISION, MERGE, BLOCK_GM, BLOCK_SC, stream)


@triton.jit
def _split_body(q_ptr, k_ptr, v_ptr, pos_ptr, m_ptr, l_ptr, acc_ptr, kn_ptr, vn_ptr, out_ptr, cnt_ptr, bh, split,
                n_splits, stride_qb, stride_qh, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                stride_knb, stride_knh, stride_vnb, stride_vnh, stride_ob, stride_oh, Hkv, G, S, CHUNK, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                MERGE: tl.constexpr, BLOCK_GM: tl.constexpr, BLOCK_SC: tl.constexpr,
                stream: tl.constexpr):
    split_chunk(q_ptr, k_ptr, v_ptr, pos_ptr, m_ptr, l_ptr, acc_ptr, bh, split, n_splits, stride_qb, stride_qh,
                stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn, Hkv, G, S, CHUNK, qk_scale,
                HEAD_DIM, BLOCK_G, BLOCK_N, PRECISION, stream, "")
    if MERGE:  # one launch: the key/value head's last program to finish merges its chunks (_merge_group)
        # Every thread's stores above come before thread 0's release (CUTLASS's semaphore: barrier, then the
        # atomic); the counter's acquire, then the barrier Triton puts after a scalar atomic to share its result,
        # come before any thread's loads of the other programs' chunks.
        tl.debug_barrier()
        done = tl.atomic_add(cnt_ptr + bh, 1, sem="acq_rel", scope="gpu")
        if done == n_splits - 1:
            _merge_group(q_ptr, kn_ptr, vn_ptr, m_ptr, l_ptr, acc_ptr, out_ptr, bh, Hkv, stride_qb, stride_qh,
                         stride_knb, stride_knh, stride_vnb, stride_vnh, stride_ob, stride_oh, G, n_splits, qk_scale,
                         HEAD_DIM, BLOCK_GM, BLOCK_SC)
            tl.atomic_xchg(cnt_ptr + bh, 0, sem="relaxed", scope="gpu")  # left as found: zero


@triton.jit
def _prefetch_chunk(base, stride_n, lo, hi, after, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                    LINE: tl.constexpr, LINES: tl.constexpr):
    """L2 prefetches of cache rows [lo, hi) from base (one key/value head's), BLOCK_N rows a step, after the step
    whose zero is `after` (pdl_start). Returns 0."""
    done = after
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        done += prefetch_rows(base, n, (n < hi) & (after == 0), stride_n, HEAD_DIM, LINE, LINES)
    return done


@triton.jit
def split_chunk(
    q_ptr, k_ptr, v_ptr, pos_ptr, m_ptr, l_ptr, acc_ptr, bh, split, n_splits,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    Hkv, G, S, CHUNK, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    STREAM: tl.constexpr, Q_CACHE: tl.constexpr,
):
    """One chunk of one key/value head (bh = b * Hkv + head, a 64-bit integer): the partial softmax of its G query
    heads over cache keys [split * CHUNK, ...) below pos, written to the workspace. STREAM: the cache loads' L2
    policy; Q_CACHE: q's cache modifier (".cg" where q was written by other SMs in the same launch)."""
    b = bh // Hkv
    hk = bh % Hkv
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + b * stride_qb + (hk * G + offs_g)[:, None] * stride_qh + offs_d[None, :],
                mask=offs_g[:, None] < G, other=0.0, cache_modifier=Q_CACHE)
    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh
    pos = tl.load(pos_ptr).to(tl.int32)
    lo = split * CHUNK
    hi = tl.minimum(tl.minimum(lo + CHUNK, S), pos)  # cache keys [lo, hi) are visible to this program
    m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, HEAD_DIM), tl.float32)
    for start in range(lo, hi, BLOCK_N):
        n = start + offs_n
        n_ok = n < hi
        k = tl.load(k_base + n[:, None] * stride_kn + offs_d[None, :], mask=n_ok[:, None], other=0.0,
                    eviction_policy=STREAM)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(tl.float32) * qk_scale  # log2 units
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: the block holds at least one visible key
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :], mask=n_ok[:, None], other=0.0,
                    eviction_policy=STREAM)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(tl.float32)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    row = (bh * n_splits + split) * G + offs_g  # the G real rows only (BLOCK_G pads them for tl.dot)
    g_ok = offs_g < G
    tl.store(m_ptr + row, m_i, mask=g_ok)  # -inf, 0, 0 where the chunk saw no visible key
    tl.store(l_ptr + row, l_i, mask=g_ok)
    tl.store(acc_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=g_ok[:, None])


@triton.jit
def _merge_group(
    q_ptr, kn_ptr, vn_ptr, m_ptr, l_ptr, acc_ptr, out_ptr, bh, Hkv,
    stride_qb, stride_qh, stride_knb, stride_knh, stride_vnb, stride_vnh, stride_ob, stride_oh,
    G, SPLITS, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_GM: tl.constexpr, BLOCK_SC: tl.constexpr,
):
    """_merge_kernel's result for the G query heads of one key/value head, in the program that found all their
    chunks written: BLOCK_SC chunks at a time (a [BLOCK_SC, G, D] tile held in registers), merged online. Loads
    bypass L1 (.cg): the chunks were written by other SMs."""
    b = bh // Hkv
    hk = bh % Hkv
    offs_g = tl.arange(0, BLOCK_GM)
    offs_d = tl.arange(0, HEAD_DIM)
    g_ok = offs_g < G
    q = tl.load(q_ptr + b * stride_qb + (hk * G + offs_g)[:, None] * stride_qh + offs_d[None, :],
                mask=g_ok[:, None], other=0.0).to(tl.float32)
    kn = tl.load(kn_ptr + b * stride_knb + hk * stride_knh + offs_d).to(tl.float32)
    vn = tl.load(vn_ptr + b * stride_vnb + hk * stride_vnh + offs_d).to(tl.float32)
    own = tl.sum(q * kn[None, :], 1) * qk_scale  # [GM] the new token's own scores: finite
    # Online over rounds of BLOCK_SC chunks, each round's maxima, sums and outputs loaded together (one trip to L2
    # a round: one in all where a round covers every chunk), the running maximum starting at the new token's own.
    m = own
    l_sum = tl.full((BLOCK_GM,), 1.0, tl.float32)  # exp2(own - m)
    out = tl.zeros((BLOCK_GM, HEAD_DIM), tl.float32) + vn[None, :]  # [GM, D]
    for s0 in range(0, SPLITS, BLOCK_SC):
        offs_c = s0 + tl.arange(0, BLOCK_SC)
        ok = (offs_c < SPLITS)[:, None] & g_ok[None, :]
        rows = (bh * SPLITS + offs_c)[:, None] * G + offs_g[None, :]  # [SC, GM]
        m_c = tl.load(m_ptr + rows, mask=ok, other=float("-inf"), cache_modifier=".cg")
        l_c = tl.load(l_ptr + rows, mask=ok, other=0.0, cache_modifier=".cg")
        acc = tl.load(acc_ptr + rows[:, :, None] * HEAD_DIM + offs_d[None, None, :], mask=ok[:, :, None], other=0.0,
                      cache_modifier=".cg")
        m_new = tl.maximum(m, tl.max(m_c, 0))
        alpha = tl.math.exp2(m - m_new)
        w = tl.math.exp2(m_c - m_new[None, :])
        l_sum = l_sum * alpha + tl.sum(l_c * w, 0)
        out = out * alpha[:, None] + tl.sum(acc * w[:, :, None], 0)
        m = m_new
    out = out / l_sum[:, None]
    tl.store(out_ptr + b * stride_ob + (hk * G + offs_g)[:, None] * stride_oh + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=g_ok[:, None])


@triton.jit
def _merge_kernel(
    q_ptr, kn_ptr, vn_ptr, m_ptr, l_ptr, acc_ptr, out_ptr,
    stride_qb, stride_qh, stride_knb, stride_knh, stride_vnb, stride_vnh, stride_ob, stride_oh,
    Hkv, G, SPLITS, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, PDL: tl.constexpr,
):
    go = 0
    if PDL:  # _common.pdl_code: everything it reads the split kernel wrote
        go = pdl_wait(pdl_start())
    # One program per query head, all its chunks loaded at once: a program per key/value head walking the chunks
    # one after another waited on each chunk's loads in turn (8.7 us a layer on the H200 for the 1B Llama's 4 key/
    # value heads and 32 chunks, 2026-12-04), where the split kernel before it took 2.8 us.
    qk_scale = tl.cast(qk_scale, tl.float32)  # as in _split_kernel
    if go == 0:  # after the wait (_common)
        merge_head(q_ptr, kn_ptr, vn_ptr, m_ptr, l_ptr, acc_ptr, out_ptr, tl.program_id(0).to(tl.int64),
                   stride_qb, stride_qh, stride_knb, stride_knh, stride_vnb, stride_vnh, stride_ob, stride_oh, Hkv, G,
                   SPLITS, qk_scale, HEAD_DIM, BLOCK_S, "")


@triton.jit
def merge_head(
    q_ptr, kn_ptr, vn_ptr, m_ptr, l_ptr, acc_ptr, out_ptr, head,
    stride_qb, stride_qh, stride_knb, stride_knh, stride_vnb, stride_vnh, stride_ob, stride_oh,
    Hkv, G, SPLITS, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, CACHE: tl.constexpr,
):
    """Query head `head` (b * Hq + head, a 64-bit integer): its chunks merged with the new token's own term, all
    chunks loaded at once. CACHE: the loads' cache modifier (".cg" where other SMs wrote q, the new key and value
    and the chunks in the same launch)."""
    bh = head // G  # b * Hkv + key/value head
    g = head % G
    b = bh // Hkv
    hk = bh % Hkv
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    s_ok = offs_s < SPLITS
    q = tl.load(q_ptr + b * stride_qb + (hk * G + g) * stride_qh + offs_d, cache_modifier=CACHE).to(tl.float32)
    kn = tl.load(kn_ptr + b * stride_knb + hk * stride_knh + offs_d, cache_modifier=CACHE).to(tl.float32)
    vn = tl.load(vn_ptr + b * stride_vnb + hk * stride_vnh + offs_d, cache_modifier=CACHE).to(tl.float32)
    own = tl.sum(q * kn, 0) * qk_scale  # the new token's own score: finite, so the maximum below is
    row = (bh * SPLITS + offs_s) * G + g
    m_s = tl.load(m_ptr + row, mask=s_ok, other=float("-inf"), cache_modifier=CACHE)
    m = tl.maximum(own, tl.max(m_s, 0))
    w = tl.math.exp2(m_s - m)  # 0 for a chunk that saw nothing (m_s = -inf) and for padding
    w_own = tl.math.exp2(own - m)
    l_sum = w_own + tl.sum(tl.load(l_ptr + row, mask=s_ok, other=0.0, cache_modifier=CACHE) * w, 0)
    acc = tl.load(acc_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], mask=s_ok[:, None], other=0.0,
                  cache_modifier=CACHE)
    out = (vn * w_own + tl.sum(acc * w[:, None], 0)) / l_sum
    tl.store(out_ptr + b * stride_ob + (hk * G + g) * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty))


def _check(q, k_cache, v_cache, k_new, v_new, pos, counters=None):  # noqa: ANN001
    if any(t.dim() != 4 for t in (q, k_cache, v_cache, k_new, v_new)):
        raise ValueError("q, k_cache, v_cache, k_new, v_new must be [batch, heads, tokens, head_dim]")
    B, Hq, one, D = q.shape
    if one != 1:
        raise ValueError(f"decode attention takes one query token per sequence, not {one}")
    if k_cache.shape != v_cache.shape or k_cache.shape[0] != B or k_cache.shape[3] != D:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} must be "
                         f"[{B}, kv_heads, length, {D}]")
    Hkv = k_cache.shape[1]
    for name, t in (("k_new", k_new), ("v_new", v_new)):
        if tuple(t.shape) != (B, Hkv, 1, D):
            raise ValueError(f"{name} must be [{B}, {Hkv}, 1, {D}], not {tuple(t.shape)}")
    if D not in HEAD_DIMS:
        raise ValueError(f"head dim {D} is not supported; use one of {HEAD_DIMS}")
    if Hq % Hkv:
        raise ValueError(f"query heads ({Hq}) must be a multiple of key/value heads ({Hkv})")
    if len({t.dtype for t in (q, k_cache, v_cache, k_new, v_new)}) != 1 or \
            q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError("q, the caches and the new key/value must share one of fp16/bf16/fp32")
    if pos.numel() != 1 or pos.dtype not in (torch.int32, torch.int64):
        raise ValueError("pos must hold one integer position")
    check_counters(counters, q.device, B * Hkv)  # one a (batch, key/value head)


def _fake(q, k_cache, v_cache, k_new, v_new, pos, scale, prefetch=None, prefetch_fraction=1.0, counters=None,  # noqa: ANN001, ANN202
          pdl=False):
    _check(q, k_cache, v_cache, k_new, v_new, pos, counters)
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def splits(batch: int, kv_heads: int, length: int, block_n: int) -> tuple[int, int]:
    """(chunks, keys per chunk) for a cache of `length`: about TARGET_PROGRAMS programs, chunks a multiple of
    block_n long. Depends on the cache's length only, never on the position."""
    want = max(1, min(TARGET_PROGRAMS // max(1, batch * kv_heads), triton.cdiv(length, block_n)))
    chunk = triton.cdiv(triton.cdiv(length, want), block_n) * block_n
    return triton.cdiv(length, chunk), chunk


MERGE_VALUES = 64  # fp32 values a thread holds of the merge's [chunks, G, D] tile (4 warps: 8192 a round)


def merge_chunks(block_s: int, block_gm: int, head_dim: int) -> int:
    """BLOCK_SC: chunks the one-launch merge loads a round, MERGE_VALUES a thread of 4 warps (2 under the
    interpreter, so its loop runs several rounds in tests)."""
    return 2 if interpreting() else max(1, min(block_s, MERGE_VALUES * 32 * 4 // (block_gm * head_dim)))


@register_op("kpt::decode_attention", _fake, mutates=("counters",))
def decode_attention_op(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_new: torch.Tensor,
                        v_new: torch.Tensor, pos: torch.Tensor, scale: float | None,
                        prefetch: torch.Tensor | None, prefetch_fraction: float,
                        counters: torch.Tensor | None, pdl: bool) -> torch.Tensor:
    # No defaults in an op's schema from its first mutated argument on: torch 2.11's dispatcher drops trailing
    # arguments equal to their defaults before the ADInplaceOrView kernel indexes the mutated ones (IndexError on
    # the card when counters is None); decode_attention() below gives the defaults.
    _check(q, k_cache, v_cache, k_new, v_new, pos, counters)
    B, Hq, _, D = q.shape
    Hkv, S = k_cache.shape[1], k_cache.shape[2]
    G = Hq // Hkv
    q, k_cache, v_cache, k_new, v_new = (t if t.stride(-1) == 1 else t.contiguous()
                                         for t in (q, k_cache, v_cache, k_new, v_new))
    out = torch.empty((B, Hq, 1, D), dtype=q.dtype, device=q.device)
    if B * Hq == 0:
        return out
    block_g = max(16, triton.next_power_of_2(G))
    block_n = 16 if interpreting() else 64  # the interpreter: several blocks per chunk on small test caches
    n_splits, chunk = splits(B, Hkv, S, block_n) if S else (1, block_n)
    m = torch.empty((B * Hkv, n_splits, G), dtype=torch.float32, device=q.device)
    sums = torch.empty_like(m)
    acc = torch.empty((B * Hkv, n_splits, G, D), dtype=torch.float32, device=q.device)
    qk_scale = (scale if scale is not None else 1.0 / math.sqrt(D)) * LOG2E
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    pf, pf_bytes = prefetch_args(prefetch, prefetch_fraction)
    block_s, block_gm = triton.next_power_of_2(n_splits), triton.next_power_of_2(G)
    block_sc = merge_chunks(block_s, block_gm, D)
    launch(_split_kernel)[(B * Hkv, n_splits)](
        q, k_cache, v_cache, pos, m, sums, acc, m if pf is None else pf, k_new, v_new, out,
        counters if counters is not None else m,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1), out.stride(0), out.stride(1),
        Hkv, G, S, chunk, qk_scale, pf_bytes,
        HEAD_DIM=D, BLOCK_G=block_g, BLOCK_N=block_n, PRECISION=precision, PREFETCH=pf is not None,
        MERGE=counters is not None, BLOCK_GM=block_gm, BLOCK_SC=block_sc, PDL=pdl_code(q, pdl),
        LINE=128 // k_cache.element_size(), LINES=triton.cdiv(D * k_cache.element_size(), 128), num_warps=4,
        **pdl_options(pdl_launch(q, pdl)))
    if counters is None:
        launch(_merge_kernel)[(B * Hq,)](
            q, k_new, v_new, m, sums, acc, out,
            q.stride(0), q.stride(1), k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1),
            out.stride(0), out.stride(1),
            Hkv, G, n_splits, qk_scale,
            HEAD_DIM=D, BLOCK_S=block_s, PDL=pdl_code(q, pdl), num_warps=1 if n_splits * D <= 2048 else 4,
            **pdl_options(pdl_launch(q, pdl)))
    return out


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_new: torch.Tensor,
                     v_new: torch.Tensor, pos: torch.Tensor, scale: float | None = None,
                     prefetch: torch.Tensor | None = None, prefetch_fraction: float = 1.0,
                     counters: torch.Tensor | None = None, pdl: bool = False) -> torch.Tensor:
    """The op; prefetch: a contiguous tensor a later launch reads, its first prefetch_fraction asked into L2 while
    the cache is read (a hint: no result depends on it). counters: int32 [>= batch * kv heads], zero, for one
    launch instead of two (each key/value head's last chunk to finish merges; the op leaves them zero): a decode
    layer's q/k/v projection zeroes them (gemv.gemv_qkv), so no launch of its own does. pdl: programmatic
    dependent launches (kernels/_common.py), on sm_90+."""
    return decode_attention_op(q, k_cache, v_cache, k_new, v_new, pos, scale, prefetch, prefetch_fraction, counters,
                               pdl)


def reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_new: torch.Tensor,
              v_new: torch.Tensor, pos: torch.Tensor, scale: float | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """What a decode step writes out: the new entry written into a copy of the cache at pos, then attention over
    positions <= pos, in `dtype` (fp32: the accuracy reference; q's dtype: PyTorch's own low-precision run)."""
    keys = k_cache.index_copy(2, pos.long().view(1), k_new)
    values = v_cache.index_copy(2, pos.long().view(1), v_new)
    group = q.shape[1] // k_cache.shape[1]
    qf, kf, vf = (t.to(dtype) for t in (q, keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)))
    s = (qf @ kf.transpose(-1, -2)) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    s = s.masked_fill(torch.arange(k_cache.shape[2], device=q.device) > pos.view(()), float("-inf"))
    p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), dim=-1).to(dtype)
    return (p @ vf).to(q.dtype)
