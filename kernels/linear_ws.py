"""Fused linear + bias + activation (and SwiGLU) for Hopper (sm_90) in Gluon: a persistent, warp-specialized GEMM
whose epilogue runs while the other warpgroup's main loop keeps the tensor cores busy (CUTLASS's "ping-pong"
schedule), which linear_act.py's Triton kernels cannot express. The activation's cost is what the issue's 1.1x
over cuBLAS + a separate activation pays for: with the epilogue hidden, the fused kernel costs one GEMM.

One program per SM walks output tiles p, p + P, p + 2P, ... (grouped so GROUP_M row blocks share a column block
while it is in L2):
  * a loader partition (one warp, 24 registers) copies each tile's x and weight blocks, k-step by k-step, into a
    ring of STAGES shared-memory buffers by TMA (ready barriers completed by the copies' bytes, empty barriers the
    consuming warpgroup arrives on once its wgmma has read the buffer);
  * two consumer warpgroups (240 registers) take the program's tiles in turn (even, odd): one runs its main loop
    of asynchronous wgmmas (one in flight, the buffer before it released) while the other adds the bias, applies
    the activation on the fp32 accumulator and stores its tile by TMA. The ring hands out k-steps in tile order,
    and the two main loops take turns (a pair of mbarriers), so each waits only on k-steps the other is done with.
    With cooperative tiles (COOP: SwiGLU's default) both warpgroups work on every tile instead, each on its own 128
    of the tile's 256 rows.

Tiles: 128 x 128 for act(x W^T + b) (a 128-row accumulator is 128 fp32 registers a thread), 128 x 64 for SwiGLU
(two accumulators, silu(x Wg^T + bg) * (x Wu^T + bu)). x [M, K] and the weights [N, K] as nn.Linear keeps them,
fp16 or bf16, K and N multiples of 8 (TMA's 16-byte strides); edges are TMA's (zero-filled loads, clipped stores).
supports() says whether a call is one. Gluon has no interpreter: results are checked on the GPU suite, the
compiled form on the CPU (python -m kernels.cubin --linear-ws).
"""

from __future__ import annotations

import torch
import triton.language as tl

from ._common import ACTS
from ._gluon import (
    constexpr_function,
    descriptor,
    fence_async_shared,
    gl,
    gluon,
    hopper,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

BLOCK_M = 128
BLOCK_N = 128  # 64 for SwiGLU (two accumulators)
BLOCK_K = 64
STAGES = 4  # ring buffers: 32 KB each (x 16 KB + weight 16 KB, or + both gated halves of 8 KB)
# The deepest rings that fit an H100/H200 program's 227 KB of shared memory beside the two output tiles (sm_90
# cubins: 229656 bytes at 5 for linear + act, 229704 at 6 for SwiGLU; kernels.cubin --linear-ws). kernels.bench's
# kpt_ws_deep rows time them against STAGES before either becomes the default.
DEEP_STAGES = {False: 5, True: 6}  # gated -> stages
DEEP = False  # the default ring is DEEP_STAGES's (square tiles only): off until measured faster
GROUP_M = 8
# A consumer warpgroup's tile as 64 rows by 256 weight rows (128 by 128 for SwiGLU's two weights) instead of 128 by
# 128 (64 by 64): the same 128 accumulator registers a thread, one m64n256k16 wgmma a k16 step where the square tile
# issues two m64n128k16 that read the weight block twice from shared memory (17% fewer operand bytes a FLOP, 25% more
# of x and the weight through TMA a tile). kernels.bench's kpt_ws_wide rows time it before it becomes the default.
TILE = {False: (BLOCK_M, BLOCK_N), True: (BLOCK_M, BLOCK_N // 2)}  # gated -> (rows, each weight's rows): square
WIDE_TILE = {False: (64, 256), True: (64, 128)}  # gated -> (rows, each weight's rows)
WIDE = False  # linear_act's default tile is WIDE_TILE's: off until measured faster (it fits 4 buffers, not DEEP_STAGES)
# Cooperative tiles (COOP): both consumer warpgroups on one tile of 2 x 128 rows, each its own 128 rows against the same
# weight block, instead of taking tiles in turn. A k64 step then loads 48 KB for 4.2 MFLOP instead of 32 KB for 2.1:
# a third fewer bytes from L2 a FLOP. At 650 TFLOP/s the square ping-pong tile needs about 10 TB/s from L2, near what
# the H100's L2 delivers, and CUTLASS's fastest Hopper GEMMs cut that share the same way (or with TMA multicast,
# which Triton 3.6's Gluon lacks). The cost: the epilogue no longer runs under the other warpgroup's main loop. Tiles
# twice the size would fill the last wave less evenly (4096 x 11008: 1376 tiles, 10.42 waves on 132 SMs): only the
# whole waves' tiles are shared (schedule()); the rest run as two half tiles each, in turn as without COOP, so the
# last wave takes a half tile's time. On the H100 (2026-12-06, kernels-quick-linear-coop-h100.md, 4096x4096 -> 11008
# bf16, one run): the GEMM alone 0.5695 ms cooperative against 0.5792 in ping-pong (L2's bytes did hold it back), and
# SwiGLU 1.104 against 1.1685 (cuBLAS + act 1.2735), but linear + SiLU 0.6068 against 0.5874 and linear + GELU
# 0.6373 against 0.6047: with one weight the exposed epilogue costs more than the saved bytes gain; SwiGLU does twice
# the work an output element, so its epilogue weighs half as much.
COOP_STAGES = {False: 3, True: 4}  # gated -> ring buffers of 48 KB that fit beside the output tiles
COOP = {False: False, True: True}  # gated -> cooperative tiles by default
# GELU's epilogue in fewer instructions (FAST_GELU): erf by Abramowitz and Stegun's 7.1.26 (one reciprocal, one
# exp2, five FMAs; erf's absolute error <= 1.5e-7, about one fp32 ulp of 1 + erf) where libdevice's erff takes about
# 25 instructions an element (two polynomials chosen per element): the sm_90 PTX of the whole kernel goes from
# 11711 to 6604 instructions (kernels.cubin --linear-ws). The erf epilogue made linear + GELU 0.065-0.085 ms slower
# than linear + SiLU on the H200 although the other warpgroup's main loop should hide it; on the H100
# (2026-12-05, kernels-quick-linear-ws-h100.md, 4096x4096 -> 11008 bf16) this form took it from 0.6759 to 0.6044 ms
# (the same GEMM without an activation: 0.5747; cuBLAS + GELU 0.6338), the same largest difference from cuBLAS +
# GELU (0.03125, one bf16 unit).
FAST_GELU = True
# Abramowitz and Stegun 7.1.26: erf(z) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2), t = 1 / (1 + p z)
# (constexprs: a jit function reads module globals only as such)
ERF_P = tl.constexpr(0.3275911)
ERF_A1, ERF_A2, ERF_A3, ERF_A4, ERF_A5 = (tl.constexpr(a) for a in (0.254829592, -0.284496736, 1.421413741,
                                                                    -1.453152027, 1.061405429))


def ring(gated: bool, square: bool, stages: int | None = None, coop: bool = False) -> int:
    """The ring's buffers a launch uses: stages if given, else COOP_STAGES's for cooperative tiles, else DEEP_STAGES's
    where DEEP is on and the tile square (the wide tile fits only STAGES), else STAGES."""
    if stages:
        return stages
    if coop:
        return COOP_STAGES[gated]
    return DEEP_STAGES[gated] if DEEP and square else STAGES


def schedule(tiles: int, sms: int, coop: bool) -> tuple[int, int]:
    """(programs, full) for a launch of `tiles` tiles on `sms` SMs. Ping-pong: one program an SM (fewer where there
    are fewer tiles), full unused (0). COOP: programs for up to two half tiles each, and `full`, the tiles of the
    whole waves that both warpgroups share; each remaining tile runs as two half tiles on two programs, so the last
    wave takes a half tile's time, not a whole one's (4096 x 11008 on 132 SMs: 1320 tiles shared, 56 split)."""
    if not coop:
        return min(tiles, sms), 0
    programs = min(2 * tiles, sms)
    return programs, tiles // programs * programs


def plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, weight2: torch.Tensor | None,
          act: str, bias2: torch.Tensor | None = None) -> bool:
    """Whether the call is one this kernel computes (module doc): 2-D x, nn.Linear weights, 16-byte strides."""
    ws = [weight] + ([weight2] if weight2 is not None else [])
    return (x.dim() == 2 and x.dtype in (torch.float16, torch.bfloat16) and act in ACTS
            and (weight2 is None or act == "silu")
            and all(w.dim() == 2 and w.dtype == x.dtype and w.shape == weight.shape and w.is_contiguous() for w in ws)
            and weight.shape[1] == x.shape[1] and x.is_contiguous() and x.shape[0] > 0
            and x.shape[1] % 8 == 0 and weight.shape[0] % 8 == 0
            and all(b is None or (b.shape == (weight.shape[0],) and b.is_contiguous()) for b in (bias, bias2)))


def supports(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, weight2: torch.Tensor | None,
             act: str, bias2: torch.Tensor | None = None) -> bool:
    """Whether linear_act(...) can run here: Gluon, an sm_90 device, and plain()."""
    return hopper(x) and plain(x, weight, bias, weight2, act, bias2)


if gluon is not None:

    @constexpr_function
    def _acc_layout(n):
        """A warpgroup's wgmma accumulator layout for a [BLOCK_M, n] tile (4 warps along M, M repeated)."""
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, n, 16])

    @gluon.jit
    def _tile(t, n_m, n_n, GROUP: gl.constexpr):
        """(row block, column block) of tile t in grouped order."""
        per_group = GROUP * n_n
        first_m = (t // per_group) * GROUP
        size = gl.minimum(n_m - first_m, GROUP)
        return first_m + (t % per_group) % size, (t % per_group) // size

    @gluon.jit
    def _turn_tile(r, full, n_m, n_n, BM: gl.constexpr, GROUP: gl.constexpr, COOP: gl.constexpr):
        """(first row, column block) of the tile taken in turn r: tile r, or with COOP half tile r, row block r % 2
        of tile full + r // 2."""
        if COOP:
            pid_m, pid_n = _tile(full + r // 2, n_m, n_n, GROUP)
            return (pid_m * 2 + r % 2) * BM, pid_n
        pid_m, pid_n = _tile(r, n_m, n_n, GROUP)
        return pid_m * BM, pid_n

    @gluon.jit
    def _fill(x_desc, w_desc, w2_desc, x_smem, w_smem, w2_smem, ready, empty, c, row, last, col, kk,
              GATED: gl.constexpr, STAGES: gl.constexpr, PARTS: gl.constexpr, SLOTS: gl.constexpr,
              CLAMP: gl.constexpr):
        """k-step kk into ring buffer s = c % STAGES once it is free: PARTS x blocks of rows from `row` (CLAMP: each
        at most `last`) into x_smem buffers s * SLOTS + part, and the weight blocks at rows `col`."""
        BM: gl.constexpr = x_desc.block_type.shape[0]
        BK: gl.constexpr = x_desc.block_type.shape[1]
        nbytes: gl.constexpr = x_desc.block_type.nbytes * PARTS + w_desc.block_type.nbytes * (2 if GATED else 1)
        s = c % STAGES
        mbarrier.wait(empty.index(s), ((c // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(s), nbytes)
        for h in gl.static_range(PARTS):
            r = row + h * BM
            if CLAMP:
                r = gl.minimum(r, last)
            tma.async_copy_global_to_shared(x_desc, [r, kk * BK], ready.index(s), x_smem.index(s * SLOTS + h))
        tma.async_copy_global_to_shared(w_desc, [col, kk * BK], ready.index(s), w_smem.index(s))
        if GATED:
            tma.async_copy_global_to_shared(w2_desc, [col, kk * BK], ready.index(s), w2_smem.index(s))

    @gluon.jit
    def _load(x_desc, w_desc, w2_desc, x_smem, w_smem, w2_smem, ready, empty, M, n_m, n_n, k_steps, full, turns,
              GATED: gl.constexpr, STAGES: gl.constexpr, GROUP: gl.constexpr, COOP: gl.constexpr):
        """The loader: every k-step of this program's tiles, in order, into the ring. COOP: the first `full` tiles
        (whole waves) with both halves of their x rows (x_smem buffers 2 s and 2 s + 1), then the rest as half tiles
        of one 128-row block each (buffer 2 s). A row block wholly past M (a last tile's second half) loads the last
        row block instead, a whole copy's bytes as the ready barrier expects; nothing of it is stored."""
        BM: gl.constexpr = x_desc.block_type.shape[0]
        BN: gl.constexpr = w_desc.block_type.shape[0]
        last = (gl.cdiv(M, BM) - 1) * BM  # the last row block (COOP's clamp)
        c = 0
        if COOP:
            for t in range(gl.program_id(0), full, gl.num_programs(0)):
                pid_m, pid_n = _tile(t, n_m, n_n, GROUP)
                for kk in range(k_steps):
                    _fill(x_desc, w_desc, w2_desc, x_smem, w_smem, w2_smem, ready, empty, c, pid_m * 2 * BM, last,
                          pid_n * BN, kk, GATED, STAGES, 2, 2, True)
                    c += 1
        for r in range(gl.program_id(0), turns, gl.num_programs(0)):
            row, pid_n = _turn_tile(r, full, n_m, n_n, BM, GROUP, COOP)
            for kk in range(k_steps):
                _fill(x_desc, w_desc, w2_desc, x_smem, w_smem, w2_smem, ready, empty, c, row, last, pid_n * BN, kk,
                      GATED, STAGES, 1, 2 if COOP else 1, COOP)
                c += 1

    @gluon.jit
    def _activate(x, ACT: gl.constexpr, FAST_GELU: gl.constexpr):
        """x in fp32; ACT is one of _common.ACTS (none 0, gelu 1, gelu_tanh 2, silu 3, relu 4); FAST_GELU: GELU by
        _gelu_fast."""
        if ACT == 1:
            if FAST_GELU:
                x = _gelu_fast(x)
            else:
                x = 0.5 * x * (1.0 + gl.erf(x * 0.7071067811865476))
        elif ACT == 2:  # 0.5 x (1 + tanh(u)) = x sigmoid(2u)
            x = x / (1.0 + gl.exp(-1.5957691216057308 * (x + 0.044715 * x * x * x)))
        elif ACT == 3:
            x = x / (1.0 + gl.exp(-x))
        elif ACT == 4:
            x = gl.maximum(x, 0.0)
        return x

    @gluon.jit
    def _gelu_fast(x):
        """x Phi(x) with erf by ERF_P and ERF_A1-5 (FAST_GELU's note): for z = |x| / sqrt(2), q = 1 - erf(z) and GELU is
        x (1 - q / 2) where x >= 0, x q / 2 where x < 0 (no cancellation in 1 + erf(-z))."""
        z = gl.abs(x) * 0.7071067811865476
        t = 1.0 / (1.0 + ERF_P * z)
        poly = t * (ERF_A1 + t * (ERF_A2 + t * (ERF_A3 + t * (ERF_A4 + t * ERF_A5))))
        h = 0.5 * poly * gl.exp2(-1.4426950408889634 * z * z)
        return x * gl.where(x >= 0.0, 1.0 - h, h)

    @gluon.jit
    def _mma(x_smem, w_smem, w2_smem, ready, empty, c, k_steps, slot, acc, acc2,
             GATED: gl.constexpr, STAGES: gl.constexpr, SLOTS: gl.constexpr, RELEASE: gl.constexpr):
        """A tile's main loop from ring position c: asynchronous wgmmas on x buffer s * SLOTS + slot and the weight
        buffers s, one k-step in flight, each buffer released (RELEASE arrivals) once the step after it is issued
        and the one before done; the last step's wgmmas are left in flight and its buffer held (_drain)."""
        for kk in range(k_steps):
            s = c % STAGES
            mbarrier.wait(ready.index(s), (c // STAGES) & 1)
            xs = x_smem.index(s * SLOTS + slot)
            tok = warpgroup_mma(xs, w_smem.index(s).permute((1, 0)), acc, is_async=True)
            if GATED:
                tok2 = warpgroup_mma(xs, w2_smem.index(s).permute((1, 0)), acc2, is_async=True)
                acc, acc2 = warpgroup_mma_wait(2, deps=(tok, tok2))  # the step before is done
            else:
                acc = warpgroup_mma_wait(1, deps=(tok,))
            if kk > 0:
                mbarrier.arrive(empty.index((c - 1) % STAGES), count=RELEASE)
            c += 1
        return acc, acc2

    @gluon.jit
    def _drain(acc, acc2, empty, c, GATED: gl.constexpr, STAGES: gl.constexpr, RELEASE: gl.constexpr):
        """The main loop's last wgmmas done and its last buffer (ring position c) released."""
        if GATED:
            acc, acc2 = warpgroup_mma_wait(0, deps=(acc, acc2))
        else:
            acc = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(empty.index(c % STAGES), count=RELEASE)
        return acc, acc2

    @gluon.jit
    def _finish(acc, acc2, out, out_desc, b_ptr, b2_ptr, row, col, M, N, HAS_BIAS: gl.constexpr,
                HAS_BIAS2: gl.constexpr, ACT: gl.constexpr, FAST_GELU: gl.constexpr, GATED: gl.constexpr,
                CHECK: gl.constexpr):
        """Bias, activation (SwiGLU's product) and the store of the tile at (row, col); CHECK: only where row < M
        (COOP's row blocks may lie wholly past M)."""
        BN: gl.constexpr = out.shape[1]
        cols = col + gl.arange(0, BN, layout=gl.SliceLayout(0, acc.type.layout))
        if HAS_BIAS:
            acc += gl.load(b_ptr + cols, mask=cols < N, other=0.0).to(gl.float32)[None, :]
        y = _activate(acc, ACT, FAST_GELU)
        if GATED:
            if HAS_BIAS2:
                acc2 += gl.load(b2_ptr + cols, mask=cols < N, other=0.0).to(gl.float32)[None, :]
            y = y * acc2
        if CHECK:
            if row < M:
                _store(out, y, out_desc, row, col)
        else:
            _store(out, y, out_desc, row, col)

    @gluon.jit
    def _consume(w, x_smem, w_smem, w2_smem, c_smem, ready, empty, turn, out_desc, b_ptr, b2_ptr, M, N, n_m, n_n,
                 k_steps, full, turns, HAS_BIAS: gl.constexpr, HAS_BIAS2: gl.constexpr, ACT: gl.constexpr,
                 FAST_GELU: gl.constexpr, GATED: gl.constexpr, STAGES: gl.constexpr, GROUP: gl.constexpr,
                 COOP: gl.constexpr):
        """Consumer warpgroup w: this program's tiles w, w + 2, ...: main loop, then bias, activation and store.
        The two main loops take turns (turn[w], a fresh barrier's parity 1 letting consumer 0 go first): a consumer
        waits on the ring's ready barriers only for k-steps the other has finished waiting for, so it is never more
        than one phase ahead of a buffer's copies (a wait two phases early would pass on the older phase).
        COOP: first every one of the program's `full` tiles, on its rows w of two (x_smem buffer 2 s + w), both
        consumers releasing each buffer (the empty barriers count two arrivals; no turns: the loader is never more
        than STAGES k-steps ahead of either); then the remaining half tiles in turn as above, each buffer released
        by the one consumer with both arrivals."""
        BM: gl.constexpr = x_smem.shape[1]
        BN: gl.constexpr = w_smem.shape[1]
        layout: gl.constexpr = _acc_layout(BN)
        SLOTS: gl.constexpr = 2 if COOP else 1  # x buffers a stage, and the arrivals that release one
        out = c_smem.index(w)
        c = 0
        if COOP:
            for t in range(gl.program_id(0), full, gl.num_programs(0)):
                pid_m, pid_n = _tile(t, n_m, n_n, GROUP)
                acc, acc2 = _mma(x_smem, w_smem, w2_smem, ready, empty, c, k_steps, w,
                                 gl.zeros([BM, BN], gl.float32, layout), gl.zeros([BM, BN], gl.float32, layout),
                                 GATED, STAGES, 2, 1)
                c += k_steps
                acc, acc2 = _drain(acc, acc2, empty, c - 1, GATED, STAGES, 1)
                _finish(acc, acc2, out, out_desc, b_ptr, b2_ptr, (pid_m * 2 + w) * BM, pid_n * BN, M, N, HAS_BIAS,
                        HAS_BIAS2, ACT, FAST_GELU, GATED, True)
        i = 0
        for r in range(gl.program_id(0), turns, gl.num_programs(0)):
            if i % 2 == w:
                row, pid_n = _turn_tile(r, full, n_m, n_n, BM, GROUP, COOP)
                start = c + i * k_steps
                mbarrier.wait(turn.index(w), ((i // 2) & 1) ^ (1 - w))
                acc, acc2 = _mma(x_smem, w_smem, w2_smem, ready, empty, start, k_steps, 0,
                                 gl.zeros([BM, BN], gl.float32, layout), gl.zeros([BM, BN], gl.float32, layout),
                                 GATED, STAGES, SLOTS, SLOTS)
                mbarrier.arrive(turn.index(1 - w))  # every ready barrier of this tile waited: the other's turn
                acc, acc2 = _drain(acc, acc2, empty, start + k_steps - 1, GATED, STAGES, SLOTS)
                _finish(acc, acc2, out, out_desc, b_ptr, b2_ptr, row, pid_n * BN, M, N, HAS_BIAS, HAS_BIAS2, ACT,
                        FAST_GELU, GATED, COOP)
            i += 1
        tma.store_wait(0)

    @gluon.jit
    def _store(out, y, out_desc, row, col):
        """The tile y through `out` (shared memory) to the output at (row, col) by TMA."""
        tma.store_wait(0)  # this warpgroup's previous tile has left `out`
        out.store(y.to(out.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(out_desc, [row, col], out)

    @gluon.jit
    def _linear_ws_kernel(x_desc, w_desc, w2_desc, out_desc, b_ptr, b2_ptr, M, N, K, full,
                          HAS_BIAS: gl.constexpr, HAS_BIAS2: gl.constexpr, ACT: gl.constexpr, FAST_GELU: gl.constexpr,
                          GATED: gl.constexpr, STAGES: gl.constexpr, GROUP: gl.constexpr, COOP: gl.constexpr,
                          num_warps: gl.constexpr):
        BM: gl.constexpr = x_desc.block_type.shape[0]
        BK: gl.constexpr = x_desc.block_type.shape[1]
        BN: gl.constexpr = w_desc.block_type.shape[0]
        HALVES: gl.constexpr = 2 if COOP else 1  # a tile's rows in consumer tiles
        n_m = gl.cdiv(M, BM * HALVES)
        n_n = gl.cdiv(N, BN)
        k_steps = gl.cdiv(K, BK)
        turns = n_m * n_n if not COOP else 2 * (n_m * n_n - full)  # the tiles taken in turn (COOP: half tiles)
        x_smem = gl.allocate_shared_memory(x_desc.dtype, [STAGES * HALVES, BM, BK], x_desc.layout)  # COOP: 2 a stage
        w_smem = gl.allocate_shared_memory(w_desc.dtype, [STAGES, BN, BK], w_desc.layout)
        w2_smem = gl.allocate_shared_memory(w2_desc.dtype, [STAGES if GATED else 1, BN, BK], w2_desc.layout)
        c_smem = gl.allocate_shared_memory(out_desc.dtype, [2, BM, BN], out_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(STAGES):
            mbarrier.init(ready.index(s), count=1)
            mbarrier.init(empty.index(s), count=HALVES)
        for w in gl.static_range(2):
            mbarrier.init(turn.index(w), count=1)
        gl.warp_specialize([
            (_consume, (0, x_smem, w_smem, w2_smem, c_smem, ready, empty, turn, out_desc, b_ptr, b2_ptr, M, N, n_m, n_n,
                        k_steps, full, turns, HAS_BIAS, HAS_BIAS2, ACT, FAST_GELU, GATED, STAGES, GROUP, COOP)),
            (_consume, (1, x_smem, w_smem, w2_smem, c_smem, ready, empty, turn, out_desc, b_ptr, b2_ptr, M, N, n_m, n_n,
                        k_steps, full, turns, HAS_BIAS, HAS_BIAS2, ACT, FAST_GELU, GATED, STAGES, GROUP, COOP)),
            (_load, (x_desc, w_desc, w2_desc, x_smem, w_smem, w2_smem, ready, empty, M, n_m, n_n, k_steps, full,
                     turns, GATED, STAGES, GROUP, COOP)),
        ], [4, 1], [240, 24])


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, act: str = "gelu",
               weight2: torch.Tensor | None = None, bias2: torch.Tensor | None = None,
               fast_gelu: bool | None = None, stages: int | None = None,
               tile: tuple[int, int] | None = None, coop: bool | None = None) -> torch.Tensor:
    """act(x W^T + b), or with weight2 silu(x W^T + b) * (x W2^T + b2), for a call supports() accepts:
    linear_act.reference's semantics (the pre-activation in fp32, rounded once at the store). fast_gelu: GELU
    by FAST_GELU's form (None: the module's FAST_GELU); stages: the ring's buffers (None: ring()'s default); tile: a
    consumer warpgroup's (rows, weight rows) (None: TILE's where cooperative, else WIDE_TILE's where WIDE is on, else
    TILE's); coop: cooperative tiles (None: COOP's for the form)."""
    m, n = x.shape[0], weight.shape[0]
    gated = weight2 is not None
    coop = COOP[gated] if coop is None else coop
    bm, bn = tile or (WIDE_TILE if WIDE and not coop else TILE)[gated]
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    x_desc, out_desc = descriptor(x, [bm, BLOCK_K]), descriptor(out, [bm, bn])
    w_desc = descriptor(weight, [bn, BLOCK_K])
    w2_desc = descriptor(weight2, [bn, BLOCK_K]) if gated else w_desc
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    programs, full = schedule(-(-m // (bm * (2 if coop else 1))) * -(-n // bn), sms, coop)
    b = bias if bias is not None else out
    _linear_ws_kernel[(programs,)](x_desc, w_desc, w2_desc, out_desc, b, bias2 if bias2 is not None else b, m, n,
                                   x.shape[1], full, HAS_BIAS=bias is not None, HAS_BIAS2=bias2 is not None,
                                   ACT=ACTS[act],
                                   FAST_GELU=FAST_GELU if fast_gelu is None else fast_gelu,
                                   GATED=gated, STAGES=ring(gated, bm == BLOCK_M, stages, coop), GROUP=GROUP_M,
                                   COOP=coop, num_warps=4)
    return out


def flops(x: torch.Tensor, weight: torch.Tensor, gated: bool) -> float:
    return 2.0 * x.shape[0] * x.shape[1] * weight.shape[0] * (2 if gated else 1)
