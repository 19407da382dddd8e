"""Kernel benchmarks on a CUDA device: every op against its vendor providers (registry.py's provider axis).

    python -m kernels.bench [--quick] [--out docs/benchmarks]   -> kernels-<gpu>.json and kernels-<gpu>.md
    python -m kernels.bench --render docs/benchmarks/kernels-h100.json   (markdown again, from the JSON)
    python -m kernels.bench --ops norm-warps --name norm-warps-h200     (each fixed warp count of the norms)
    python -m kernels.bench --ops norm-persistent                       (the persistent pipelined norm kernel)
    python -m kernels.bench --ops norm-cache            (the norm op with x past L1, against x through L1 as before)
    python -m kernels.bench --ops attention-modes                      (attention's K/V load modes side by side)
    python -m kernels.bench --ops attention-ws                         (the Gluon warp-specialized attention)
    python -m kernels.bench --ops linear-ws      (the Gluon persistent warp-specialized linear + activation)
    python -m kernels.bench --ops gemv        (decode-shaped linear_act: ours, cuBLAS, Inductor's reduction)

Rows: {op, shape, dtype, provider, causal, tflops, gbps, ms} (provider "kpt" is ours). Times are the
median of _common.gpu_ms: CUDA-graph replays (triton.testing.do_bench_cudagraph), the kernels' time without
the host's dispatch, as a compiled model runs them; tables before 2026-12-03's second session were host-timed
(triton.testing.do_bench). FLOPs count multiply-adds as 2 and, for causal attention, only the
visible half of the score matrix (flash-attention's convention). GB/s counts each tensor read or written
once. Needs only torch and triton (not kpt). Benchmarks are never tests: a provider that fails is recorded
with its reason, not raised.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import operator
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make `kernels` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "kernels"

from . import attention, decode, linear_act, norms, registry  # noqa: E402
from ._common import gpu_ms, reason  # noqa: E402


def _time(fn) -> float | str:  # noqa: ANN001
    from triton.errors import TritonError  # compile failures, out of shared memory/registers

    try:
        fn()
        torch.cuda.synchronize()
        return gpu_ms(fn, rep_ms=200)
    except (RuntimeError, ValueError, NotImplementedError, TritonError) as e:  # out of memory included
        # The timing can fail where the first call did not (a graph capture's fallback to host launches ran
        # FlexAttention's dense path out of memory on the H100, 2026-12-05, and took the whole table down): the
        # provider's row says so and the next provider starts with the memory freed.
        if torch.cuda.is_available():
            with contextlib.suppress(RuntimeError):  # a fault is sticky: the next rows report it themselves
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
        return f"failed: {reason(e)}"


SKIP: set[str] = set()  # providers not timed (--skip: e.g. one whose GPU test failed, which might hang)


def _rows(op: str, shape: str, dtype: torch.dtype, causal: bool | None, providers: dict, flops: float,
          nbytes: float) -> list[dict]:
    rows = []
    for name, fn in providers.items():
        if name in SKIP:
            continue
        ms = _time(fn)
        row = {"op": op, "shape": shape, "dtype": str(dtype).removeprefix("torch."), "provider": name,
               "causal": causal}
        if isinstance(ms, float):
            row.update(ms=round(ms, 4), tflops=round(flops / ms / 1e9, 1), gbps=round(nbytes / ms / 1e6, 1))
        else:
            row.update(ms=None, tflops=None, gbps=None, error=ms)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def bench_attention(quick: bool) -> list[dict]:
    rows = []
    cases = [(1, 16, 16384, 128), (1, 32, 16384, 64), (4, 16, 4096, 128)] if not quick else [(1, 16, 4096, 128)]
    for dtype in (torch.bfloat16, torch.float16):
        for B, H, N, D in cases:
            for causal in (False, True):
                q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=dtype) for _ in range(3))
                flops = 4 * B * H * N * N * D * (0.5 if causal else 1.0)
                nbytes = 4 * B * H * N * D * q.element_size()
                rows += _rows("attention", f"b{B} h{H} n{N} d{D}", dtype, causal,
                              registry.attention_providers(q, k, v, causal, eager=True), flops, nbytes)
        if not quick:  # the features beyond SDPA's (SDPA gets an explicit mask where it fits)
            B, H, Hkv, N, D = 1, 32, 8, 8192, 128
            q = torch.randn(B, H, N, D, device="cuda", dtype=dtype)
            k, v = (torch.randn(B, Hkv, N, D, device="cuda", dtype=dtype) for _ in range(2))
            docs = torch.arange(N, device="cuda").div(N // 8, rounding_mode="floor")[None].int()
            for name, kw in (("gqa4", {}), ("window4096", {"window": (4096, -1)}),
                             ("alibi", {"alibi": attention.alibi_slopes(H).cuda()}), ("softcap50", {"softcap": 50.0}),
                             ("docs8", {"document_id": docs})):
                rows += _rows(f"attention.{name}", f"b{B} h{H}/{Hkv} n{N} d{D}", dtype, True,
                              registry.attention_providers(q, k, v, True, eager=True, **kw),
                              2 * B * H * N * N * D, 4 * B * H * N * D * q.element_size())
    return rows


def bench_attention_modes(quick: bool) -> list[dict]:
    """The goal shapes (bf16) with K/V loaded each way (attention.MODES: kpt_ptr, kpt_tma, kpt_tma_ws) beside the
    op as shipped (kpt) and cuDNN, all in one run: decides attention.MODE."""
    rows = []
    cases = [(1, 16, 16384, 128), (4, 16, 4096, 128)] if not quick else [(1, 16, 4096, 128)]
    for B, H, N, D in cases:
        for causal in (False, True):
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            vendor = registry.attention_providers(q, k, v, causal, flex=False, eager=True)
            providers = {"kpt": vendor["kpt"]}
            for mode in attention.MODES:
                providers[f"kpt_{mode}"] = functools.partial(attention._run, q, k, v, causal, None, -1, -1, None, 0.0,
                                                             None, mode)
            providers["sdpa_cudnn"] = vendor["sdpa_cudnn"]
            rows += _rows("attention", f"b{B} h{H} n{N} d{D}", torch.bfloat16, causal, providers,
                          4 * B * H * N * N * D * (0.5 if causal else 1.0), 4 * B * H * N * D * 2)
    return rows


def _max_diffs(rows: list[dict], providers: dict, vendor: str) -> list[dict]:
    """Each Gluon row that ran (kpt_ws*) with its largest difference from the vendor's output (max_diff), so a fast
    wrong kernel shows as one."""
    want = None
    for row in rows:
        if row["provider"].startswith("kpt_ws") and row.get("ms"):
            want = providers[vendor]().float() if want is None else want
            row["max_diff"] = round((providers[row["provider"]]().float() - want).abs().max().item(), 5)
    return rows


def bench_attention_ws(quick: bool) -> list[dict]:
    """kernels/attention_ws.py (Gluon, warp-specialized like FlashAttention-3) beside the op as shipped (kpt) and
    cuDNN at the goal shapes (bf16, hd128 16k tokens; hd64 and batch 4 too), all in one run, its consumers in
    ping-pong (kpt_ws) and in step (kpt_ws_step), and in ping-pong with the deepest key/value ring that fits
    (kpt_ws_deep: attention_ws.DEEP_STAGES), and non-causal with the last wave's tiles split over every SM
    (kpt_ws_split, kpt_ws_split_deep, kpt_ws_split_persist: kernels/attention_split.py); each of their rows also
    carries its largest difference from cuDNN's output (max_diff), so a fast wrong kernel shows as one."""
    from . import attention_split, attention_ws

    rows = []
    cases = [(1, 16, 16384, 128), (4, 16, 4096, 128), (1, 32, 16384, 64)] if not quick else [(1, 16, 4096, 128)]
    for B, H, N, D in cases:
        for causal in (False, True):
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            vendor = registry.attention_providers(q, k, v, causal, flex=False, eager=True)
            providers = {"kpt": vendor["kpt"], "sdpa_cudnn": vendor["sdpa_cudnn"]}
            if attention_ws.supports(q, k, v, causal):  # its consumers in ping-pong (kpt_ws) and in step
                providers["kpt_ws"] = functools.partial(attention_ws.attention, q, k, v, causal, pingpong=True)
                providers["kpt_ws_step"] = functools.partial(attention_ws.attention, q, k, v, causal, pingpong=False)
                providers["kpt_ws_deep"] = functools.partial(attention_ws.attention, q, k, v, causal, pingpong=True,
                                                             stages=attention_ws.DEEP_STAGES[D])
            if attention_split.supports(q, k, v, causal):  # the last wave split over every SM
                providers["kpt_ws_split"] = functools.partial(attention_split.attention, q, k, v)
                providers["kpt_ws_split_deep"] = functools.partial(attention_split.attention, q, k, v,
                                                                   stages=attention_ws.DEEP_STAGES[D])
                providers["kpt_ws_split_persist"] = functools.partial(attention_split.attention, q, k, v,
                                                                      persistent=True)
            rows += _max_diffs(_rows("attention", f"b{B} h{H} n{N} d{D}", torch.bfloat16, causal, providers,
                                     attention_ws.flops(q, k, causal), 4 * B * H * N * D * 2), providers, "sdpa_cudnn")
    return rows


def bench_decode(quick: bool) -> list[dict]:
    """One decode step's attention against a 2048-entry cache (the 1B Llama's heads) and a longer one: ours (reads
    the cache once; kpt in two launches, as the layer path runs it, kpt_c<n> the same with the cache in n chunks a
    key/value head, kpt_1_c<n> in one launch: on the H100 the 1B Llama's step spent 9.2 us a layer in that at 32
    chunks, 2026-12-05) against what a decode step writes out without it (the cache copied with the new entry,
    then masked SDPA, under each backend that runs it). GB/s counts the cache read once."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows = []
    cases = [(1, 32, 4, 2048, 64), (8, 32, 8, 8192, 128)] if not quick else [(1, 32, 4, 2048, 64)]
    for dtype in (torch.bfloat16, torch.float16):
        for B, Hq, Hkv, S, D in cases:
            q = torch.randn(B, Hq, 1, D, device="cuda", dtype=dtype)
            kc, vc = (torch.randn(B, Hkv, S, D, device="cuda", dtype=dtype) for _ in range(2))
            kn, vn = (torch.randn(B, Hkv, 1, D, device="cuda", dtype=dtype) for _ in range(2))
            pos = torch.tensor([S - 1], device="cuda")
            mask = (torch.arange(S, device="cuda") <= pos)[None, None, None, :]

            def written(backend, q=q, kc=kc, vc=vc, kn=kn, vn=vn, pos=pos, mask=mask, Hkv=Hkv, D=D):
                with sdpa_kernel([backend]):
                    keys, values = kc.index_copy(2, pos, kn), vc.index_copy(2, pos, vn)
                    rows_q = q.reshape(q.shape[0], Hkv, -1, D)
                    return torch.nn.functional.scaled_dot_product_attention(rows_q, keys, values, attn_mask=mask)

            providers = {"kpt": functools.partial(decode.decode_attention, q, kc, vc, kn, vn, pos)}
            counters = torch.zeros(B * Hkv, dtype=torch.int32, device="cuda")  # the one launch leaves them zero
            for chunks in (8, 16, 32):  # the cache in this many chunks a head: two launches, and one
                providers[f"kpt_c{chunks}"] = functools.partial(_decode_chunked, chunks * B * Hkv, q, kc, vc, kn, vn,
                                                                pos, None)
                providers[f"kpt_1_c{chunks}"] = functools.partial(_decode_chunked, chunks * B * Hkv, q, kc, vc, kn, vn,
                                                                  pos, counters)
            for name, backend in (("copy+sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
                                  ("copy+sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION),
                                  ("copy+sdpa_math", SDPBackend.MATH)):
                providers[name] = functools.partial(written, backend)
            rows += _rows("decode_attention", f"b{B} h{Hq}/{Hkv} s{S} d{D}", dtype, True, providers,
                          4 * B * Hq * S * D, 2 * B * Hkv * S * D * q.element_size())
    return rows


def _decode_chunked(programs: int, *args: torch.Tensor | None) -> torch.Tensor:
    """decode.decode_attention with decode.TARGET_PROGRAMS set to programs for the call (the cache's chunks a
    key/value head): in one launch where counters are given (each head's last chunk merges), else in two."""
    saved, decode.TARGET_PROGRAMS = decode.TARGET_PROGRAMS, programs
    try:
        q, kc, vc, kn, vn, pos, counters = args
        return decode.decode_attention(q, kc, vc, kn, vn, pos, None, None, 1.0, counters)
    finally:
        decode.TARGET_PROGRAMS = saved


def bench_linear(quick: bool) -> list[dict]:
    rows = []
    M, K, N = (4096, 4096, 11008) if not quick else (2048, 2048, 5504)
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.randn(M, K, device="cuda", dtype=dtype)
        w, w2 = (torch.randn(N, K, device="cuda", dtype=dtype) / K ** 0.5 for _ in range(2))
        b = torch.randn(N, device="cuda", dtype=dtype)
        for act in ("gelu", "silu"):
            rows += _rows(f"linear_{act}", f"{M}x{K}->{N}", dtype, None, registry.linear_providers(x, w, b, act, eager=True),
                          2 * M * N * K, (M * K + N * K + M * N) * x.element_size())
        rows += _rows("swiglu", f"{M}x{K}->{N}", dtype, None, registry.linear_providers(x, w, None, "silu", w2, eager=True),
                      4 * M * N * K, (M * K + 2 * N * K + M * N) * x.element_size())
    return rows


def _rotating(calls: list) -> Callable[[], object]:
    """One call per copy of the operands, taken in turn (a graph capture records as many as it replays)."""
    turn = itertools.count()
    return lambda: calls[next(turn) % len(calls)]()


def bench_gemv(quick: bool) -> list[dict]:
    """One row (a decode step at batch 1) at the 1B Llama's shapes (MLP, output and key/value projections, LM
    head): linear_act's matrix-vector kernel against cuBLAS + activation and against Inductor with
    coordinate-descent tuning (how a decode build compiles them, kpt.gpu.compile), all graph-replayed. Each call
    reads the next of enough weight copies to outgrow the L2 cache four times over, as a decode step's 2 GB of
    weights do (replaying one 23 MB weight would time L2, not memory). GB/s here is the weight read: the bound
    these calls have."""
    rows = []
    dtype = torch.bfloat16
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    shapes = ((2048, 5632, True), (5632, 2048, False), (2048, 2048, False), (2048, 256, False), (2048, 32000, False))
    for K, N, gated in shapes[:2 if quick else len(shapes)]:
        nbytes = N * K * (2 if gated else 1) * torch.finfo(dtype).bits // 8
        copies = -(-4 * l2 // nbytes)
        x = torch.randn(1, K, device="cuda", dtype=dtype)
        act = "silu" if gated else "none"
        pairs = [tuple(torch.randn(N, K, device="cuda", dtype=dtype) / K ** 0.5 if i == 0 or gated else None
                       for i in range(2)) for _ in range(copies)]
        providers = {name: _rotating([registry.linear_providers(x, w, None, act, w2)[name] for w, w2 in pairs])
                     for name in registry.linear_providers(x, pairs[0][0], None, act)}
        with torch._inductor.config.patch(coordinate_descent_tuning=True):
            compiled = torch.compile(functools.partial(linear_act.reference, act=act), dynamic=False)
            providers["inductor_cd"] = _rotating([functools.partial(compiled, x, w, None, weight2=w2) for w, w2 in pairs])
            providers["inductor_cd"]()  # compiles under the patch
        rows += _rows("gemv_swiglu" if gated else "gemv", f"1x{K}->{N}", dtype, None, providers,
                      2 * N * K * (2 if gated else 1), nbytes)
        del pairs, providers
    return rows


def bench_linear_modes(quick: bool) -> list[dict]:
    """The goal shape (bf16) with x and the weights loaded each way (linear_act.MODES: kpt_ptr, kpt_tma, kpt_persist)
    beside the op as shipped (kpt) and cuBLAS + activation, in one run: decides linear_act.MODE."""
    rows = []
    M, K, N = (4096, 4096, 11008) if not quick else (2048, 2048, 5504)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w, w2 = (torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K ** 0.5 for _ in range(2))
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    for op, act, second, flops in (("linear_gelu", "gelu", None, 2 * M * N * K), ("swiglu", "silu", w2, 4 * M * N * K)):
        bias = None if second is not None else b
        providers = registry.linear_providers(x, w, bias, act, second, eager=True)
        providers = {"kpt": providers["kpt"], "cublas+act": providers["cublas+act"]}
        for mode in linear_act.MODES:
            providers[f"kpt_{mode}"] = functools.partial(linear_act._run, x, w, bias, second, None, act, mode)
        rows += _rows(op, f"{M}x{K}->{N}", torch.bfloat16, None, providers, flops,
                      (M * K + (2 if second is not None else 1) * N * K + M * N) * 2)
    return rows


def bench_linear_ws(quick: bool) -> list[dict]:
    """kernels/linear_ws.py (Gluon, persistent, warp-specialized) beside the op as shipped (kpt), its persistent
    Triton form (kpt_persist) and cuBLAS + activation at the goal shape (bf16), in one run: kpt_ws (ping-pong
    warpgroups) with the exact epilogue, and for GELU kpt_ws_fast (erf by linear_ws.FAST_GELU's form) and gemm_ws
    (the kernel with no activation: what the epilogue costs), kpt_ws_deep (the ring at linear_ws.DEEP_STAGES
    buffers, the most that fit; otherwise as shipped, GELU by FAST_GELU's form), kpt_ws_wide (linear_ws.WIDE_TILE's
    64-row tiles) and kpt_ws_coop (cooperative tiles, linear_ws.COOP, SwiGLU's default; gemm_ws_coop without an
    activation: whether fewer bytes from L2 a FLOP make the GEMM itself faster); each kpt_ws row also carries its
    largest difference from cuBLAS + activation (max_diff)."""
    from . import linear_ws

    rows = []
    M, K, N = (4096, 4096, 11008) if not quick else (2048, 2048, 5504)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w, w2 = (torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K ** 0.5 for _ in range(2))
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    for op, act, second in (("linear_gelu", "gelu", None), ("linear_silu", "silu", None), ("swiglu", "silu", w2)):
        bias = None if second is not None else b
        vendor = registry.linear_providers(x, w, bias, act, second, eager=True)
        providers = {"kpt": vendor["kpt"], "cublas+act": vendor["cublas+act"],
                     "kpt_persist": functools.partial(linear_act._run, x, w, bias, second, None, act, "persist")}
        if linear_ws.supports(x, w, bias, second, act):
            providers["kpt_ws"] = functools.partial(linear_ws.linear_act, x, w, bias, act, second, fast_gelu=False,
                                                    coop=False)
            providers["kpt_ws_deep"] = functools.partial(linear_ws.linear_act, x, w, bias, act, second,
                                                         stages=linear_ws.DEEP_STAGES[second is not None],
                                                         tile=linear_ws.TILE[second is not None], coop=False)
            providers["kpt_ws_wide"] = functools.partial(linear_ws.linear_act, x, w, bias, act, second,
                                                         tile=linear_ws.WIDE_TILE[second is not None], coop=False)
            providers["kpt_ws_coop"] = functools.partial(linear_ws.linear_act, x, w, bias, act, second, coop=True)
            if act == "gelu":  # erf by linear_ws.FAST_GELU's form; the same GEMM with no activation (the epilogue's cost)
                providers["kpt_ws_fast"] = functools.partial(linear_ws.linear_act, x, w, bias, act, fast_gelu=True)
                providers["gemm_ws"] = functools.partial(linear_ws.linear_act, x, w, bias, "none", coop=False)
                providers["gemm_ws_coop"] = functools.partial(linear_ws.linear_act, x, w, bias, "none", coop=True)
        rows += _max_diffs(_rows(op, f"{M}x{K}->{N}", torch.bfloat16, None, providers,
                                 linear_ws.flops(x, w, second is not None),
                                 (M * K + (2 if second is not None else 1) * N * K + M * N) * 2), providers, "cublas+act")
    return rows


NORM_SHAPES = [(16384, 4096), (4096, 8192), (65536, 1024), (2048, 32768)]


NORM_OPS = (("rms_norm", False, 1e-6, True), ("layer_norm", True, 1e-5, False))  # op, has bias, eps, rms


def _norm_rows(quick: bool, providers_for) -> list[dict]:  # noqa: ANN001 - (x, w, b, eps, rms) -> providers
    """Per dtype and norm shape: each norm op's providers, then a copy of the same tensor (the bandwidth bar)."""
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        for R, N in NORM_SHAPES if not quick else [(4096, 4096)]:
            x = torch.randn(R, N, device="cuda", dtype=dtype)
            w, b = torch.randn(N, device="cuda", dtype=dtype), torch.randn(N, device="cuda", dtype=dtype)
            nbytes = 2 * R * N * x.element_size()
            for op, has_bias, eps, rms in NORM_OPS:
                rows += _rows(op, f"{R}x{N}", dtype, None, providers_for(x, w, b if has_bias else None, eps, rms), 0,
                              nbytes)
            y = torch.empty_like(x)
            rows += _rows("copy", f"{R}x{N}", dtype, None, {"torch": lambda y=y, x=x: y.copy_(x)}, 0, nbytes)
    return rows


def bench_norms(quick: bool) -> list[dict]:
    return _norm_rows(quick, registry.norm_providers)


def _op_provider(x, w, bias, eps, rms) -> dict:  # noqa: ANN001
    """The norm op as the registry runs it (autotuned), provider kpt."""
    return {"kpt": functools.partial(norms.norm_op, x, w, bias, eps, rms, 0.0, 0)}


def _warp_providers(x, w, bias, eps, rms) -> dict:  # noqa: ANN001
    providers = _op_provider(x, w, bias, eps, rms)
    for nw in norms.WARPS:
        providers[f"kpt_w{nw}"] = functools.partial(norms.norm_fixed, x, w, bias, eps, rms, nw)
    return providers


def bench_norm_warps(quick: bool) -> list[dict]:
    """Each fixed warp count per norm shape (providers kpt_w4..kpt_w32) beside the autotuned kernel (kpt) and a
    copy, all in one run: shows which count the autotuner should pick and whether it does."""
    return _norm_rows(quick, _warp_providers)


def _persistent_providers(x, w, bias, eps, rms) -> dict:  # noqa: ANN001
    return _op_provider(x, w, bias, eps, rms) | {
        "kpt_persistent": functools.partial(norms.norm_persistent, x, w, bias, eps, rms)}


def _cache_providers(x, w, bias, eps, rms) -> dict:  # noqa: ANN001
    return _op_provider(x, w, bias, eps, rms) | {"kpt_x_l1": functools.partial(norms.norm_x_l1, x, w, bias, eps, rms)}


def bench_norm_cache(quick: bool) -> list[dict]:
    """The norm op (x loaded past L1: norms.X_CACHE) beside the same kernel with x through L1 (kpt_x_l1) and a copy,
    per norm shape: whether keeping L1 for the scale and shift is what LayerNorm at 32k needs."""
    return _norm_rows(quick, _cache_providers)


def bench_norm_persistent(quick: bool) -> list[dict]:
    """The persistent pipelined kernel (kpt_persistent: one program per SM, the next row copied in while this one
    is reduced) beside the op's kernel (kpt) and a copy, per norm shape: whether wide rows should take it."""
    return _norm_rows(quick, _persistent_providers)


# The performance goals on the H100 (bf16): attention forward at head dim 128 and 16k tokens in TFLOP/s,
# norms as a fraction of the same run's copy bandwidth, fused linear + activation as a speedup over cuBLAS + a
# separate activation.
ATTENTION_GOAL = {False: 620.0, True: 540.0}
NORM_GOAL = 0.85
LINEAR_GOAL = 1.1


def _pick(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items()) and r.get("ms")), None)


def goals(rows: list[dict], dtype: str = "bfloat16") -> list[str]:
    """Markdown rows: each performance goal, what was measured, met or not."""
    out = ["| goal | target | measured | met |", "|---|---|---|---|"]
    for causal, target in ATTENTION_GOAL.items():
        shape = "b1 h16 n16384 d128"
        ours = _pick(rows, op="attention", shape=shape, dtype=dtype, causal=causal, provider="kpt")
        others = ", ".join(f"{p} {r['tflops']}" for p in ("sdpa_cudnn", "sdpa_flash", "flex")
                           if (r := _pick(rows, op="attention", shape=shape, dtype=dtype, causal=causal, provider=p)))
        if ours:
            out.append(f"| attention {'causal' if causal else 'non-causal'}, {shape} | >= {target:.0f} TFLOP/s | "
                       f"{ours['tflops']} TFLOP/s (same run: {others}) | {'yes' if ours['tflops'] >= target else 'no'} |")
    for op in ("rms_norm", "layer_norm"):
        fracs = []
        for r in rows:
            if r["op"] == op and r["provider"] == "kpt" and r["dtype"] == dtype and r.get("gbps"):
                copy = _pick(rows, op="copy", shape=r["shape"], dtype=dtype, provider="torch")
                if copy and copy.get("gbps"):
                    fracs.append((r["gbps"] / copy["gbps"], r["shape"]))
        if fracs:
            low = [f"{sh} {f:.0%}" for f, sh in fracs if f < NORM_GOAL]
            out.append(f"| {op} | >= {NORM_GOAL:.0%} of copy bandwidth | "
                       + ", ".join(f"{sh} {f:.0%}" for f, sh in fracs)
                       + f" | {'yes' if not low else 'no (' + ', '.join(low) + ')'} |")
    for op in ("linear_gelu", "linear_silu", "swiglu"):
        for r in rows:
            if r["op"] == op and r["provider"] == "kpt" and r["dtype"] == dtype and r.get("ms"):
                ref = _pick(rows, op=op, shape=r["shape"], dtype=dtype, provider="cublas+act")
                if ref:
                    x = ref["ms"] / r["ms"]
                    out.append(f"| {op} {r['shape']} | >= {LINEAR_GOAL}x cuBLAS + activation | {x:.2f}x "
                               f"({r['ms']} vs {ref['ms']} ms) | {'yes' if x >= LINEAR_GOAL else 'no'} |")
    return out


def variant_table(rows: list[dict]) -> list[str]:
    """Markdown rows from norm-warps, norm-persistent and norm-cache runs: per norm, shape and dtype, the op's kernel
    (kpt) and each variant of it (kpt_w4.., kpt_persistent, kpt_x_l1) as a fraction of the same run's copy bandwidth, and the fastest of
    them all (the autotuned op's kernel included); empty without variant rows."""
    ops = {op for op, *_ in NORM_OPS}
    variants = list(dict.fromkeys(r["provider"] for r in rows if r["op"] in ops and r["provider"].startswith("kpt_")))
    if not variants:
        return []
    keys = dict.fromkeys((r["op"], r["shape"], r["dtype"]) for r in rows if r["provider"] in variants)
    out = ["| op | shape | dtype | kpt (autotuned) | " + " | ".join(variants) + " | fastest |",
           "|---|---|---|---|" + "---|" * len(variants) + "---|"]
    for op, shape, dtype in keys:
        copy = _pick(rows, op="copy", shape=shape, dtype=dtype, provider="torch")
        frac = {}
        for p in ["kpt", *variants]:
            r = _pick(rows, op=op, shape=shape, dtype=dtype, provider=p)
            frac[p] = r["gbps"] / copy["gbps"] if r and copy and copy.get("gbps") else None
        cells = [f"{f:.0%}" if f is not None else "-" for f in frac.values()]
        best = max((p for p in frac if frac[p] is not None), key=lambda p: frac[p], default="-")  # the op's own too
        out.append(f"| {op} | {shape} | {dtype} | " + " | ".join(cells) + f" | {best} |")
    return out


def markdown(rows: list[dict], device: str, versions: str, command: str) -> str:
    lines = [f"# Kernel benchmarks: {device}", "",
             f"{versions}; `{command}`. Times: median of CUDA-graph replays (_common.gpu_ms: "
             "triton.testing.do_bench_cudagraph, rep 200 ms; host-launched where a provider cannot be captured). Rows with TFLOP/s use it as the figure of merit; norms and copy use GB/s "
             "(each tensor read or written once).", "",
             "## Performance goals (bf16)", "", *goals(rows), "",
             *(["## Norms: each kernel variant (fraction of the same run's copy bandwidth)", "", *variants, ""]
               if (variants := variant_table(rows)) else []),
             "## All rows", "",
             "| op | shape | dtype | causal | provider | ms | TFLOP/s | GB/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        causal = "" if r["causal"] is None else ("yes" if r["causal"] else "no")
        if r["ms"] is None:
            lines.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {causal} | {r['provider']} | "
                         f"{r['error']} | | |")
        else:
            lines.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {causal} | {r['provider']} | {r['ms']} | "
                         f"{r['tflops'] if r['tflops'] else ''} | {r['gbps']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "docs/benchmarks"))
    ap.add_argument("--name", default=None, help="file stem (default kernels-<gpu>)")
    ap.add_argument("--quick", action="store_true", help="one small shape per op")
    ap.add_argument("--ops", default="attention,decode,linear,norms",
                    help="comma-separated: attention, attention-modes (K/V loads: pointers, TMA, TMA + warp "
                         "specialization), attention-ws and linear-ws (the Gluon warp-specialized kernels), decode, linear, linear-modes (likewise), gemv (one row at the 1B Llama's decode "
                         "shapes, Inductor included), norms, norm-warps (each fixed warp count), "
                         "norm-persistent (the persistent pipelined norm kernel), norm-cache (x past L1 or not)")
    ap.add_argument("--skip", default="", help="comma-separated providers not to time (e.g. kpt_ws_split)")
    ap.add_argument("--render", metavar="JSON", help="rewrite the markdown twin of a result JSON (no GPU needed)")
    ap.add_argument("--merge", metavar="JSON", nargs="+",
                    help="result JSONs of one device, later ones' cases replacing earlier ones' -> "
                         "<out>/<name>.json/.md (no GPU needed)")
    args = ap.parse_args(argv)
    SKIP.update(p for p in args.skip.split(",") if p)
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(render(json.loads(path.read_text())))
        return 0
    if args.merge:
        doc = merge([json.loads(Path(p).read_text()) for p in args.merge])
        out = Path(args.out)
        (out / f"{args.name or 'kernels-merged'}.json").write_text(json.dumps(doc, indent=1))
        (out / f"{args.name or 'kernels-merged'}.md").write_text(render(doc))
        return 0
    if not torch.cuda.is_available():
        sys.stderr.write("kernels.bench needs a CUDA device; none is visible\n")
        return 2
    device = torch.cuda.get_device_name()
    stem = args.name or "kernels-" + ("h100" if "H100" in device else device.lower().replace(" ", "-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for op in args.ops.split(","):
        rows += {"attention": bench_attention, "attention-modes": bench_attention_modes,
                 "attention-ws": bench_attention_ws, "linear-ws": bench_linear_ws, "decode": bench_decode,
                 "linear": bench_linear, "linear-modes": bench_linear_modes, "norms": bench_norms, "gemv": bench_gemv,
                 "norm-warps": bench_norm_warps, "norm-persistent": bench_norm_persistent,
                 "norm-cache": bench_norm_cache}[op](args.quick)
        # Rewritten after each op: a run cut short keeps what it measured.
        doc = {"device": device, "torch": torch.__version__, "triton": __import__("triton").__version__,
               "command": "python -m kernels.bench " + " ".join(argv or sys.argv[1:]), "rows": rows}
        (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
        (out / f"{stem}.md").write_text(render(doc))
    return 0


def merge(docs: list[dict]) -> dict:
    """One result of several runs on one device: a case (op, shape, dtype, causal) measured by a later run replaces
    all of that case's rows from earlier ones (a goal compares providers of the same run), the rest are kept in
    order; the commands joined in order, the rows left out of each run (left_out) kept."""
    devices = {d["device"] for d in docs}
    if len(devices) != 1:
        raise ValueError(f"results of different devices cannot be merged: {sorted(devices)}")
    case = operator.itemgetter("op", "shape", "dtype", "causal")
    rows: list[dict] = []
    for d in docs:
        newer = {case(r) for r in d["rows"]}
        rows = [r for r in rows if case(r) not in newer] + d["rows"]
    merged = functools.reduce(operator.or_, docs, {})
    left_out = [r for d in docs for r in d.get("left_out", [])]  # rows a run's note keeps out of the table
    return merged | {"command": "; then ".join(d.get("command", "?") for d in docs), "rows": rows} | (
        {"left_out": left_out} if left_out else {})


def render(doc: dict) -> str:
    return markdown(doc["rows"], doc["device"], f"torch {doc['torch']}, triton {doc.get('triton', '?')}",
                    doc.get("command", "python -m kernels.bench"))


if __name__ == "__main__":
    raise SystemExit(main())
