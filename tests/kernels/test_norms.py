"""kernels/norms.py against its PyTorch reference; every dtype runs in the interpreter (no dot products)."""

from __future__ import annotations

import pytest
import torch

from kernels import norms  # noqa: E402
from tests.kernels.conftest import DEVICE, check_2x

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(3, 97), (2, 5, 123), (4, 1025), (1, 4096)]


def _inputs(shape, dtype, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    x = (torch.randn(shape, generator=g) * 3 + shift).to(DEVICE, dtype)
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(DEVICE, dtype)
    b = (0.1 * torch.randn(n, generator=g)).to(DEVICE, dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [0, 256])  # 0: one pass in registers; 256: the two-pass path for wide rows
def test_rms_norm(shape, dtype, block):
    if block and block >= shape[-1]:
        pytest.skip("row fits in one block: same path as block=0")
    x, w, _ = _inputs(shape, dtype, shape[-1])
    out = norms.rms_norm(x, w, 1e-6, block=block)
    ref32 = norms.rms_norm_reference(x.float(), w.float(), 1e-6)
    lp = None if dtype == torch.float32 else torch.nn.functional.rms_norm(x, (shape[-1],), w, 1e-6)
    check_2x(out, ref32, lp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [0, 256])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(shape, dtype, block, affine):
    if block and block >= shape[-1]:
        pytest.skip("row fits in one block: same path as block=0")
    x, w, b = _inputs(shape, dtype, shape[-1] + 1, shift=20.0)  # a mean far from 0: variance must not cancel
    w, b = (w, b) if affine else (None, None)
    out = norms.layer_norm(x, w, b, 1e-5, block=block)
    f = [t.float() if t is not None else None for t in (x, w, b)]
    ref32 = norms.layer_norm_reference(*f, 1e-5)
    lp = None if dtype == torch.float32 else norms.layer_norm_reference(x, w, b, 1e-5)
    check_2x(out, ref32, lp)


def test_gemma_style_offset():
    x, w, _ = _inputs((3, 97), torch.float32, 1)
    torch.testing.assert_close(norms.rms_norm(x, w, 1e-6, w_offset=1.0),
                               norms.rms_norm_reference(x, w, 1e-6, w_offset=1.0), rtol=1e-6, atol=1e-6)


def test_rejects_wrong_weight():
    with pytest.raises(ValueError, match="normalized dimension"):
        norms.rms_norm(torch.randn(2, 8, device=DEVICE), torch.ones(9, device=DEVICE))


@pytest.mark.parametrize("rms", [True, False])
def test_fixed_warps_is_the_same_kernel(rms):
    x, w, b = _inputs((5, 300), torch.float16, 3)
    bias = None if rms else b
    auto = norms.norm_op(x, w, bias, 1e-5, rms, 0.0, 0)
    for nw in norms.WARPS:
        torch.testing.assert_close(norms.norm_fixed(x, w, bias, 1e-5, rms, nw), auto, rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_warps"):
        norms.norm_fixed(x, w, bias, 1e-5, rms, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 97), (2, 5, 123), (9, 1025), (1, 4096)])  # rows not a multiple of programs
@pytest.mark.parametrize("rms, affine", [(True, True), (False, True), (False, False)])
def test_persistent_kernel_matches_the_reference(shape, dtype, rms, affine):
    """norm_persistent: programs walk rows in a pipelined loop (4 programs under the interpreter, so 7 and 9 rows
    leave some programs a row fewer than others)."""
    x, w, b = _inputs(shape, dtype, shape[-1] + 2, shift=0.0 if rms else 20.0)
    w, b = (w, None if rms else b) if affine else (None, None)
    out = norms.norm_persistent(x, w, b, 1e-5, rms)
    f = [t.float() if t is not None else None for t in (x, w, b)]
    if rms:
        ref32, lp = norms.rms_norm_reference(f[0], f[1], 1e-5), norms.rms_norm_reference(x, w, 1e-5)
    else:
        ref32, lp = norms.layer_norm_reference(*f, 1e-5), norms.layer_norm_reference(x, w, b, 1e-5)
    check_2x(out, ref32, None if dtype == torch.float32 else lp)
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("rms", [True, False])
def test_x_through_l1_is_the_same_kernel(rms):
    """norm_x_l1 (x through L1, the bench's A/B provider) computes what the op computes, on both paths."""
    x, w, b = _inputs((5, 300), torch.float32, 3, shift=0.0 if rms else 20.0)
    b = None if rms else b
    for block in (0, 128):  # one pass, then two
        want = norms.norm_op(x, w, b, 1e-5, rms, 0.0, block)
        if block == 0:
            torch.testing.assert_close(norms.norm_x_l1(x, w, b, 1e-5, rms), want, rtol=0, atol=0)
        check_2x(want, norms.rms_norm_reference(x, w, 1e-5) if rms else norms.layer_norm_reference(x, w, b, 1e-5), None)


def test_persistent_kernel_refuses_rows_wider_than_registers():
    with pytest.raises(ValueError, match="do not fit in registers"):
        norms.norm_persistent(torch.randn(2, norms.MAX_FUSED + 1, device=DEVICE), None, None, 1e-5, True)
    with pytest.raises(ValueError, match="normalized dimension"):
        norms.norm_persistent(torch.randn(2, 8, device=DEVICE), torch.ones(9, device=DEVICE), None, 1e-5, True)
