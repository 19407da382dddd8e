"""kernels/linear_ws.py on the CPU: which calls it takes (the rest stay with kernels/linear_act.py). Gluon has no
interpreter: results are checked on the GPU suite (test_gpu.py), the compiled form in test_cubin.py."""

from __future__ import annotations

import pytest
import torch

from kernels import linear_ws
from kernels._gluon import SHARED_BYTES


def _call(m=256, k=512, n=1024, dtype=torch.bfloat16, bias=True, gated=False):  # noqa: ANN001, ANN202
    x = torch.empty(m, k, dtype=dtype, device="meta")
    w = torch.empty(n, k, dtype=dtype, device="meta")
    b = torch.empty(n, dtype=dtype, device="meta") if bias else None
    return x, w, b, (torch.empty(n, k, dtype=dtype, device="meta") if gated else None)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu", "relu", "none"])
@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"m": 1}, {"m": 1000, "n": 520}, {"dtype": torch.float16}])
def test_plain_calls_are_taken(kw, act):
    assert linear_ws.plain(*_call(**kw), act)


def test_swiglu_is_taken_with_silu_only():
    assert linear_ws.plain(*_call(gated=True), "silu")
    assert not linear_ws.plain(*_call(gated=True), "gelu")


@pytest.mark.parametrize("kw", [{"k": 100}, {"n": 1001}, {"dtype": torch.float32}, {"m": 0}])
def test_other_calls_stay_with_the_triton_kernel(kw):
    assert not linear_ws.plain(*_call(**kw), "gelu")


def test_strided_x_unknown_act_and_cpu_calls_are_not_taken():
    x, w, b, _ = _call()
    assert not linear_ws.plain(x.t().contiguous().t(), w, b, None, "gelu")
    assert not linear_ws.plain(x, w, b, None, "tanh")
    cpu = [torch.zeros(t.shape, dtype=t.dtype) for t in (x, w, b)]
    assert linear_ws.plain(*cpu, None, "gelu") and not linear_ws.supports(*cpu, None, "gelu")


def test_flops_count_both_gemms_of_swiglu():
    x, w, _, _ = _call(m=4, k=8, n=16)
    assert linear_ws.flops(x, w, False) == 2 * 4 * 8 * 16 == linear_ws.flops(x, w, True) / 2


def test_fast_gelu_formula_is_at_least_as_accurate_as_torchs_fp32_gelu():
    """FAST_GELU's erf (Abramowitz and Stegun 7.1.26 with linear_ws's constants), as _gelu_fast computes it, here in
    fp32 torch: within 5e-7 of the float64 GELU over [-12, 12] (torch's own fp32 GELU: about 1.2e-6), rounded to
    bf16 or fp16 at most one unit off the exactly rounded value down to x = -6 (GELU about -6e-9), and within 0.5%
    of it there, where torch's fp32 form (1 + erf cancels) is off by 23% at x = -5 (the kernel itself: test_gpu.py)."""
    x = torch.linspace(-12, 12, 400_001)
    z = x.abs() * 0.7071067811865476
    t = 1.0 / (1.0 + linear_ws.ERF_P.value * z)
    a1, a2, a3, a4, a5 = (c.value for c in (linear_ws.ERF_A1, linear_ws.ERF_A2, linear_ws.ERF_A3, linear_ws.ERF_A4,
                                             linear_ws.ERF_A5))
    h = 0.5 * t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))) * torch.exp2(-1.4426950408889634 * z * z)
    y = x * torch.where(x >= 0, 1.0 - h, h)
    exact = 0.5 * x.double() * torch.special.erfc(-x.double() / 2 ** 0.5)  # no cancellation in the tail
    assert (y.double() - exact).abs().max() < 5e-7
    near = x >= -6
    for dtype in (torch.bfloat16, torch.float16):
        ulp = torch.finfo(dtype).eps * exact.abs().to(dtype).double().clamp(min=torch.finfo(dtype).tiny)
        assert ((y.to(dtype).double() - exact.to(dtype).double()).abs() <= ulp)[near].all(), dtype
    tail = near & (x < 0)
    assert ((y.double() - exact).abs() / exact.abs())[tail].max() < 5e-3


def test_the_ring_is_deep_only_for_square_tiles_where_asked(monkeypatch):
    """linear_ws.ring: an explicit depth wins; otherwise STAGES, or DEEP_STAGES's once DEEP is on, but never for the
    wide tile (its output tiles leave room for STAGES buffers only)."""
    assert linear_ws.ring(False, True) == linear_ws.STAGES and linear_ws.ring(True, False, 3) == 3
    monkeypatch.setattr(linear_ws, "DEEP", True)
    assert [linear_ws.ring(g, True) for g in (False, True)] == [linear_ws.DEEP_STAGES[False], linear_ws.DEEP_STAGES[True]]
    assert linear_ws.ring(False, False) == linear_ws.STAGES


def test_cooperative_tiles_take_their_own_ring_unless_a_depth_is_asked():
    """linear_ws.ring for COOP's tiles: COOP_STAGES (48 KB buffers: fewer fit), DEEP or not; an explicit depth wins."""
    assert [linear_ws.ring(g, True, coop=True) for g in (False, True)] == [linear_ws.COOP_STAGES[False],
                                                                          linear_ws.COOP_STAGES[True]]
    assert linear_ws.ring(True, True, 2, coop=True) == 2
    assert all(s * 49152 + 2 * 128 * linear_ws.TILE[g][1] * 2 <= SHARED_BYTES
               for g, s in linear_ws.COOP_STAGES.items())


@pytest.mark.parametrize("tiles,sms", [(1376, 132), (264, 132), (20, 132), (1, 132), (133, 132), (7, 3)])
def test_cooperative_schedule_covers_every_row_block_once(tiles, sms):
    """linear_ws.schedule with COOP: `full` is whole waves of shared tiles, and the rest split into half tiles take
    at most two a program, so the kernel's loops (shared tiles p, p + programs, ... below full; then half tiles
    p, p + programs, ... of the rest) compute each of a tile's two 128-row blocks exactly once."""
    programs, full = linear_ws.schedule(tiles, sms, True)
    assert 0 < programs <= sms and full % programs == 0 and 0 <= tiles - full < programs
    blocks = []
    for p in range(programs):
        blocks += [(t, h) for t in range(p, full, programs) for h in (0, 1)]
        halves = list(range(p, 2 * (tiles - full), programs))
        assert len(halves) <= 2  # one a warpgroup
        blocks += [(full + r // 2, r % 2) for r in halves]
    assert sorted(blocks) == [(t, h) for t in range(tiles) for h in (0, 1)]
    assert linear_ws.schedule(tiles, sms, False) == (min(tiles, sms), 0)
