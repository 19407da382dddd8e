"""Kernel tests. Without CUDA they run in Triton's interpreter (TRITON_INTERPRET=1, CPU tensors), set here
before kernels/ is imported (triton.jit reads it when a kernel is decorated). Interpreter limits:
tl.dot on bf16 operands is wrong there (numpy has no bf16: the raw bits are multiplied), so the GEMM-based
kernels (linear_act, attention) are checked in fp32 and fp16 on CPU and in bf16 only on the GPU suite;
norms run in all three dtypes."""

from __future__ import annotations

import os
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    if "triton.language" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        # its own jit functions (tl.zeros, ...) were made for the compiler: every interpreted kernel would fail
        raise RuntimeError("triton was imported before the kernel tests could ask for its interpreter: a test "
                           "module collected earlier imports it (or torch's flop counter, or Inductor) at module "
                           "level; import it inside the test, or run with TRITON_INTERPRET=1")
    os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton", reason="triton is not installed (requirements-dev.txt names the pin)")

DEVICE = "cuda" if CUDA else "cpu"
# dtypes whose GEMMs the interpreter computes correctly
GEMM_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])
# fp32 against fp64: both errors are a few ulps of accumulation-order noise, and PyTorch's own error depends
# on the machine's BLAS, so 2x failed on a CI machine (1.31e-6 against 1.19e-6, D=64 with every feature);
# a real kernel bug is orders of magnitude larger
FP32_FACTOR = 4.0


def linear_case(M: int, K: int, N: int, dtype: torch.dtype, act: str) -> tuple:
    """One GPU linear + activation case (act "swiglu": SiLU with the second weight and bias), seeded by M + N:
    (x, w, b, a, w2, b2, ref32, ref_lp), a the kernels' activation and the references linear_act.reference's in fp32
    and in dtype."""
    from kernels import linear_act

    g = torch.Generator(device="cuda").manual_seed(M + N)
    x = torch.randn(M, K, device="cuda", dtype=dtype, generator=g)
    w, w2 = ((torch.randn(N, K, device="cuda", generator=g) / K ** 0.5).to(dtype) for _ in range(2))
    b, b2 = (torch.randn(N, device="cuda", dtype=dtype, generator=g) for _ in range(2))
    a, w2, b2 = ("silu", w2, b2) if act == "swiglu" else (act, None, None)
    f = [t.float() if t is not None else None for t in (x, w, b, w2, b2)]
    ref32 = linear_act.reference(f[0], f[1], f[2], a, f[3], f[4])
    return x, w, b, a, w2, b2, ref32, linear_act.reference(x, w, b, a, w2, b2)


def check_2x(out: torch.Tensor, ref32: torch.Tensor, ref_lp: torch.Tensor | None,
             factor: float = 2.0) -> tuple[float, float]:
    """flash-attention's rule: our error vs the fp32 reference is at most 2x PyTorch's own low-precision
    run's error (for fp32 inputs, ref_lp is None and the bound is a few fp32 ulps of the output scale).
    One precision up (fp32 output against fp64, PyTorch's fp32 run as ref_lp) callers pass FP32_FACTOR."""
    err = (out.float() - ref32.float()).abs().max().item()
    scale = ref32.float().abs().max().item() or 1.0
    if ref_lp is None:
        bound = 8 * torch.finfo(torch.float32).eps * scale
    else:
        base = (ref_lp.float() - ref32.float()).abs().max().item()
        bound = factor * max(base, torch.finfo(ref_lp.dtype).eps * scale / 2)
    assert err <= bound, f"max error {err:.3g} > bound {bound:.3g}"
    return err, bound
