"""A decode layer's second half at one row in one launch: the output projection adding the residual, gate/up with
the post-attention RMSNorm folded in and silu(gate) * up written once, the down projection adding the residual
(reference() is the definition: what decode_layer.py's three gemv.py launches compute).

Three groups of programs in one grid, each waiting for the one before through a counter: a program loads its
whole weight tile (BLOCK_N rows of K, held in registers) before it waits, so the weights of the next group stream
while the group before finishes, where separate launches leave the memory system idle between them (in the 1B
Llama's step on the H200 the output projection read its 8.4 MB at about 2.0 TB/s and gate/up its 46 MB at 3.5,
2026-12-04). Programs take their group and tile from a ticket (an atomic counter), so a program only ever waits
for tickets drawn before its own, by programs already running: no wait can outlast the GPU's forward progress,
whatever order the hardware starts programs in. The counters (ticket, outputs done, activations done) start at
zero (gemv.gemv_qkv zeroes them in the layer path) and the last program leaves them zero.

Not yet run on a GPU (compiled for sm_90 offline: kernels.cubin --mlp-chain); the layer path takes it where
decode_layer.MLP_CHAIN is set, and bench/decode_mlp.py measures it as fused_layers+chain.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import activate, check_counters, interpreting, launch, register_op

COUNTERS = 4  # ticket, output projection rows done, activation rows done, down rows done
PER_THREAD = 64  # weight elements a thread holds: the warp count grows with the tile


@triton.jit
def _wait(cnt_ptr, target):
    """Waits until *cnt_ptr reaches target. Each look is a scalar acquiring atomic add of 0 (Triton makes it one
    thread's ld.acquire, shared through a CTA barrier: every thread's later loads come after), then a pause, so
    the few hundred programs that may wait at once ask L2 for the counter's line a few times a microsecond, not
    continuously. Returns True; the caller's loads use it (in their mask) so they cannot move above the wait."""
    seen = tl.atomic_add(cnt_ptr, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(cnt_ptr + _pause(seen), 0, sem="acquire", scope="gpu")
    return seen >= target


@triton.jit
def _pause(x):
    """The warp sleeps about 256 ns (nanosleep; never reached under the interpreter, where programs run in ticket
    order and every wait is over when it starts). Returns 0, which the next look's address adds: pure asm that
    comes before it (Inductor's mutation analysis skips only pure asm: _common.py)."""
    return tl.inline_asm_elementwise("nanosleep.u32 256; mov.u32 $0, 0;", "=r,r", [x], dtype=tl.int32, is_pure=True,
                                     pack=1)


@triton.jit
def _signal(cnt_ptr):
    """Counts this program's stores done: every thread's stores before thread 0's release."""
    tl.debug_barrier()
    return tl.atomic_add(cnt_ptr, 1, sem="release", scope="gpu")


@triton.jit
def _mlp_chain_kernel(
    a_ptr,    # [H] the attention output (the output projection's input)
    h_ptr,    # [H] the residual stream before the projection
    wo_ptr,   # [H, H] output projection
    g_ptr,    # [H] post-attention RMSNorm weight
    wg_ptr,   # [N_I, H] gate projection
    wu_ptr,   # [N_I, H] up projection
    wd_ptr,   # [H, N_I] down projection
    h1_ptr,   # [H] workspace: h + Wo a, in the model's dtype
    act_ptr,  # [N_I] workspace: silu(gate) * up, in the model's dtype
    out_ptr,  # [H] h1 + Wd act
    cnt_ptr,  # int32 counters: COUNTERS of them from cnt_ptr + first, zero
    first, H, N_I, eps,
    KH: tl.constexpr, KI: tl.constexpr,  # H and N_I rounded up to powers of two (a tile holds whole rows)
    BN_O: tl.constexpr, BN_GU: tl.constexpr, BN_D: tl.constexpr,  # rows a program of each group takes
    N_COUNTERS: tl.constexpr,  # COUNTERS
):
    eps = tl.cast(eps, tl.float32)  # Inductor passes a float as fp64, and fp64 is catching (kernels.cubin.fp64_rows)
    p_o = tl.cdiv(H, BN_O)
    p_gu = tl.cdiv(N_I, BN_GU)
    p_d = tl.cdiv(H, BN_D)
    cnt_ptr += first
    ticket = tl.atomic_add(cnt_ptr, 1, sem="relaxed", scope="gpu")
    if ticket < p_o:
        out_proj(a_ptr, h_ptr, wo_ptr, h1_ptr, cnt_ptr, 0, cnt_ptr + 1, H, ticket, KH, BN_O, False)
    elif ticket < p_o + p_gu:
        gate_up(g_ptr, wg_ptr, wu_ptr, h1_ptr, act_ptr, cnt_ptr + 1, p_o, cnt_ptr + 2, H, N_I, eps, ticket - p_o, KH,
                BN_GU)
    else:
        down(wd_ptr, h1_ptr, act_ptr, out_ptr, cnt_ptr + 2, p_gu, cnt_ptr + 3, p_d, cnt_ptr, H, N_I,
             ticket - p_o - p_gu, KI, BN_D, N_COUNTERS)


@triton.jit
def out_proj(a_ptr, h_ptr, wo_ptr, h1_ptr, wait_ptr, wait_for, done_ptr, H, tile, KH: tl.constexpr, BN: tl.constexpr,
             WAIT: tl.constexpr):
    """h1 rows [tile * BN, ...) = h + Wo a, counted on done_ptr; with WAIT, a is read once *wait_ptr reaches
    wait_for (other programs of the launch write it)."""
    kh = tl.arange(0, KH)
    kh_ok = kh < H
    rows = tile * BN + tl.arange(0, BN)
    r = rows % H  # rows past the edge re-read a valid row; the store drops them
    w = tl.load(wo_ptr + r[:, None] * H + kh[None, :], mask=kh_ok[None, :], other=0.0)
    if WAIT:
        ready = _wait(wait_ptr, wait_for)
        x = tl.load(a_ptr + kh, mask=kh_ok & ready, other=0.0, cache_modifier=".cg").to(tl.float32)
    else:
        x = tl.load(a_ptr + kh, mask=kh_ok, other=0.0).to(tl.float32)
    y = tl.sum(w.to(tl.float32) * x[None, :], 1) + tl.load(h_ptr + r).to(tl.float32)
    tl.store(h1_ptr + rows, y.to(h1_ptr.dtype.element_ty), mask=rows < H)
    _signal(done_ptr)


@triton.jit
def gate_up(g_ptr, wg_ptr, wu_ptr, h1_ptr, act_ptr, wait_ptr, wait_for, done_ptr, H, N_I, eps, tile,
            KH: tl.constexpr, BN: tl.constexpr):
    """act rows [tile * BN, ...) = silu(n(h1) Wg^T) * n(h1) Wu^T, counted on done_ptr: the weights loaded first,
    h1 once *wait_ptr reaches wait_for (every output projection program has written its rows)."""
    kh = tl.arange(0, KH)
    kh_ok = kh < H
    rows = tile * BN + tl.arange(0, BN)
    r = rows % N_I
    wg = tl.load(wg_ptr + r[:, None] * H + kh[None, :], mask=kh_ok[None, :], other=0.0)
    wu = tl.load(wu_ptr + r[:, None] * H + kh[None, :], mask=kh_ok[None, :], other=0.0)
    gw = tl.load(g_ptr + kh, mask=kh_ok, other=0.0).to(tl.float32)
    ready = _wait(wait_ptr, wait_for)
    x = tl.load(h1_ptr + kh, mask=kh_ok & ready, other=0.0, cache_modifier=".cg").to(tl.float32)  # other SMs wrote it
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / H + eps)
    xn = x * gw
    gate = tl.sum(wg.to(tl.float32) * xn[None, :], 1) * rstd
    up = tl.sum(wu.to(tl.float32) * xn[None, :], 1) * rstd
    y = activate(gate, 3) * up  # SiLU (_common.ACTS), as gemv.py
    tl.store(act_ptr + rows, y.to(act_ptr.dtype.element_ty), mask=rows < N_I)
    _signal(done_ptr)


@triton.jit
def down(wd_ptr, h1_ptr, act_ptr, out_ptr, wait_ptr, wait_for, done_ptr, p_d, cnt_ptr, H, N_I, tile,
         KI: tl.constexpr, BN: tl.constexpr, N_COUNTERS: tl.constexpr):
    """out rows [tile * BN, ...) = h1 + Wd act, once *wait_ptr reaches wait_for (every gate/up program has written
    its rows); the last of the p_d programs to finish (counted on done_ptr) sets the launch's N_COUNTERS counters
    from cnt_ptr back to zero: every ticket is drawn and every wait is over by then."""
    ki = tl.arange(0, KI)
    ki_ok = ki < N_I
    rows = tile * BN + tl.arange(0, BN)
    r = rows % H
    w = tl.load(wd_ptr + r[:, None] * N_I + ki[None, :], mask=ki_ok[None, :], other=0.0)
    ready = _wait(wait_ptr, wait_for)
    x = tl.load(act_ptr + ki, mask=ki_ok & ready, other=0.0, cache_modifier=".cg").to(tl.float32)
    res = tl.load(h1_ptr + r, mask=(r >= 0) & ready, other=0.0, cache_modifier=".cg").to(tl.float32)
    y = tl.sum(w.to(tl.float32) * x[None, :], 1) + res
    tl.store(out_ptr + rows, y.to(out_ptr.dtype.element_ty), mask=rows < H)
    if _signal(done_ptr) == p_d - 1:
        for c in range(N_COUNTERS):
            tl.atomic_xchg(cnt_ptr + c, 0, sem="relaxed", scope="gpu")


def _check(a: torch.Tensor, h: torch.Tensor, wo: torch.Tensor, g: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor,
           wd: torch.Tensor, counters: torch.Tensor, first: int = 0, need: int = COUNTERS) -> None:
    """The operands of one row; counters: `need` of them from first (a whole layer's chain needs more)."""
    H = h.shape[-1]
    if a.numel() != H or h.numel() != H:
        raise ValueError(f"a and h must be one row of {H}: got {tuple(a.shape)} and {tuple(h.shape)}")
    if tuple(wo.shape) != (H, H) or tuple(g.shape) != (H,):
        raise ValueError(f"the output projection must be [{H}, {H}] and the norm weight [{H}]")
    if wg.dim() != 2 or wg.shape[1] != H or wu.shape != wg.shape or tuple(wd.shape) != (H, wg.shape[0]):
        raise ValueError(f"gate/up must be [N_I, {H}] and down [{H}, N_I]; got {tuple(wg.shape)}, {tuple(wu.shape)}, "
                         f"{tuple(wd.shape)}")
    if len({t.dtype for t in (a, h, wo, g, wg, wu, wd)}) != 1:
        raise ValueError("the activations and weights must share one dtype")
    if not all(t.is_contiguous() for t in (wo, wg, wu, wd)):
        raise ValueError("the weights must be contiguous")
    if first < 0:
        raise ValueError(f"counters start at an index >= 0, not {first}")
    check_counters(counters, h.device, first + need)


def _fake(a, h, wo, g, wg, wu, wd, eps, counters, first=0):  # noqa: ANN001, ANN202
    _check(a, h, wo, g, wg, wu, wd, counters, first)
    return torch.empty_like(h, memory_format=torch.contiguous_format)


def _tile(k: int) -> tuple[int, int]:
    """(rows, warps) of a program whose tile holds whole rows of k (padded to a power of two) at PER_THREAD
    elements a thread: two rows where they fit in four warps, else one row over as many warps as it needs."""
    kp = triton.next_power_of_2(k)
    if interpreting():
        return 2, 1
    rows = 2 if 2 * kp <= PER_THREAD * 32 * 4 else 1
    return rows, max(4, rows * kp // (PER_THREAD * 32))


def plan(hidden: int, inter: int, min_rows: int = 1) -> tuple[int, int, int]:
    """(rows a program of a hidden-wide group takes, rows of an intermediate-wide one, warps of the launch): each
    tile held whole (_tile); min_rows for the hidden-wide groups (2 where q/k/v blocks hold rotation pairs)."""
    (bn_h, warps_h), (bn_i, warps_i) = _tile(hidden), _tile(inter)
    return max(bn_h, min_rows), bn_i, max(warps_h, warps_i)


@register_op("kpt::mlp_chain", _fake, mutates=("counters",))
def mlp_chain_op(a: torch.Tensor, h: torch.Tensor, wo: torch.Tensor, g: torch.Tensor, wg: torch.Tensor,
                 wu: torch.Tensor, wd: torch.Tensor, eps: float, counters: torch.Tensor, first: int = 0) -> torch.Tensor:
    _check(a, h, wo, g, wg, wu, wd, counters, first)
    H, N_I = h.shape[-1], wg.shape[0]
    a1, h1_in = a.reshape(H).contiguous(), h.reshape(H).contiguous()
    h1 = torch.empty(H, dtype=h.dtype, device=h.device)
    act = torch.empty(N_I, dtype=h.dtype, device=h.device)
    out = torch.empty(H, dtype=h.dtype, device=h.device)
    bn_h, bn_i, warps = plan(H, N_I)
    programs = triton.cdiv(H, bn_h) + triton.cdiv(N_I, bn_h) + triton.cdiv(H, bn_i)
    launch(_mlp_chain_kernel)[(programs,)](
        a1, h1_in, wo, g, wg, wu, wd, h1, act, out, counters, first, H, N_I, eps,
        KH=triton.next_power_of_2(H), KI=triton.next_power_of_2(N_I), BN_O=bn_h, BN_GU=bn_h, BN_D=bn_i, N_COUNTERS=COUNTERS,
        num_warps=warps)
    return out.reshape(h.shape)


def mlp_chain(a: torch.Tensor, h: torch.Tensor, wo: torch.Tensor, g: torch.Tensor, wg: torch.Tensor,
              wu: torch.Tensor, wd: torch.Tensor, eps: float, counters: torch.Tensor, first: int = 0) -> torch.Tensor:
    """The op: h' = h + a Wo^T; out = h' + (silu(n(h') Wg^T) * n(h') Wu^T) Wd^T with n the RMSNorm of weight g,
    for one row, in one launch; counters[first:first + COUNTERS]: zeroed int32 (left zero)."""
    return mlp_chain_op(a, h, wo, g, wg, wu, wd, eps, counters, first)


def reference(a: torch.Tensor, h: torch.Tensor, wo: torch.Tensor, g: torch.Tensor, wg: torch.Tensor,
              wu: torch.Tensor, wd: torch.Tensor, eps: float) -> torch.Tensor:
    """The three gemv.py references in turn, each rounded to the model's dtype as the layer path rounds them."""
    from .gemv import reference as gemv

    h1 = gemv(a, wo, None, None, h, eps, "none")
    act = gemv(h1, wg, wu, g, None, eps, "silu")
    return gemv(act, wd, None, None, h1, eps, "none")
