"""kernels/attention_ws.py on the CPU: which calls it takes (the rest stay with kernels/attention.py). Gluon has no
interpreter: its results are checked on the GPU suite (test_gpu.py) and its compiled form in test_cubin.py."""

from __future__ import annotations

import pytest
import torch

from kernels import attention_ws


def _qkv(b=1, h=8, hkv=2, n=256, nk=None, d=128, dtype=torch.bfloat16):  # noqa: ANN001, ANN202
    q = torch.empty(b, h, n, d, dtype=dtype, device="meta")
    k, v = (torch.empty(b, hkv, n if nk is None else nk, d, dtype=dtype, device="meta") for _ in range(2))
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kw", [{}, {"d": 64}, {"hkv": 8}, {"hkv": 1}, {"dtype": torch.float16}, {"n": 128}])
def test_plain_cases_are_taken(kw, causal):
    assert attention_ws.plain(*_qkv(**kw), causal)


@pytest.mark.parametrize("kw", [{"d": 96}, {"d": 32}, {"n": 200}, {"n": 256, "nk": 384}, {"hkv": 3, "h": 8},
                                {"dtype": torch.float32}, {"n": 128, "nk": 0}])
def test_other_cases_stay_with_the_triton_kernel(kw):
    causal = kw.get("nk") == 384  # unequal lengths: causal aligns bottom-right, not on this kernel's diagonal
    assert not attention_ws.plain(*_qkv(**kw), causal)


def test_non_contiguous_and_cpu_calls_are_not_taken():
    q, k, v = _qkv()
    assert not attention_ws.plain(q.transpose(1, 2).contiguous().transpose(1, 2), k, v, False)
    cpu = [torch.zeros(t.shape, dtype=t.dtype) for t in (q, k, v)]
    assert attention_ws.plain(*cpu, False) and not attention_ws.supports(*cpu, False)


def test_flops_count_the_visible_half_when_causal():
    q, k, _ = _qkv(b=2, h=4, n=256, d=64)
    assert attention_ws.flops(q, k, False) == 4 * 2 * 4 * 256 * 256 * 64 == 2 * attention_ws.flops(q, k, True)


def test_only_eager_calls_on_real_tensors_may_launch_a_gluon_kernel():
    """The ops' "gluon" mode launches the Gluon kernels only where nothing traces the call (Inductor and AOTInductor
    could not embed them): real tensors and parameters yes; fake tensors, or a call under torch.compile, no."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from kernels._common import eager_call

    x = torch.zeros(2)
    assert eager_call(x, None) and eager_call(torch.nn.Parameter(torch.zeros(2)))
    with FakeTensorMode():
        fake = torch.empty(2)
    assert not eager_call(fake)
    seen = []

    def fn(a):  # noqa: ANN001, ANN202
        seen.append(eager_call(a))
        return a + 1

    torch.compile(fn, backend="eager")(x)
    assert seen == [False]


def test_the_ring_is_deep_only_where_asked(monkeypatch):
    """attention_ws.ring: an explicit depth wins; otherwise STAGES, or DEEP_STAGES's for the head dim once DEEP is on
    (attention_split launches through it too)."""
    assert attention_ws.ring(128) == attention_ws.STAGES and attention_ws.ring(64, 5) == 5
    monkeypatch.setattr(attention_ws, "DEEP", True)
    assert [attention_ws.ring(d) for d in (64, 128)] == [attention_ws.DEEP_STAGES[64], attention_ws.DEEP_STAGES[128]]
