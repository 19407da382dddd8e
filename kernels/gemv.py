"""kpt::linear_act at one row (a decode step at batch 1): act(x W^T + b), or the gated SwiGLU form
act(x Wg^T + bg) * (x Wu^T + bu), as matrix-vector products on the CUDA cores.

At one row the GEMM kernel's smallest tile (64 rows by 128 columns) is almost all padding, and it launches
N / BLOCK_N programs: 16 for a 2048-wide output, an eighth of an H100's SMs, for a call bound by reading the
weight once. Here a program owns BLOCK_N output columns and walks K in BLOCK_K chunks, multiplying in fp32;
with BLOCK_N of 2-16 a 2048-wide output has hundreds of programs. The gated form reads both weights in the same
loop and writes silu(gate) * up once, so nothing downstream recomputes it (Inductor's own matrix-vector
reduction inlines SiLU*mul into the down projection's loads). Linear layers keep their [N, K] layout: each
program's loads are BLOCK_N contiguous rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    ACTS,
    STREAM_POLICY,
    activate,
    check_counters,
    check_linear,
    configs,
    launch,
    pdl_code,
    pdl_launch,
    pdl_options,
    pdl_start,
    pdl_wait,
    pdl_wait_for,
    prefetch_args,
    prefetch_l2,
    register_op,
    torch_activation,
)

MAX_ROWS = 1  # linear_act takes this path up to this many rows (decode at batch 1; the GEMM above)

# (BLOCK_N, BLOCK_K, num_warps, STAGES): a few columns per program for many programs, long contiguous K chunks
# for wide loads; STAGES > 1 pipelines the loop's loads through shared memory (cp.async: kernels.cubin shows
# the copies for sm_90; plain num_stages does not pipeline loads that feed no tl.dot). The autotuner times them
# per (N, K) at the first call: 1.4-1.8x cuBLAS at the 1B Llama's decode shapes, level with Inductor's
# coordinate-descent reduction (H200, 2026-12-04, kernels/README.md). The last three load a long row's whole K (the
# down projection's 5632) in one or two steps: every byte a program reads in flight at once.
_GPU = [triton.Config({"BLOCK_N": n, "BLOCK_K": k, "STAGES": st}, num_warps=w)
        for n, k, w, st in ((2, 512, 4, 1), (2, 1024, 4, 1), (2, 2048, 8, 1), (4, 512, 4, 1), (4, 1024, 4, 1),
                            (4, 2048, 8, 1), (8, 512, 4, 1), (8, 1024, 8, 1), (16, 256, 4, 1), (16, 512, 8, 1),
                            (4, 512, 4, 3), (4, 1024, 4, 3), (8, 512, 4, 3), (2, 2048, 8, 3),
                            (1, 4096, 4, 1), (2, 4096, 8, 1), (1, 8192, 8, 1))]
_INTERP = [triton.Config({"BLOCK_N": 4, "BLOCK_K": 64, "STAGES": 1}, num_warps=1)]  # K > 64 runs the K tail
# A weight of STREAM_ELEMS elements or more (8 MB in bf16: each of the 1B Llama's decode launches) is tuned among
# STREAM_CONFIGS alone: the pipelined configs, within 3-4% of the fastest at three of those shapes and 3-7% at the
# fourth (bench/gemv_configs.py, one launch a layer on weights of its own, graph-replayed, H100, 2026-12-06: q/k/v
# 6.23-6.26 us against 6.23, the output projection 5.74-5.93 against 5.56, gate/up 18.45-18.90 against 18.45, down
# 10.80-11.11 against 10.71), where the others ranged up to 1.6x (gate/up) and 4.4x (down) slower. Among the whole
# list the pick is only as good as the timing that makes it (Inductor's benchmarker for a compiled step, with a clone
# of the output in each timed call; a build's other processes on a shared card). The package measured the same with
# them (1.179 ms against 1.178, H100, 2026-12-06): its picks had not been among the slow ones; what it saves is the
# bound on a bad pick, and 11-14 of the 14-17 compiles a shape.
STREAM_ELEMS = 1 << 22
# A PDL launch's programs load the first EARLY_ELEMS elements of their weight rows (of each weight, half as many
# columns gated; K's at most) before the wait: the weight depends on no earlier launch, so those loads are in flight
# while the launch before finishes, where a launch that waits first starts reading only after it (run's `early` sets
# the count, and asks for the loads without PDL too). The read-only skeleton of the 1B Llama's decode step
# (bench/read_skeleton.py, H100, 2026-12-06): its 133 launches 0.92 ms plain, 0.89-1.01 waiting first under PDL,
# 0.725 ms with each program's 8192 reads before the wait. The step itself (bench/decode_mlp.py, H100, 2026-12-06)
# with these early loads: 1.107 -> 1.064 ms with PDL launches, 1.119 -> 1.097 compiled with its graph's edges made
# programmatic: the share L2 prefetches of the rows before the wait had bought (1.184 -> 1.120, 2026-12-05), not the
# skeleton's. They cost registers (gemv_rope at n4 k512: 56 -> 124 a thread, so 4 programs an SM where 8 fit; 96
# since _held, not measured on a GPU yet), yet fewer are slower in the step (bench/decode_mlp.py, H100, 2026-12-06,
# one run, p50: uncompiled 1.146 ms, PDL launches waiting first 1.127, with 2048 early elements 1.201, 4096 1.150,
# 8192 1.110).
EARLY_ELEMS = 8192
# The skeleton's programs read all their bytes before the wait; the autotuned configs' programs hold more rows than
# 8192 elements at gate/up (two weights) and down (5632-long rows), so most of those launches' reads still wait.
# WHOLE_ELEMS > 0: a PDL launch of a weight of STREAM_ELEMS or more takes whole_config's block instead of the
# autotuner's, as many rows as fit in WHOLE_ELEMS elements (K rounded up to a power of 2, both weights gated), each
# program loading all of them before its wait and running no loop (run's `whole` asks for it at any size, and
# without PDL). Off: slower (bench/decode_mlp.py, H100, 2026-12-06, one run, p50): the PDL step 1.110 ms with the
# autotuner's blocks, 1.270 with 8192 elements in 8 warps, 1.246 with 16384, 1.198 with 8192 in 4 warps. In
# bench/gemv_configs.py's chains the blocks match the autotuner's as plain launches (gate/up 19.8 us, down 12.9 against
# 12.1) and lose as PDL ones (gate/up 26.2 against 22.4): reading everything before the wait is not what the
# read-only skeleton's PDL form gains by.
WHOLE_ELEMS = 0
WHOLE_WARPS = 8
STREAM_CONFIGS = ((4, 512, 4, 3), (4, 1024, 4, 3), (8, 512, 4, 3))  # (BLOCK_N, BLOCK_K, num_warps, STAGES)


# The autotuner's pick for each key where it ran eagerly (run() records it). Compiled, each call site of the kernel
# is tuned again by Inductor, on its own: in the 1B Llama's compiled step the 22 layers' launches of one shape took
# different configs, and the step's kernels ran 1.0485 ms against 1.0237 with the eager picks (bench/graph_gaps.py,
# H100, 2026-12-06, one run; the gaps between launches were the same, 0.054 ms). PIN: where a key was picked eagerly,
# a compile is offered that config alone (kernels.candidates runs each decode trial once eagerly first). The
# autotuner keeps its timings on disk (cache_results: Triton's cache, under KPT_CACHE_DIR in the services), so a
# later job picks the same and its compile finds the earlier one's in the caches. Measured (bench/decode_mlp.py, H100,
# 2026-12-06, one run, p50): uncompiled 1.103 ms, compiled with the eager picks 1.119, with Inductor's own 1.132; the
# rest of the gap was the fp64 eps (see _gemv_kernel): with both, compiled 1.097 against uncompiled 1.096.
PIN = True
PICKS: dict[tuple, triton.Config] = {}
_PICK_CONSTS = ("HAS_BIAS", "ACT", "GATED", "NORM", "RES", "ROPE", "HEAD_DIM", "PREFETCH", "ZERO")


def _pick_key(dtype: torch.dtype, N: int, K: int, consts: dict) -> tuple:
    """PICKS' key: the autotuner's (N, K and the constexprs it keys on) with the operands' dtype."""
    return (str(dtype), int(N), int(K), *(consts.get(k) for k in _PICK_CONSTS))


def _fitting(cfgs: list, named_args: dict, **kwargs) -> list:  # noqa: ANN003 - the autotuner's prune hook
    """fits()'s configs; for a weight of STREAM_ELEMS or more those of STREAM_CONFIGS (where any is left); with PIN,
    the eager pick alone where there is one among them."""
    fit = fits(cfgs, named_args["N"], named_args["K"], kwargs.get("HEAD_DIM") if kwargs.get("ROPE") else None)
    if named_args["N"] * named_args["K"] >= STREAM_ELEMS:
        fit = [c for c in fit if _form(c) in STREAM_CONFIGS] or fit
    x = named_args.get("x_ptr")
    pick = PICKS.get(_pick_key(x.dtype, named_args["N"], named_args["K"], kwargs)) if PIN and x is not None else None
    if pick is None:
        return fit
    return [c for c in fit if _form(c) == _form(pick)][:1] or fit


def fits(cfgs: list, N: int, K: int, rope_head_dim: int | None = None) -> list:
    """The configs whose K chunk (then also column block) does not overshoot the problem, the smallest chunk
    always fitting: past K a chunk is masked-off loads, and each config is a compile (27-64 s for the fourteen
    at one small shape on the H200, 2026-12-04). K 5632 keeps all; K 2048 all but the three longest chunks.
    rope_head_dim: the rotary embedding's head dim, where the launch applies it (a block holds whole pairs)."""
    k_fit = [c for c in cfgs if c.kwargs["BLOCK_K"] <= max(triton.next_power_of_2(K),
                                                            min(c.kwargs["BLOCK_K"] for c in cfgs))]
    if rope_head_dim:  # no fallback: a block that splits a pair computes a wrong rotation
        return [c for c in k_fit if c.kwargs["BLOCK_N"] >= 2 and rope_head_dim % c.kwargs["BLOCK_N"] == 0]
    return [c for c in k_fit if c.kwargs["BLOCK_N"] <= triton.next_power_of_2(N)] or k_fit


def _form(c: triton.Config) -> tuple[int, int, int, int]:
    return c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps, c.kwargs["STAGES"]


@triton.jit
def _gemv_kernel(
    x_ptr,    # [M, K] rows with unit inner stride
    w_ptr,    # [N, K] weight (the gate projection for SwiGLU), unit inner stride
    w2_ptr,   # [N, K] SwiGLU up projection; unused (any pointer) unless GATED
    b_ptr,    # [N] bias of w; unused unless HAS_BIAS
    b2_ptr,   # [N] bias of w2; unused unless HAS_BIAS and GATED
    g_ptr,    # [K] RMSNorm weight applied to x first; unused unless NORM
    r_ptr,    # [M, N] residual added to the result, row stride stride_om; unused unless RES
    pos_ptr,  # [1] the rows' position, then the rotary inverse frequencies [HEAD_DIM / 2] (f_ptr); unused unless ROPE
    f_ptr,
    k_ptr,    # the K_N key columns then the K_N value columns (v_ptr) go here, [M, K_N] each; unused unless ROPE
    v_ptr,
    out_ptr,  # [M, N] output, unit inner stride (with ROPE: [M, N - 2 K_N], the query columns)
    pf_ptr,   # pf_bytes of a later launch's weight asked into L2 first (_common.prefetch_l2); unless PREFETCH unused
    z_ptr,    # [n_zero] int32 set to 0 by the first program (decode attention's counters); unused unless ZERO
    N, K, stride_xm, stride_wn, stride_w2n, stride_om, stride_km, stride_vm, eps, K_N, pf_bytes, n_zero,
    kv_row0,  # the first row of k_ptr and v_ptr this launch writes (a stacked output's slot)
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, GATED: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr,
    ROPE: tl.constexpr, HEAD_DIM: tl.constexpr, PREFETCH: tl.constexpr, ZERO: tl.constexpr,
    PDL: tl.constexpr, EARLY: tl.constexpr,  # the PDL code (_common.pdl_code); elements loaded early (EARLY_ELEMS)
    KP: tl.constexpr,  # K's next power of 2 where EARLY (else 0): the early columns' bound
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr,
):
    eps = tl.cast(eps, tl.float32)  # Inductor passes a float as fp64, and fp64 is catching (kernels.cubin.fp64_rows)
    go = 0  # the zero of the asm steps below (_common: the work after them sits in `if go == 0:`)
    w_early = 0.0  # the weight's first columns where loaded early, w2's beside them (EARLY_ELEMS)
    w2_early = 0.0
    PER_WEIGHT: tl.constexpr = EARLY // BLOCK_N // (2 if GATED else 1)  # columns: see EARLY_ELEMS
    PRE: tl.constexpr = PER_WEIGHT if PER_WEIGHT < KP else KP
    if PDL:
        go = pdl_start()
    if PRE > 0:  # the weight depends on no earlier launch: with PDL it is on its way while the launch before finishes
        offs_n, rn, _ = _columns(N, K_N, ROPE, HEAD_DIM, BLOCK_N)
        kp = tl.arange(0, PRE)
        ok = (kp < K)[None, :] & (go == 0)
        w_early = tl.load(w_ptr + rn[:, None] * stride_wn + kp[None, :], mask=ok, other=0.0)
        held = _held(w_early)
        if GATED:
            w2_early = tl.load(w2_ptr + rn[:, None] * stride_w2n + kp[None, :], mask=ok, other=0.0)
            held |= _held(w2_early)
        if PDL:  # the wait takes the loaded values, so it comes after their loads (and returns 0 whatever they are)
            go = pdl_wait_for(held, go)
    elif PDL:
        go = pdl_wait(go)
    stream: tl.constexpr = STREAM_POLICY if PREFETCH else ""
    if PREFETCH:  # and the weight streams through L2 marked first to evict, sparing what was asked in for later
        go += prefetch_l2(pf_ptr, pf_bytes, tl.program_id(1) * tl.num_programs(0) + tl.program_id(0),
                          tl.num_programs(0) * tl.num_programs(1))
    if go == 0:
        _gemv_body(x_ptr, w_ptr, w2_ptr, b_ptr, b2_ptr, g_ptr, r_ptr, pos_ptr, f_ptr, k_ptr + kv_row0 * stride_km,
                   v_ptr + kv_row0 * stride_vm, out_ptr, z_ptr, w_early, w2_early,
                   N, K, stride_xm, stride_wn, stride_w2n, stride_om, stride_km, stride_vm, eps, K_N, n_zero, HAS_BIAS,
                   ACT, GATED, NORM, RES, ROPE, HEAD_DIM, ZERO, stream, PRE, BLOCK_N, BLOCK_K, STAGES)


@triton.jit
def _held(w):
    """An int32 that depends on every element of the early-loaded block w, for the wait to take (pdl_wait_for): the
    largest of their bits, not their sum in fp32, whose converted copy the compiler kept for the block's products
    after the wait (gemv_rope 124 -> 96 registers a thread, SwiGLU 117 -> 96, offline sm_90 compile, 2026-12-06)."""
    if w.dtype.primitive_bitwidth == 16:
        return tl.max(tl.max(w.to(tl.int16, bitcast=True), axis=1), axis=0).to(tl.int32)
    else:
        return tl.max(tl.max(w.to(tl.int32, bitcast=True), axis=1), axis=0)


@triton.jit
def _gemv_body(x_ptr, w_ptr, w2_ptr, b_ptr, b2_ptr, g_ptr, r_ptr, pos_ptr, f_ptr, k_ptr, v_ptr, out_ptr, z_ptr,
               w_early, w2_early, N, K, stride_xm, stride_wn, stride_w2n, stride_om, stride_km, stride_vm, eps, K_N, n_zero,
               HAS_BIAS: tl.constexpr, ACT: tl.constexpr, GATED: tl.constexpr, NORM: tl.constexpr,
               RES: tl.constexpr, ROPE: tl.constexpr, HEAD_DIM: tl.constexpr, ZERO: tl.constexpr,
               stream: tl.constexpr, PRE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               STAGES: tl.constexpr):
    if ZERO:
        if tl.program_id(0) + tl.program_id(1) == 0:
            for z in range(0, n_zero, 128):
                tl.store(z_ptr + z + tl.arange(0, 128), tl.zeros((128,), tl.int32), mask=z + tl.arange(0, 128) < n_zero)
    offs_n, rn, rotating = _columns(N, K_N, ROPE, HEAD_DIM, BLOCK_N)
    row = tl.program_id(1)
    Q_N = N - 2 * K_N
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    squares = tl.zeros((BLOCK_K,), dtype=tl.float32)
    y_early = tl.zeros((BLOCK_N,), dtype=tl.float32)  # the first PRE columns' share, where loaded early
    y2_early = tl.zeros((BLOCK_N,), dtype=tl.float32)
    squares_early = 0.0
    if PRE > 0:
        kp = tl.arange(0, PRE)
        kp_ok = kp < K
        xp = tl.load(x_ptr + row * stride_xm + kp, mask=kp_ok, other=0.0).to(tl.float32)
        if NORM:
            squares_early = tl.sum(xp * xp, axis=0)
            xp = xp * tl.load(g_ptr + kp, mask=kp_ok, other=0.0).to(tl.float32)
        y_early = tl.sum(w_early.to(tl.float32) * xp[None, :], axis=1)
        if GATED:
            y2_early = tl.sum(w2_early.to(tl.float32) * xp[None, :], axis=1)
    for k0 in tl.range(PRE, K, BLOCK_K, num_stages=STAGES):
        k = k0 + offs_k
        k_ok = k < K
        xk = tl.load(x_ptr + row * stride_xm + k, mask=k_ok, other=0.0).to(tl.float32)
        if NORM:  # RMSNorm folded in: W (g * x) here, times the row's rstd (a scalar) after the loop
            squares += xk * xk
            xk = xk * tl.load(g_ptr + k, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rn[:, None] * stride_wn + k[None, :], mask=k_ok[None, :], other=0.0, eviction_policy=stream)
        acc += w.to(tl.float32) * xk[None, :]
        if GATED:
            w2 = tl.load(w2_ptr + rn[:, None] * stride_w2n + k[None, :], mask=k_ok[None, :], other=0.0,
                         eviction_policy=stream)
            acc2 += w2.to(tl.float32) * xk[None, :]
    rstd = 1.0
    if NORM:
        rstd = 1.0 / tl.sqrt((tl.sum(squares, axis=0) + squares_early) / K + eps)
    y = (tl.sum(acc, axis=1) + y_early) * rstd
    if HAS_BIAS:
        y += tl.load(b_ptr + rn).to(tl.float32)
    y = activate(y, ACT)
    if GATED:
        y2 = (tl.sum(acc2, axis=1) + y2_early) * rstd
        if HAS_BIAS:
            y2 += tl.load(b2_ptr + rn).to(tl.float32)
        y = y * y2
    if RES:
        y += tl.load(r_ptr + row * stride_om + rn).to(tl.float32)
    if ROPE:
        store_qkv(y, rn, offs_n, row, rotating, pos_ptr, f_ptr, out_ptr, k_ptr, v_ptr, N, Q_N, K_N, stride_om,
                   stride_km, stride_vm, HEAD_DIM, BLOCK_N)
    else:
        tl.store(out_ptr + row * stride_om + offs_n, y.to(out_ptr.dtype.element_ty), mask=offs_n < N)


@triton.jit
def _columns(N, K_N, ROPE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    """(output columns, the weight rows they read, whether they rotate) of this program's block."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rn = offs_n % N  # columns past the edge re-read a valid row; the store drops them
    rotating = False
    if ROPE:
        rn, rotating = rope_rows(offs_n, rn, tl.program_id(0) * BLOCK_N, N - 2 * K_N, K_N, HEAD_DIM)
    return offs_n, rn, rotating


@triton.jit
def rope_rows(offs_n, rn, first, Q_N, K_N, HEAD_DIM: tl.constexpr):
    """(weight rows, rotating) of a q/k/v block starting at column first: the q and k columns are HEAD_DIM-wide heads
    (the block size divides HEAD_DIM: a block is one head's), each block takes its columns in rotation pairs, dims
    (j, j + HEAD_DIM / 2) side by side (store_qkv's order); v's columns keep rn."""
    rotating = first < Q_N + K_N
    dim = offs_n % HEAD_DIM
    pairs = offs_n - dim + dim // 2 + (dim % 2) * (HEAD_DIM // 2)
    return tl.where(rotating, pairs, rn), rotating


@triton.jit
def store_qkv(y, rn, offs_n, row, rotating, pos_ptr, f_ptr, out_ptr, k_ptr, v_ptr, N, Q_N, K_N, stride_om,
               stride_km, stride_vm, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    """x * cos + rotate_half(x) * sin on the q and k pairs (cos and sin of position * inverse frequency, rounded
    to the output's dtype as the step rounds them); then q, k and v each to its own output."""
    a, b = tl.split(tl.reshape(y, (BLOCK_N // 2, 2)))
    col_a, col_b = tl.split(tl.reshape(rn, (BLOCK_N // 2, 2)))
    n_a, n_b = tl.split(tl.reshape(offs_n, (BLOCK_N // 2, 2)))
    angle = tl.load(pos_ptr).to(tl.float32) * tl.load(f_ptr + (col_a % HEAD_DIM) % (HEAD_DIM // 2)).to(tl.float32)
    cos = tl.cos(angle).to(out_ptr.dtype.element_ty).to(tl.float32)
    sin = tl.sin(angle).to(out_ptr.dtype.element_ty).to(tl.float32)
    a, b = tl.where(rotating, a * cos - b * sin, a), tl.where(rotating, b * cos + a * sin, b)
    _store_cols(a, col_a, n_a, row, out_ptr, k_ptr, v_ptr, N, Q_N, K_N, stride_om, stride_km, stride_vm)
    _store_cols(b, col_b, n_b, row, out_ptr, k_ptr, v_ptr, N, Q_N, K_N, stride_om, stride_km, stride_vm)


@triton.jit
def _store_cols(val, col, n, row, out_ptr, k_ptr, v_ptr, N, Q_N, K_N, stride_om, stride_km, stride_vm):
    val = val.to(out_ptr.dtype.element_ty)
    ok = n < N
    tl.store(out_ptr + row * stride_om + col, val, mask=ok & (col < Q_N))
    tl.store(k_ptr + row * stride_km + (col - Q_N), val, mask=ok & (col >= Q_N) & (col < Q_N + K_N))
    tl.store(v_ptr + row * stride_vm + (col - Q_N - K_N), val, mask=ok & (col >= Q_N + K_N))


_gemv = triton.autotune(configs(_GPU, _INTERP), key=["N", "K", "HAS_BIAS", "ACT", "GATED", "NORM", "RES", "ROPE", "HEAD_DIM",
                                                        "PREFETCH", "ZERO"],
                        prune_configs_by={"early_config_prune": _fitting}, cache_results=True)(_gemv_kernel)


def run(launch, x2: torch.Tensor, weight: torch.Tensor, w2: torch.Tensor, b: torch.Tensor, b2: torch.Tensor,  # noqa: ANN001
        out: torch.Tensor, has_bias: bool, act: int, gated: bool, norm_weight: torch.Tensor | None = None,
        residual: torch.Tensor | None = None, eps: float = 0.0, rope: tuple | None = None,
        prefetch: torch.Tensor | None = None, prefetch_fraction: float = 1.0, zero: torch.Tensor | None = None,
        pdl: bool = False, kv_row0: int = 0, early: int | None = None, whole: int | None = None) -> None:
    """Launches the kernel through `launch` (_common.launch) for linear_act._run's operands: x2 [M, K] with
    M <= MAX_ROWS, out [M, N]; w2/b/b2 any tensor where unused, as there. norm_weight: x is RMS-normalized
    (eps) and scaled by it first; residual [M, N] (out's layout): added to the result. rope: (pos, inv_freq,
    k_out, v_out) for gemv_qkv, out then [M, N - 2 K_N] for the query columns, k_out/v_out [M, K_N] rows from row
    kv_row0 on.
    prefetch: a tensor a later launch reads, its first prefetch_fraction asked into L2 (a hint). zero: an int32
    vector the first program sets to 0. pdl: the launch as a programmatic dependent one (_common.pdl_code), its
    first EARLY_ELEMS weight elements a program loaded before its wait; early: that many elements loaded before the
    loop (before the wait with PDL) in place of the default (EARLY_ELEMS with PDL, none without). whole: the block
    of whole_config(..., whole) in place of the autotuner's, with or without PDL (WHOLE_ELEMS for PDL launches of
    large weights otherwise), where one fits."""
    x2, weight, w2 = (t if t.stride(-1) == 1 else t.contiguous() for t in (x2, weight, w2))
    M, K = x2.shape
    N = weight.shape[0]
    pos, freq, k_out, v_out = rope if rope is not None else (out, out, out, out)
    k_n = k_out.shape[-1] if rope is not None else 0
    pf, pf_bytes = prefetch_args(prefetch, prefetch_fraction)
    pdl_on = pdl_code(x2, pdl)
    head_dim = 2 * freq.numel() if rope is not None else 2
    if whole is None and pdl_on and WHOLE_ELEMS and N * K >= STREAM_ELEMS:
        whole = WHOLE_ELEMS
    block = whole_config(N, K, gated, head_dim if rope is not None else None, whole) if whole else None
    if block is not None:  # the whole rows before the wait: a block of its own, not the autotuner's
        kernel, grid, meta = _gemv_kernel, (triton.cdiv(N, block["BLOCK_N"]), M), block
    else:
        early = early if early is not None else EARLY_ELEMS if pdl_on else 0
        kernel, grid, meta = _gemv, lambda m: (triton.cdiv(N, m["BLOCK_N"]), M), {"EARLY": early}
    meta["KP"] = triton.next_power_of_2(K) if meta["EARLY"] else 0
    consts = {"HAS_BIAS": has_bias, "ACT": act, "GATED": gated, "NORM": norm_weight is not None,
              "RES": residual is not None, "ROPE": rope is not None, "HEAD_DIM": head_dim, "PREFETCH": pf is not None,
              "ZERO": zero is not None}
    launcher = launch(kernel)
    launcher[grid](
        x2, weight, w2, b, b2, norm_weight if norm_weight is not None else x2,
        residual if residual is not None else out, pos, freq, k_out, v_out, out, out if pf is None else pf,
        zero if zero is not None else out, N, K,
        x2.stride(0), weight.stride(0), w2.stride(0), out.stride(0), k_out.stride(0), v_out.stride(0), eps, k_n,
        pf_bytes, zero.numel() if zero is not None else 0, kv_row0, **consts, PDL=pdl_on, **meta,
        **pdl_options(pdl_launch(x2, pdl)))
    if launcher is _gemv and getattr(_gemv, "best_config", None) is not None:  # an eager call: the autotuner's pick, for compiles (PIN)
        PICKS[_pick_key(x2.dtype, N, K, consts)] = _gemv.best_config


def whole_config(N: int, K: int, gated: bool, rope_head_dim: int | None, elems: int) -> dict | None:
    """The launch parameters of a block whose programs load all their weight rows before the loop (before the wait
    with PDL): the most rows (a power of 2, N's next at most) whose K columns, rounded up to a power of 2, of each
    weight fit in `elems` elements; WHOLE_WARPS warps. None where one row does not fit, or no such block holds
    whole rotation pairs of rope_head_dim-wide heads."""
    per_row = triton.next_power_of_2(K) * (2 if gated else 1)
    if elems < per_row:
        return None
    rows = min(1 << (elems // per_row).bit_length() - 1, triton.next_power_of_2(N))  # the most a power of 2 fits
    if rope_head_dim:
        while rows > 1 and rope_head_dim % rows:
            rows //= 2
        if rows < 2:
            return None
    return {"BLOCK_N": rows, "BLOCK_K": 16, "STAGES": 1, "EARLY": rows * per_row, "num_warps": WHOLE_WARPS}


def _check(x: torch.Tensor, weight: torch.Tensor, weight2: torch.Tensor | None, norm_weight: torch.Tensor | None,
           residual: torch.Tensor | None, act: str) -> None:
    check_linear(x, weight, None, weight2, None, act)
    K, N = x.shape[-1], weight.shape[0]
    if norm_weight is not None and tuple(norm_weight.shape) != (K,):
        raise ValueError(f"norm weight has shape {tuple(norm_weight.shape)}; x has {K}-wide rows")
    if residual is not None and tuple(residual.shape) != (*x.shape[:-1], N):
        raise ValueError(f"residual has shape {tuple(residual.shape)}; the result is {(*x.shape[:-1], N)}")


def _fake(x, weight, weight2, norm_weight, residual, eps, act, prefetch=None, prefetch_fraction=1.0, pdl=False):  # noqa: ANN001, ANN202
    _check(x, weight, weight2, norm_weight, residual, act)
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@register_op("kpt::gemv", _fake)
def gemv_op(x: torch.Tensor, weight: torch.Tensor, weight2: torch.Tensor | None, norm_weight: torch.Tensor | None,
            residual: torch.Tensor | None, eps: float, act: str, prefetch: torch.Tensor | None = None,
            prefetch_fraction: float = 1.0, pdl: bool = False) -> torch.Tensor:
    """reference()'s result for rows of a decode step: act(rmsnorm(x) W^T) [* rmsnorm(x) W2^T] [+ residual], the
    norm only where norm_weight is given, in one kernel (each program folds the norm into its dot products and
    scales by the row's rstd at the end; a residual is added to the result before its one store). prefetch: a
    contiguous tensor a later launch reads, its first prefetch_fraction asked into L2 as this one starts (no
    result depends on it). pdl: a programmatic dependent launch (kernels/_common.py), on sm_90+."""
    _check(x, weight, weight2, norm_weight, residual, act)
    x2 = x.reshape(-1, x.shape[-1])
    out = x.new_empty((x2.shape[0], weight.shape[0]))
    if out.numel():
        gated = weight2 is not None
        run(launch, x2, weight, weight2 if gated else weight, weight, weight, out, False, ACTS[act], gated,
            norm_weight, residual.reshape(out.shape).contiguous() if residual is not None else None, eps,
            prefetch=prefetch, prefetch_fraction=prefetch_fraction, pdl=pdl)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def reference(x: torch.Tensor, weight: torch.Tensor, weight2: torch.Tensor | None, norm_weight: torch.Tensor | None,
              residual: torch.Tensor | None, eps: float, act: str) -> torch.Tensor:
    """Plain PyTorch: RMSNorm as transformers' Llama computes it (fp32 statistics, normalized x cast back before
    the scale), the linear(s), activation, residual."""
    if norm_weight is not None:
        xf = x.float()
        x = norm_weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    y = torch_activation(torch.nn.functional.linear(x, weight), act)
    if weight2 is not None:
        y = y * torch.nn.functional.linear(x, weight2)
    return y + residual if residual is not None else y


def _check_qkv(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None, pos: torch.Tensor,
               inv_freq: torch.Tensor, k_out: torch.Tensor, v_out: torch.Tensor, zero: torch.Tensor | None = None) -> int:
    """The query columns, once the operands are checked."""
    _check(x, weight, None, norm_weight, None, "none")
    check_counters(zero, x.device, 0, "zero")
    rows, d = x.reshape(-1, x.shape[-1]).shape[0], 2 * inv_freq.numel()
    if pos.numel() != 1 or pos.is_floating_point():
        raise ValueError(f"pos must be one integer position; got {tuple(pos.shape)} {pos.dtype}")
    if inv_freq.dim() != 1 or not inv_freq.numel():
        raise ValueError(f"inv_freq must be [head_dim / 2]; got {tuple(inv_freq.shape)}")
    for name, t in (("k_out", k_out), ("v_out", v_out)):
        if t.dtype != x.dtype or t.shape[0] != rows or t.numel() % rows or t.numel() // rows % d:
            raise ValueError(f"{name} must hold whole {d}-wide heads for each of the {rows} rows in {x.dtype}; got "
                             f"{tuple(t.shape)} {t.dtype}")
        _rows(t, rows, name)
    kv = k_out.numel() // rows
    if v_out.numel() != k_out.numel() or (weight.shape[0] - 2 * kv) % d or weight.shape[0] <= 2 * kv:
        raise ValueError(f"weight's {weight.shape[0]} rows must be whole {d}-wide q heads then {kv} key and {kv} "
                         "value rows")
    return weight.shape[0] - 2 * kv


def _rows(t: torch.Tensor, rows: int, name: str) -> torch.Tensor:
    """t as [rows, -1] without a copy (the kernel writes into it), each row unit-stride."""
    try:
        flat = t.view(rows, -1)
    except RuntimeError:
        flat = None
    if flat is None or flat.stride(-1) != 1:
        raise ValueError(f"{name} must have contiguous rows: the kernel writes into it")
    return flat


def _slots(k_out: torch.Tensor, v_out: torch.Tensor, slot: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensors the kernel writes the key and value into: k_out and v_out, or their slot-th entries."""
    if slot is None:
        return k_out, v_out
    if k_out.dim() < 2 or v_out.shape != k_out.shape or not 0 <= slot < k_out.shape[0]:
        raise ValueError(f"slot {slot} must index the stacked k_out and v_out's first dimension; got "
                         f"{tuple(k_out.shape)} and {tuple(v_out.shape)}")
    return k_out[slot], v_out[slot]


def _fake_qkv(x, weight, norm_weight, eps, pos, inv_freq, k_out, v_out, prefetch=None, prefetch_fraction=1.0,  # noqa: ANN001, ANN202
              zero=None, pdl=False, slot=None):
    k, v = _slots(k_out, v_out, slot)
    return x.new_empty((*x.shape[:-1], _check_qkv(x, weight, norm_weight, pos, inv_freq, k, v, zero)))


def gemv_qkv(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None, eps: float, pos: torch.Tensor,
             inv_freq: torch.Tensor, k_out: torch.Tensor, v_out: torch.Tensor,
             prefetch: torch.Tensor | None = None, prefetch_fraction: float = 1.0,
             zero: torch.Tensor | None = None, pdl: bool = False, slot: int | None = None) -> torch.Tensor:
    """gemv_qkv_op with its defaults (the op's schema has none: see decode.decode_attention_op)."""
    return gemv_qkv_op(x, weight, norm_weight, eps, pos, inv_freq, k_out, v_out, prefetch, prefetch_fraction, zero, pdl,
                       slot)


@register_op("kpt::gemv_qkv", _fake_qkv, mutates=("k_out", "v_out", "zero"))
def gemv_qkv_op(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None, eps: float,
                pos: torch.Tensor, inv_freq: torch.Tensor, k_out: torch.Tensor, v_out: torch.Tensor,
                prefetch: torch.Tensor | None, prefetch_fraction: float,
                zero: torch.Tensor | None, pdl: bool, slot: int | None) -> torch.Tensor:
    """A decode layer's q/k/v projection in one kernel (reference_qkv()'s result): rmsnorm(x) (where norm_weight
    is given) times the concatenated [q; k; v] weight, the rotary embedding at position pos applied to the q and k
    heads (each program takes a head's rotation pairs side by side and computes their cos and sin), the key and
    value columns written into k_out and v_out, or with slot into k_out[slot] and v_out[slot] (a decode step's
    stacked new cache entries, passed whole: compiled, a kernel writing into a slice is written into a clone
    Inductor copies back, and tensors of each layer's own stacked after cost a copy launch each: 44 of the 1B
    Llama's step on the H100, 2026-12-05), the query columns returned; prefetch and pdl as gemv_op's. zero: an
    int32 vector set to 0 on the way (the counters the layer's decode attention then runs in one launch with,
    kernels/decode.py)."""
    k, v = _slots(k_out, v_out, slot)
    q_cols = _check_qkv(x, weight, norm_weight, pos, inv_freq, k, v, zero)
    x2 = x.reshape(-1, x.shape[-1])
    rows = x2.shape[0]
    # The kernel writes into k_out and v_out whole (with slot, from row slot * rows on): no view of a slot.
    whole = rows * (len(k_out) if slot is not None else 1)
    k2, v2, row0 = _rows(k_out, whole, "k_out"), _rows(v_out, whole, "v_out"), (slot or 0) * rows
    out = x.new_empty((rows, q_cols))
    if rows:
        run(launch, x2, weight, weight, weight, weight, out, False, ACTS["none"], False, norm_weight, None, eps,
            (pos, inv_freq, k2, v2), prefetch, prefetch_fraction, zero, pdl, row0)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def rope(y: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin over the last dimension (transformers' Llama; kpt.gpu.models' step)."""
    half = y.shape[-1] // 2
    return y * cos + torch.cat((-y[..., half:], y[..., :half]), dim=-1) * sin


def reference_qkv(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None, eps: float,
                  pos: torch.Tensor, inv_freq: torch.Tensor, kv_cols: int) -> tuple[torch.Tensor, ...]:
    """(q, k, v) as the step computes them: the projection, then cos/sin of pos * inv_freq in fp32 rounded to x's
    dtype, applied per head to q and k."""
    d = 2 * inv_freq.numel()
    y = reference(x, weight, None, norm_weight, None, eps, "none")
    freqs = pos.to(torch.float32).reshape(1) * inv_freq
    emb = torch.cat((freqs, freqs))
    cos, sin = emb.cos().to(y.dtype), emb.sin().to(y.dtype)
    q, k, v = y.split([y.shape[-1] - 2 * kv_cols, kv_cols, kv_cols], dim=-1)
    q, k = (rope(t.unflatten(-1, (-1, d)), cos, sin).flatten(-2) for t in (q, k))
    return q, k, v
