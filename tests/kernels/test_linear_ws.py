"""kernels/linear_ws.py on the CPU: which calls it takes (the rest stay with kernels/linear_act.py). Gluon has no
interpreter: results are checked on the GPU suite (test_gpu.py), the compiled form in test_cubin.py."""

from __future__ import annotations

import pytest
import torch

from kernels import linear_ws


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
