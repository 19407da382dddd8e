"""kernels/linear_act.py against its PyTorch reference (interpreter on CPU, the real kernel on CUDA)."""

from __future__ import annotations

import pytest
import torch

from kernels import linear_act  # noqa: E402  (conftest sets TRITON_INTERPRET first)
from tests.kernels.conftest import DEVICE, GEMM_DTYPES, check_2x

SHAPES = [(37, 123, 97), (16, 64, 1025), (1, 200, 48)]  # (M, K, N): odd M/K/N, K tail, one row


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu", "relu", "none"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_act(shape, act, dtype, bias):
    M, K, N = shape
    g = torch.Generator().manual_seed(M * K + N)
    x = torch.randn(M, K, generator=g).to(DEVICE, dtype)
    w = (torch.randn(N, K, generator=g) / K ** 0.5).to(DEVICE, dtype)
    b = torch.randn(N, generator=g).to(DEVICE, dtype) if bias else None
    out = linear_act.linear_act(x, w, b, act)
    assert out.shape == (M, N) and out.dtype == dtype
    ref32 = linear_act.reference(x.float(), w.float(), b.float() if bias else None, act)
    check_2x(out, ref32, None if dtype == torch.float32 else linear_act.reference(x, w, b, act))


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("shape", [(37, 123, 97), (5, 64, 1025)])
@pytest.mark.parametrize("bias", [True, False])
def test_swiglu(shape, dtype, bias):
    M, K, N = shape
    g = torch.Generator().manual_seed(7 + N)
    x = torch.randn(2, M, K, generator=g).to(DEVICE, dtype)  # 3-D input: leading dims are flattened
    wg, wu = ((torch.randn(N, K, generator=g) / K ** 0.5).to(DEVICE, dtype) for _ in range(2))
    bg, bu = (torch.randn(N, generator=g).to(DEVICE, dtype) if bias else None for _ in range(2))
    out = linear_act.swiglu(x, wg, wu, bg, bu)
    assert out.shape == (2, M, N)
    f = [t.float() if t is not None else None for t in (x, wg, bg, wu, bu)]
    ref32 = linear_act.reference(f[0], f[1], f[2], "silu", f[3], f[4])
    check_2x(out, ref32, None if dtype == torch.float32 else linear_act.reference(x, wg, bg, "silu", wu, bu))


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("K, N", [(97, 130), (128, 8)])  # K tail and N edge; whole K chunks, N < BLOCK_N
def test_one_row_runs_the_matrix_vector_kernel(monkeypatch, K, N, bias, dtype):
    """A decode step's row (kernels/gemv.py): the gated form and a plain linear, against the reference."""
    from kernels import gemv

    ran = []
    monkeypatch.setattr(gemv, "run", lambda *a, _run=gemv.run: ran.append(1) or _run(*a))
    g = torch.Generator().manual_seed(K + N)
    x = torch.randn(1, 1, K, generator=g).to(DEVICE, dtype)
    wg, wu = ((torch.randn(N, K, generator=g) / K ** 0.5).to(DEVICE, dtype) for _ in range(2))
    bg, bu = (torch.randn(N, generator=g).to(DEVICE, dtype) if bias else None for _ in range(2))
    f = [t.float() if t is not None else None for t in (x, wg, bg, wu, bu)]
    out = linear_act.swiglu(x, wg, wu, bg, bu)
    assert out.shape == (1, 1, N) and out.dtype == dtype
    check_2x(out, linear_act.reference(f[0], f[1], f[2], "silu", f[3], f[4]),
             None if dtype == torch.float32 else linear_act.reference(x, wg, bg, "silu", wu, bu))
    out = linear_act.linear_act(x[0], wg, bg, "gelu")
    check_2x(out, linear_act.reference(f[0][0], f[1], f[2], "gelu"),
             None if dtype == torch.float32 else linear_act.reference(x[0], wg, bg, "gelu"))
    assert len(ran) == 2
    two = linear_act.linear_act(torch.cat([x[0], x[0]]), wg, bg, "gelu")  # two rows: the GEMM kernel
    assert len(ran) == 2 and torch.equal(two[0], two[1])


def test_gemv_tunes_only_configs_that_fit_the_problem():
    """Past K a chunk is masked-off loads, and each config is a compile: small problems skip the large chunks."""
    from kernels import gemv

    assert gemv._fitting(gemv._GPU, {"N": 512, "K": 5000}) == gemv._GPU  # under 8 MB, K 8192 after rounding: all
    assert [c for c in gemv._GPU if c.kwargs["BLOCK_K"] <= 2048] == gemv._fitting(gemv._GPU, {"N": 1000, "K": 2048})
    rope = gemv._fitting(gemv._GPU, {"N": 1536, "K": 2048}, ROPE=True, HEAD_DIM=64)  # whole rotation pairs a block
    assert rope and all(c.kwargs["BLOCK_N"] >= 2 and 64 % c.kwargs["BLOCK_N"] == 0 for c in rope)
    assert len(rope) > len(gemv.STREAM_CONFIGS)
    chunk = min(c.kwargs["BLOCK_K"] for c in gemv._GPU)
    smallest = [c for c in gemv._GPU if c.kwargs["BLOCK_K"] == chunk]
    assert gemv._fitting(gemv._GPU, {"N": 130, "K": 97}) == smallest
    assert gemv._fitting(gemv._GPU, {"N": 8, "K": 128}) == smallest  # none is as narrow as 8 columns: K decides
    assert [c.kwargs["BLOCK_K"] for c in gemv._fitting(gemv._GPU, {"N": 4096, "K": 1000})] == \
        [c.kwargs["BLOCK_K"] for c in gemv._GPU if c.kwargs["BLOCK_K"] <= 1024]


def test_gemv_tunes_a_streamed_weight_among_the_configs_that_stream_it():
    """From 8 MB of bf16 weight (each of the 1B Llama's decode launches) the pipelined configs alone: most others
    streamed 5-340% slower there, and a pick timed under load or by another benchmarker can land on them."""
    from kernels import gemv

    for n, k, rope in ((2560, 2048, True), (2048, 2048, False), (5632, 2048, False), (2048, 5632, False),
                       (32000, 2048, False)):
        kw = {"ROPE": True, "HEAD_DIM": 64} if rope else {}
        kept = gemv._fitting(gemv._GPU, {"N": n, "K": k}, **kw)
        assert sorted(gemv._form(c) for c in kept) == sorted(gemv.STREAM_CONFIGS), (n, k)
    assert gemv._fitting(gemv._INTERP, {"N": 2048, "K": 2048}) == gemv._INTERP  # none of them: the list as it was


def test_non_contiguous_input():
    x = torch.randn(40, 96, device=DEVICE)[::2, :80]  # row stride 192, 80 columns
    w = torch.randn(33, 80, device=DEVICE) / 9
    torch.testing.assert_close(linear_act.linear_act(x, w, None, "silu"), linear_act.reference(x, w, None, "silu"),
                               rtol=1e-5, atol=1e-5)


def test_rejects_bad_arguments():
    x, w = torch.randn(4, 8, device=DEVICE), torch.randn(3, 8, device=DEVICE)
    with pytest.raises(ValueError, match="activation"):
        linear_act.linear_act(x, w, None, "tanhh")
    with pytest.raises(ValueError, match="does not match"):
        linear_act.linear_act(x, torch.randn(3, 9, device=DEVICE), None, "gelu")
    with pytest.raises(ValueError, match="both biases"):
        linear_act.swiglu(x, w, w, torch.zeros(3, device=DEVICE), None)


def test_warp_specialized_mode_is_not_offered():
    """Triton 3.6's warp-specialized K loop gave wrong SwiGLU results on the H200: the mode is refused, not run."""
    x = torch.randn(4, 8, device=DEVICE)
    with pytest.raises(ValueError, match="mode must be one of"):
        linear_act._run(x, torch.randn(3, 8, device=DEVICE), None, None, None, "gelu", "tma_ws")


@pytest.mark.parametrize("gated", [False, True])
def test_gluon_mode_takes_pointer_loads_where_linear_ws_does_not_run(gated):
    """Off Hopper (and under the interpreter) the "gluon" mode computes what the pointer-load kernel computes."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(37, 120, generator=g).to(DEVICE, torch.float16)
    w, w2 = ((torch.randn(97, 120, generator=g) / 11).to(DEVICE, torch.float16) for _ in range(2))
    w2 = w2 if gated else None
    ptr = linear_act._run(x, w, None, w2, None, "silu", "ptr")
    torch.testing.assert_close(linear_act._run(x, w, None, w2, None, "silu", "gluon"), ptr, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["tma", "persist"])
@pytest.mark.parametrize("gated", [False, True])
def test_descriptor_modes_match_the_reference(mode, gated):
    """x and the weights through tensor descriptors: odd M, N and a K tail (edges read as zeros)."""
    M, K, N = 37, 120, 97
    g = torch.Generator().manual_seed(5)
    x = torch.randn(M, K, generator=g).to(DEVICE, torch.float16)
    w, w2 = ((torch.randn(N, K, generator=g) / K ** 0.5).to(DEVICE, torch.float16) for _ in range(2))
    b, b2 = (torch.randn(N, generator=g).to(DEVICE, torch.float16) for _ in range(2))
    kw = {"weight2": w2, "bias2": b2} if gated else {}
    out = linear_act._run(x, w, b, kw.get("weight2"), kw.get("bias2"), "silu" if gated else "gelu", mode)
    f = {k: t.float() for k, t in kw.items()}
    ref32 = linear_act.reference(x.float(), w.float(), b.float(), "silu" if gated else "gelu", **f)
    check_2x(out, ref32, linear_act.reference(x, w, b, "silu" if gated else "gelu", **kw))
