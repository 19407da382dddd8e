"""kernels/mlp_chain.py against the three gemv.py launches it replaces (the output projection with the residual,
gate/up with the norm folded in, down with the residual): odd widths, every dtype, counters left zero, bad operands
refused."""

from __future__ import annotations

import pytest
import torch

from kernels import gemv, mlp_chain
from tests.kernels.conftest import DEVICE, GEMM_DTYPES, check_2x


def _operands(H, N_I, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    a, h = (torch.randn(1, 1, H, generator=g) for _ in range(2))
    wo = torch.randn(H, H, generator=g) / H ** 0.5
    gw = 1 + 0.1 * torch.randn(H, generator=g)
    wg, wu = (torch.randn(N_I, H, generator=g) / H ** 0.5 for _ in range(2))
    wd = torch.randn(H, N_I, generator=g) / N_I ** 0.5
    return [t.to(DEVICE, dtype) for t in (a, h, wo, gw, wg, wu, wd)]


@pytest.mark.parametrize("dtype", GEMM_DTYPES)
@pytest.mark.parametrize("H, N_I", [(64, 176), (97, 130), (40, 33)])  # the 1B Llama's ratio; odd widths
def test_one_launch_matches_the_three_it_replaces(H, N_I, dtype):
    ops = _operands(H, N_I, dtype, seed=H + N_I)
    counters = torch.zeros(mlp_chain.COUNTERS + 2, dtype=torch.int32, device=DEVICE)
    counters[0] = 7  # not its own: the chain's counters start at first
    out = mlp_chain.mlp_chain(*ops, 1e-5, counters, 1)
    assert out.shape == ops[1].shape and out.dtype == dtype
    assert counters.tolist() == [7] + [0] * (mlp_chain.COUNTERS + 1)  # its own left zero for the next call
    a, h, wo, gw, wg, wu, wd = ops
    three = gemv.gemv_op(gemv.gemv_op(gemv.gemv_op(a, wo, None, None, h, 1e-5, "none"), wg, wu, gw, None, 1e-5, "silu"),
                         wd, None, None, gemv.gemv_op(a, wo, None, None, h, 1e-5, "none"), 1e-5, "none")
    ref32 = mlp_chain.reference(*(t.float() for t in ops), 1e-5)
    check_2x(out, ref32, None if dtype == torch.float32 else mlp_chain.reference(*ops, 1e-5))
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out, three, rtol=tol, atol=tol)
    torch.testing.assert_close(mlp_chain.mlp_chain(*ops, 1e-5, counters, 1), out, rtol=0, atol=0)  # again: same


def test_bad_operands_are_refused():
    a, h, wo, gw, wg, wu, wd = _operands(32, 48, torch.float32, seed=1)
    zero = torch.zeros(mlp_chain.COUNTERS, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="one row"):
        mlp_chain.mlp_chain(a.expand(1, 2, 32), h, wo, gw, wg, wu, wd, 1e-5, zero)
    with pytest.raises(ValueError, match="gate/up must be"):
        mlp_chain.mlp_chain(a, h, wo, gw, wg, wu[:, :31], wd, 1e-5, zero)
    with pytest.raises(ValueError, match="share one dtype"):
        mlp_chain.mlp_chain(a, h, wo.half(), gw, wg, wu, wd, 1e-5, zero)
    with pytest.raises(ValueError, match="counters must be"):
        mlp_chain.mlp_chain(a, h, wo, gw, wg, wu, wd, 1e-5, zero[:3])
    with pytest.raises(ValueError, match="counters must be"):
        mlp_chain.mlp_chain(a, h, wo, gw, wg, wu, wd, 1e-5, zero, 1)
