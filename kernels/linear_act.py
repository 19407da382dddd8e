"""Fused linear + bias + activation: y = act(x @ W^T + b), and SwiGLU: y = silu(x @ Wg^T + bg) * (x @ Wu^T + bu).

The activation runs on the fp32 accumulator before the one store, so the [M, N] pre-activation never
round-trips through memory (cuBLAS + a separate activation writes it, reads it back, writes again; for
SwiGLU the baseline is two GEMMs plus a three-tensor elementwise kernel). Both GEMMs of SwiGLU share the
x tile loaded per K step.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import gemv, linear_ws
from ._common import (
    ACTS,
    LOAD_MODES,
    activate,
    check_linear,
    configs,
    descriptor_loads,
    eager_call,
    launch,
    register_op,
    sm_programs,
    torch_activation,
)

BLOCK_K = 64  # one K tile for all configs, so EVEN_K is known at launch (no K masks on the fast path)

# H100 sweep (bf16, 4096x4096 -> 11008) following the Triton matmul tutorial's Hopper configs: 128x256 tiles,
# 8 warps, 3 stages is the tutorial's best; 4-stage 128x128 fits more CTAs per SM for smaller N.
# The gated (two-accumulator) kernel holds twice the registers, so its tiles are halved in N.
_GPU = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
]
_GPU_GATED = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
]
_INTERP = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "GROUP_M": 4}, num_warps=4, num_stages=1)]


@triton.jit
def _tile_of(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row block, column block) of output tile number `tile` in grouped order: GROUP_M row-blocks share each
    column block while it is in L2."""
    num_m = tl.cdiv(M, BLOCK_M)
    per_group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (tile // per_group) * GROUP_M
    group_size = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (tile % per_group) % group_size, (tile % per_group) // group_size


@triton.jit
def _epilogue(acc, acc2, b_ptr, b2_ptr, out_ptr, pid_m, pid_n, M, N, stride_om, stride_on,
              HAS_BIAS: tl.constexpr, ACT: tl.constexpr, GATED: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Bias, activation (times the gated accumulator for SwiGLU) on the fp32 tile, then its one masked store."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if GATED:
            acc2 += tl.load(b2_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y = activate(acc, ACT)
    if GATED:
        y = y * acc2
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & n_ok[None, :])


@triton.jit
def _linear_act_kernel(
    x_ptr,    # [M, K] input rows (any strides)
    w_ptr,    # [N, K] weight, nn.Linear layout (the gate projection for SwiGLU)
    w2_ptr,   # [N, K] SwiGLU up projection; unused (any pointer) unless GATED
    b_ptr,    # [N] bias of w; unused unless HAS_BIAS
    b2_ptr,   # [N] bias of w2; unused unless HAS_BIAS and GATED
    out_ptr,  # [M, N] output, written once
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_w2n, stride_w2k, stride_om, stride_on,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, GATED: tl.constexpr, EVEN_K: tl.constexpr,
    PRECISION: tl.constexpr,  # "ieee" for fp32 inputs (no tf32 rounding), ignored for fp16/bf16
    TMA: tl.constexpr,        # x and the weights through tensor descriptors (sm90+; edges read as zeros)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile_of(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows/columns past the edge wrap around instead of being masked: loads stay unmasked (vectorized) and
    # the store below drops them.
    rm = offs_m % M
    rn = offs_n % N
    x_ptrs = x_ptr + rm[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + rn[None, :] * stride_wn + offs_k[:, None] * stride_wk
    w2_ptrs = w2_ptr + rn[None, :] * stride_w2n + offs_k[:, None] * stride_w2k

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if TMA:
        x_desc = tl.make_tensor_descriptor(x_ptr, [M, K], [stride_xm, 1], [BLOCK_M, BLOCK_K])
        w_desc = tl.make_tensor_descriptor(w_ptr, [N, K], [stride_wn, 1], [BLOCK_N, BLOCK_K])
        w2_desc = tl.make_tensor_descriptor(w2_ptr, [N, K], [stride_w2n, 1], [BLOCK_N, BLOCK_K])
        for k0 in range(0, K, BLOCK_K):
            a = x_desc.load([pid_m * BLOCK_M, k0])
            acc = tl.dot(a, w_desc.load([pid_n * BLOCK_N, k0]).T, acc, input_precision=PRECISION)
            if GATED:
                acc2 = tl.dot(a, w2_desc.load([pid_n * BLOCK_N, k0]).T, acc2, input_precision=PRECISION)
    else:
        for k0 in range(0, K, BLOCK_K):
            if EVEN_K:
                a = tl.load(x_ptrs)
                b = tl.load(w_ptrs)
            else:
                kmask = offs_k < K - k0
                a = tl.load(x_ptrs, mask=kmask[None, :], other=0.0)
                b = tl.load(w_ptrs, mask=kmask[:, None], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
            if GATED:
                if EVEN_K:
                    b2 = tl.load(w2_ptrs)
                else:
                    b2 = tl.load(w2_ptrs, mask=kmask[:, None], other=0.0)
                acc2 = tl.dot(a, b2, acc2, input_precision=PRECISION)
                w2_ptrs += BLOCK_K * stride_w2k
            x_ptrs += BLOCK_K * stride_xk
            w_ptrs += BLOCK_K * stride_wk

    _epilogue(acc, acc2, b_ptr, b2_ptr, out_ptr, pid_m, pid_n, M, N, stride_om, stride_on,
              HAS_BIAS, ACT, GATED, BLOCK_M, BLOCK_N)


_KEY = ["M", "N", "K", "HAS_BIAS", "ACT", "EVEN_K", "TMA"]
_plain = triton.autotune(configs(_GPU, _INTERP), key=_KEY)(_linear_act_kernel)
_gated = triton.autotune(configs(_GPU_GATED, _INTERP), key=_KEY)(_linear_act_kernel)


@triton.jit
def _persistent_kernel(
    x_ptr, w_ptr, w2_ptr, b_ptr, b2_ptr, out_ptr,  # as _linear_act_kernel's; x and weights with unit inner stride
    M, N, K, stride_xm, stride_wn, stride_w2n, stride_om, stride_on,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, GATED: tl.constexpr, PRECISION: tl.constexpr,
    PROGRAMS: tl.constexpr,  # one program per SM, each looping over output tiles
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Persistent form of the TMA path (Triton's persistent-matmul tutorial): PROGRAMS programs walk the output
    tiles in grouped order; flatten=True lets the compiler pipeline the next tile's loads under this tile's
    epilogue, which a one-tile-per-program launch pays in full for every tile."""
    x_desc = tl.make_tensor_descriptor(x_ptr, [M, K], [stride_xm, 1], [BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, [N, K], [stride_wn, 1], [BLOCK_N, BLOCK_K])
    w2_desc = tl.make_tensor_descriptor(w2_ptr, [N, K], [stride_w2n, 1], [BLOCK_N, BLOCK_K])
    for tile in tl.range(tl.program_id(0), tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N), PROGRAMS, flatten=True):
        pid_m, pid_n = _tile_of(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            a = x_desc.load([pid_m * BLOCK_M, k0])
            acc = tl.dot(a, w_desc.load([pid_n * BLOCK_N, k0]).T, acc, input_precision=PRECISION)
            if GATED:
                acc2 = tl.dot(a, w2_desc.load([pid_n * BLOCK_N, k0]).T, acc2, input_precision=PRECISION)
        _epilogue(acc, acc2, b_ptr, b2_ptr, out_ptr, pid_m, pid_n, M, N, stride_om, stride_on,
                  HAS_BIAS, ACT, GATED, BLOCK_M, BLOCK_N)


_PKEY = ["M", "N", "K", "HAS_BIAS", "ACT"]
_persistent = triton.autotune(configs(_GPU, _INTERP), key=_PKEY)(_persistent_kernel)
_persistent_gated = triton.autotune(configs(_GPU_GATED, _INTERP), key=_PKEY)(_persistent_kernel)


def _fake(x, weight, bias, weight2, bias2, act):  # noqa: ANN001, ANN202 - the op's meta function
    check_linear(x, weight, bias, weight2, bias2, act)
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@register_op("kpt::linear_act", _fake)
def linear_act_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, weight2: torch.Tensor | None,
                  bias2: torch.Tensor | None, act: str) -> torch.Tensor:
    """act(x @ weight^T + bias), or act(x @ weight^T + bias) * (x @ weight2^T + bias2) when weight2 is given."""
    return _run(x, weight, bias, weight2, bias2, act, MODE)


# How x and the weights reach the kernel; the op uses MODE where TMA applies. "persist": the TMA loads in a
# persistent kernel (one program per SM). Not _common.LOAD_MODES' "tma_ws": with Triton 3.6 on the H200
# (2026-12-03) the warp-specialized K loop gave wrong SwiGLU results at 1025x136->97 (max error 10.9) and failed
# to compile the plain GEMM, so it is not offered.
# "gluon": the calls linear_ws.py covers go to that kernel (eager calls only: Inductor and AOTInductor embed
# triton.jit kernels, not Gluon ones), the others take pointer loads. Traced calls run COMPILED_MODE whatever MODE
# says, and the registry times that (registry.linear_providers): its choices are for compiled models.
# "gluon" since the H200 measured it (2026-12-05, kernels-quick-linear-ws, 4096x4096->11008 bf16): GELU 0.663 ms,
# SiLU 0.577, SwiGLU 1.188 against the pointer kernel's 0.691 / 0.700 / 1.306 and cuBLAS + activation's
# 0.637 / 0.623 / 1.247.
MODES = tuple(m for m in LOAD_MODES if m != "tma_ws") + ("persist", "gluon")
MODE = "gluon"
COMPILED_MODE = "ptr"


def _run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, weight2: torch.Tensor | None,
         bias2: torch.Tensor | None, act: str, mode: str) -> torch.Tensor:
    check_linear(x, weight, bias, weight2, bias2, act)
    x2 = x.reshape(-1, x.shape[-1])
    M, K = x2.shape
    N = weight.shape[0]
    out = x.new_empty((M, N))
    gated = weight2 is not None
    w2 = weight2 if gated else weight
    b = bias if bias is not None else weight
    b2 = bias2 if bias2 is not None else b
    kernel = _gated if gated else _plain
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if 0 < M <= gemv.MAX_ROWS:  # a decode step's row: matrix-vector products, whatever the mode
        gemv.run(launch, x2, weight, w2, b, b2, out, bias is not None, ACTS[act], gated)
        return out.reshape(*x.shape[:-1], N)
    if mode == "gluon":
        if eager_call(x2, weight, weight2, bias, bias2) and linear_ws.supports(x2, weight, bias, weight2, act, bias2):
            return linear_ws.linear_act(x2, weight, bias, act, weight2, bias2).reshape(*x.shape[:-1], N)
        mode = COMPILED_MODE
    tma = descriptor_loads("tma" if mode == "persist" else mode, x2, weight, w2)
    if mode == "persist" and tma and M > 0:
        programs = sm_programs(x.device)
        launch(_persistent_gated if gated else _persistent, x2, weight)[
            lambda meta: (min(programs, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])),)](
            x2, weight, w2, b, b2, out, M, N, K, x2.stride(0), weight.stride(0), w2.stride(0),
            out.stride(0), out.stride(1), HAS_BIAS=bias is not None, ACT=ACTS[act], GATED=gated,
            PRECISION="ieee" if x.dtype == torch.float32 else "tf32", PROGRAMS=programs, BLOCK_K=BLOCK_K)
    elif M > 0:
        launch(kernel, x2, weight)[lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)](
            x2, weight, w2, b, b2, out, M, N, K,
            x2.stride(0), x2.stride(1), weight.stride(0), weight.stride(1), w2.stride(0), w2.stride(1),
            out.stride(0), out.stride(1),
            HAS_BIAS=bias is not None, ACT=ACTS[act], GATED=gated, EVEN_K=K % BLOCK_K == 0,
            PRECISION="ieee" if x.dtype == torch.float32 else "tf32", TMA=tma,
            BLOCK_K=BLOCK_K)
    return out.reshape(*x.shape[:-1], N)


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, act: str = "gelu") -> torch.Tensor:
    return linear_act_op(x, weight, bias, None, None, act)


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, b_gate: torch.Tensor | None = None,
           b_up: torch.Tensor | None = None) -> torch.Tensor:
    return linear_act_op(x, w_gate, b_gate, w_up, b_up, "silu")


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, act: str = "gelu",
              weight2: torch.Tensor | None = None, bias2: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch: what cuBLAS + a separate activation computes (in x's dtype)."""
    y = torch_activation(torch.nn.functional.linear(x, weight, bias), act)
    if weight2 is not None:
        y = y * torch.nn.functional.linear(x, weight2, bias2)
    return y
