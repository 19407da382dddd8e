"""RMSNorm and LayerNorm forward: statistics in fp32, one read and one write of x.

A row that fits in registers (N <= MAX_FUSED) is loaded once; wider rows take two passes over the row
(statistics, then normalize), which reads x twice but still writes once. Narrow rows go several to a program
(ROWS, about ROW_ELEMS elements a program): on the H200, one program per 1024-wide row reached 1.9 TB/s where
PyTorch's kernel reached 3.1 (docs/benchmarks/kernels-h200.md), each program too short to keep loads in flight.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import configs, launch, register_op, sm_programs

# Elements per row held in registers. 32k: on the H200 the two-pass path at 2048x32768 (16k blocks, x read twice)
# reached 42% of copy bandwidth (RMSNorm); 32 warps hold a 32k row at 32 fp32 values per thread.
MAX_FUSED = 32768
ROW_ELEMS = 4096  # narrow rows: about this many elements per program (ROWS rows of BLOCK)
MAX_ROWS = 16
MAX_PER_THREAD = 64  # fp32 values of the row tile per thread: configs with more would spill registers
# x is read once: loaded past L1 (".cg", L2 only), it leaves L1 to the scale and shift every row reads again. At
# 2048x32768 a program a row reloads them (64 KB each in bf16) per row, and LayerNorm's L2 traffic (x, scale,
# shift, output: 512 MB) at the H200's 0.0835 ms is about L2's bandwidth, where RMSNorm (no shift) ran at 87% of
# copy and LayerNorm at 78% (2026-12-03). Compiled for sm_90 offline; "" (x through L1, as before) is
# kernels.bench's norm-cache provider kpt_x_l1: on the H100 the two are level, within 1% at every goal shape
# (2026-12-05, docs/benchmarks/kernels-quick-norm-cache-h100.md).
X_CACHE = ".cg"


# Warps per row, chosen on the device per row width (and dtype: the autotuner keys on argument dtypes too).
# A fixed rule (Liger-Kernel's: 4 warps up to 2k elements, 8 up to 8k, 16 beyond) reached 88-97% of copy
# bandwidth on the H100 at 4k-wide rows but about 50% at 8k-wide ones, where 4096 rows of 8 warps leave the SMs
# short of loads in flight.
WARPS = (4, 8, 16, 32)
_GPU = [triton.Config({}, num_warps=w) for w in WARPS]
_INTERP = [triton.Config({}, num_warps=4)]


def _fitting(cfgs: list, named_args: dict, **kwargs) -> list:  # noqa: ANN003 - the autotuner's prune hook
    """The warp counts whose threads hold the row tile without spilling (all, if none does)."""
    tile = kwargs.get("BLOCK", named_args.get("BLOCK", 0)) * kwargs.get("ROWS", named_args.get("ROWS", 1))
    fit = [c for c in cfgs if tile <= MAX_PER_THREAD * 32 * c.num_warps]
    return fit or cfgs


@triton.jit
def _add_pair(a1, a2, b1, b2):
    return a1 + b1, a2 + b2


@triton.jit
def _rows_in_registers(x_ptr, w_ptr, b_ptr, out_ptr, rows, cols, R, N, stride_x, stride_o, eps,
                       RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, W_OFFSET: tl.constexpr,
                       X_CACHE: tl.constexpr):
    """Normalizes whole rows (rows[:, None] x cols[None, :], cols covering N) held in registers: one read, one write.
    The scale and shift are loaded after the statistics (held across the reduction, they made the persistent
    kernel spill: 216 bytes a thread at 32768 wide, sm_90 cubin). X_CACHE: x's cache modifier (see X_CACHE; no
    default: Triton 3.6 passes a jit function's default constexpr string as a plain str, which failed to compile
    on the H100, 2026-12-05)."""
    mask = (rows[:, None] < R) & (cols[None, :] < N)
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0,
                cache_modifier=X_CACHE).to(tl.float32)
    if RMS:
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / N + eps)
        y = x * rstd[:, None]
    else:
        if x_ptr.dtype.element_ty == tl.float32:  # fp32 output: the exact form, mean then variance
            mean = tl.sum(x, axis=1) / N
            xc = tl.where(mask, x - mean[:, None], 0.0)
            var = tl.sum(xc * xc, axis=1) / N
        else:
            # 16-bit output: sum and sum of squares in one reduction (one round of cross-warp exchanges, not
            # two in a row: at 2048x32768 on the H200 the mean-then-variance form reached 72% of copy
            # bandwidth where RMSNorm's single reduction reached 86%), of data shifted by the row's first
            # element so a large mean does not cancel the variance. Its last-bit error in fp32 is below the
            # 16-bit rounding of the output.
            shift = tl.load(x_ptr + rows * stride_x, mask=rows < R, other=0.0).to(tl.float32)
            xs = tl.where(mask, x - shift[:, None], 0.0)
            s1, s2 = tl.reduce((xs, xs * xs), 1, _add_pair)
            m1 = s1 / N
            var = tl.maximum(s2 / N - m1 * m1, 0.0)
            xc = xs - m1[:, None]
        rstd = 1.0 / tl.sqrt(var + eps)
        y = xc * rstd[:, None]
    if HAS_W:
        y = y * (tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32) + W_OFFSET)[None, :]
    if HAS_B:
        y = y + tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rows[:, None] * stride_o + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs(_GPU, _INTERP), key=["N", "BLOCK", "ROWS", "RMS", "HAS_W", "HAS_B", "X_CACHE"],
                 prune_configs_by={"early_config_prune": _fitting})
@triton.jit
def _norm_kernel(
    x_ptr,    # [R, N] input rows (row stride stride_x, unit stride along N)
    w_ptr,    # [N] scale; unused unless HAS_W
    b_ptr,    # [N] shift (LayerNorm); unused unless HAS_B
    out_ptr,  # [R, N] output rows (row stride stride_o)
    R, N, stride_x, stride_o, eps,
    RMS: tl.constexpr,      # True: x * rsqrt(mean(x^2) + eps); False: (x - mean) * rsqrt(var + eps)
    HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    ONE_PASS: tl.constexpr,  # BLOCK >= N: the row stays in registers
    W_OFFSET: tl.constexpr,  # added to the weight (Gemma's RMSNorm scales by 1 + w); 0.0 otherwise
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,  # rows per program (one-pass path only; 1 on the two-pass path)
    X_CACHE: tl.constexpr,  # x's cache modifier (the module's X_CACHE unless a caller says otherwise)
):
    eps = tl.cast(eps, tl.float32)  # Inductor passes a float as fp64, and fp64 is catching (kernels.cubin.fp64_rows)
    cols = tl.arange(0, BLOCK)
    if ONE_PASS:
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        _rows_in_registers(x_ptr, w_ptr, b_ptr, out_ptr, rows, cols, R, N, stride_x, stride_o, eps, RMS, HAS_W, HAS_B,
                           W_OFFSET, X_CACHE)
    else:
        row = tl.program_id(0).to(tl.int64)
        x_row = x_ptr + row * stride_x
        o_row = out_ptr + row * stride_o
        # Pass 1: per-lane partial sums; LayerNorm uses the shifted-data variance (shift = the row's first
        # element) so a large mean does not cancel the variance catastrophically.
        shift = tl.load(x_row).to(tl.float32)
        s1 = tl.zeros((BLOCK,), dtype=tl.float32)
        s2 = tl.zeros((BLOCK,), dtype=tl.float32)
        for c0 in range(0, N, BLOCK):
            mask = c0 + cols < N
            x = tl.load(x_row + c0 + cols, mask=mask, other=0.0, cache_modifier=X_CACHE).to(tl.float32)
            if not RMS:
                x = tl.where(mask, x - shift, 0.0)
            s1 += x
            s2 += x * x
        if RMS:
            mean = 0.0
            rstd = 1.0 / tl.sqrt(tl.sum(s2, axis=0) / N + eps)
        else:
            m1 = tl.sum(s1, axis=0) / N
            var = tl.maximum(tl.sum(s2, axis=0) / N - m1 * m1, 0.0)
            mean = shift + m1
            rstd = 1.0 / tl.sqrt(var + eps)
        for c0 in range(0, N, BLOCK):
            mask = c0 + cols < N
            x = tl.load(x_row + c0 + cols, mask=mask, other=0.0, cache_modifier=X_CACHE).to(tl.float32)
            y = (x - mean) * rstd
            if HAS_W:
                y = y * (tl.load(w_ptr + c0 + cols, mask=mask, other=0.0).to(tl.float32) + W_OFFSET)
            if HAS_B:
                y = y + tl.load(b_ptr + c0 + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(o_row + c0 + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


# The persistent form for wide rows: one program per SM walks rows, and its row loop has an explicit stage count, so
# Triton's pipeliner copies the next row into shared memory (cp.async) while this one is reduced and written (a
# loop without dot products is pipelined only when tl.range names num_stages). One program a row leaves an SM with
# no loads in flight while it reduces: 2048x32768 LayerNorm reached 72-78% of copy bandwidth on the H200. Compiled
# here for sm_90 (triton 3.7.1, no GPU needed to compile): x's loads become cp.async into shared memory, and so do
# the scale's and shift's (staged too: LayerNorm at 32768 wide takes 192 KB at 2 stages, 3 do not fit); no spills.
_PERSISTENT_GPU = [triton.Config({"STAGES": st}, num_warps=w) for w in (8, 16, 32) for st in (2, 3)]
_PERSISTENT_INTERP = [triton.Config({"STAGES": 2}, num_warps=4)]


@triton.autotune(configs(_PERSISTENT_GPU, _PERSISTENT_INTERP), key=["N", "BLOCK", "RMS", "HAS_W", "HAS_B"],
                 prune_configs_by={"early_config_prune": _fitting})
@triton.jit
def _norm_persistent_kernel(x_ptr, w_ptr, b_ptr, out_ptr, R, N, stride_x, stride_o, eps,
                            RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, W_OFFSET: tl.constexpr,
                            BLOCK: tl.constexpr, STAGES: tl.constexpr):
    """_norm_kernel's one-pass path (BLOCK >= N) over rows pid, pid + programs, ...; STAGES: the pipeliner's stage
    count (2: the next row's loads in flight while this row is reduced and written)."""
    eps = tl.cast(eps, tl.float32)  # as in _norm_kernel
    cols = tl.arange(0, BLOCK)
    for row in tl.range(tl.program_id(0), R, tl.num_programs(0), num_stages=STAGES):
        rows = (tl.arange(0, 1) + row).to(tl.int64)
        _rows_in_registers(x_ptr, w_ptr, b_ptr, out_ptr, rows, cols, R, N, stride_x, stride_o, eps, RMS, HAS_W, HAS_B,
                           W_OFFSET, "")


def norm_persistent(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                    rms: bool, w_offset: float = 0.0) -> torch.Tensor:
    """The persistent pipelined kernel over x's rows (rows of at most MAX_FUSED elements). Not the op's path yet:
    kernels.bench's norm-persistent rows time it beside the op's kernel first."""
    x2 = _rows(x, weight, bias)
    N = x.shape[-1]
    if N > MAX_FUSED:
        raise ValueError(f"rows of {N} elements do not fit in registers (at most {MAX_FUSED})")
    R = x2.shape[0]
    out = torch.empty((R, N), dtype=x.dtype, device=x.device)
    if R and N:
        programs = min(R, sm_programs(x.device))
        _norm_persistent_kernel[(programs,)](
            x2, weight if weight is not None else x2, bias if bias is not None else x2, out, R, N, x2.stride(0),
            out.stride(0), eps, RMS=rms, HAS_W=weight is not None, HAS_B=bias is not None, W_OFFSET=w_offset,
            BLOCK=triton.next_power_of_2(N))
    return out.reshape(x.shape)


def _rows(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """x checked against the weight and bias, as [rows, N] with unit stride along N (a copy only where needed)."""
    _check(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _check(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
    n = x.shape[-1] if x.dim() else 0
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (n,):
            raise ValueError(f"{name} has shape {tuple(t.shape)}; the normalized dimension is {n}")


def _fake(x, weight, bias, eps, rms, w_offset, block):  # noqa: ANN001, ANN202 - the op's meta function
    _check(x, weight, bias)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@register_op("kpt::norm", _fake)
def norm_op(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, rms: bool,
            w_offset: float, block: int) -> torch.Tensor:
    """Normalizes the last dimension of x. block: elements per step (0: the next power of two of N, up to
    MAX_FUSED; a smaller value forces the two-pass path, which tests use)."""
    return _run(launch(_norm_kernel), x, weight, bias, eps, rms, w_offset, block, {})


def _run(kernel, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,  # noqa: ANN001
         rms: bool, w_offset: float, block: int, extra: dict) -> torch.Tensor:
    """Launches kernel (the autotuned one, or the bare JITFunction with launch options in extra) over x's rows."""
    x2 = _rows(x, weight, bias)
    N = x.shape[-1]
    out = torch.empty((x2.shape[0], N), dtype=x.dtype, device=x.device)
    BLOCK = block or min(triton.next_power_of_2(N), MAX_FUSED)
    R = x2.shape[0]
    rows = rows_per_program(R, N, BLOCK)
    if R and N:
        kernel[(triton.cdiv(R, rows),)](
            x2, weight if weight is not None else x2, bias if bias is not None else x2, out,
            R, N, x2.stride(0), out.stride(0), eps, RMS=rms, HAS_W=weight is not None, HAS_B=bias is not None,
            ONE_PASS=BLOCK >= N, W_OFFSET=w_offset, BLOCK=BLOCK, ROWS=rows, **({"X_CACHE": X_CACHE} | extra))
    return out.reshape(x.shape)


def rows_per_program(R: int, N: int, block: int) -> int:
    """ROWS: 1 on the two-pass path and for rows of ROW_ELEMS or more; else about ROW_ELEMS elements a program,
    no more rows than there are (a power of two: tl.arange's length)."""
    if block < N or block >= ROW_ELEMS:
        return 1
    return max(1, min(ROW_ELEMS // block, MAX_ROWS, triton.next_power_of_2(R)))


def norm_fixed(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, rms: bool,
               num_warps: int) -> torch.Tensor:
    """The same kernel with num_warps chosen by the caller instead of the autotuner (not an op: kernels.bench's
    norm-warps rows time each choice beside the autotuned one)."""
    if num_warps not in WARPS:
        raise ValueError(f"num_warps must be one of {WARPS}, not {num_warps}")
    return _run(_norm_kernel.fn, x, weight, bias, eps, rms, 0.0, 0, {"num_warps": num_warps})


def norm_x_l1(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
              rms: bool) -> torch.Tensor:
    """The op's autotuned kernel with x loaded through L1 as well (the form before X_CACHE; not an op:
    kernels.bench's norm-cache rows time it beside the op)."""
    return _run(_norm_kernel, x, weight, bias, eps, rms, 0.0, 0, {"X_CACHE": ""})


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6, w_offset: float = 0.0,
             block: int = 0) -> torch.Tensor:
    return norm_op(x, weight, None, eps, True, w_offset, block)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5,
               block: int = 0) -> torch.Tensor:
    return norm_op(x, weight, bias, eps, False, 0.0, block)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6,
                       w_offset: float = 0.0) -> torch.Tensor:
    """Plain PyTorch in fp32, cast back (what HF LlamaRMSNorm computes, up to where the weight multiply sits)."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * (weight.float() + w_offset)
    return y.to(x.dtype)


def layer_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float = 1e-5) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)
