"""What every kernel module shares: the interpreter switch, op registration, activations in fp32.

Op registration has two paths (one decorator, `register_op`):
  * on a GPU, torch.library.triton_op: compile and export see the Triton kernel itself (wrap_triton), so an
    AOTInductor package embeds the compiled kernel and needs no Python registration where it is loaded;
  * under the Triton interpreter (TRITON_INTERPRET=1, CPU tensors), torch.library.custom_op plus the
    module's fake implementation: the interpreter's kernels are not JITFunctions, and wrap_triton cannot
    trace them, so export/compile treat the op as opaque.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch._library.triton import is_wrap_triton_enabled

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    """TRITON_INTERPRET=1: kernels run in Triton's numpy interpreter on CPU tensors (tests, no GPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def register_op(name: str, fake: Callable, mutates: tuple[str, ...] = ()) -> Callable:
    """Decorator: registers fn as the custom op `name` ("kpt::..."), with `fake` as its meta function; mutates:
    the arguments it writes into."""

    ns, short = name.split("::")
    try:  # this package imported twice under two names (tests' `kernels`, the pass's file-path load)
        existing = getattr(getattr(torch.ops, ns), short)
    except (AttributeError, RuntimeError):
        existing = None

    def wrap(fn: Callable) -> Callable:
        if existing is not None:
            return existing
        if interpreting():
            op = torch.library.custom_op(name, mutates_args=mutates)(fn)
            op.register_fake(fake)
            return op
        return torch.library.triton_op(name, mutates_args=mutates)(fn)

    return wrap


def launch(kernel, *tensors: torch.Tensor | None):  # noqa: ANN001, ANN201 - a Triton kernel in, a launchable one out
    """wrap_triton(kernel) where torch may be tracing the call (GPU); the kernel itself under the interpreter, or
    where the tensors given are real and nothing traces (eager_call). A triton_op's function called eagerly gets
    the plain launch from torch anyway; a function that launches outside one (the registry and the benchmark time
    attention._run and linear_act._run directly) must not send a real call through the wrap_triton higher-order op:
    on the H200 each such call of attention's autotuned kernel took 640-780 ms, against 2 ms for the op."""
    if interpreting() or (tensors and eager_call(*tensors)):
        return kernel
    return torch.library.wrap_triton(kernel)


# How a kernel's operands reach it: "ptr" (pointer loads, Triton's cp.async pipeline), "tma" (Hopper's tensor
# memory accelerator through device-side descriptors), "tma_ws" (tma plus Triton's warp specialization of the
# main loop). kernels.bench measures them side by side (attention-modes, linear-modes).
LOAD_MODES = ("ptr", "tma", "tma_ws")


def check_counters(t: torch.Tensor | None, device: torch.device, need: int, name: str = "counters") -> None:
    """int32 counters a launch writes (decode attention's chunks, the chains' groups): a contiguous vector on device
    with at least `need` entries (None: none asked for)."""
    if t is not None and (t.dtype != torch.int32 or t.dim() != 1 or t.stride(0) != 1 or t.numel() < need
                          or t.device != device):
        raise ValueError(f"{name} must be a contiguous int32 vector on {device} of at least {need}")


def tma_usable(*tensors: torch.Tensor) -> bool:
    """TMA needs sm90+, 16-bit elements, and 16-byte aligned bases and row strides (every head's base too)."""
    if not all(t.is_cuda and t.dtype in (torch.float16, torch.bfloat16) for t in tensors):
        return False
    if torch.cuda.get_device_capability(tensors[0].device)[0] < 9:
        return False
    return all(t.data_ptr() % 16 == 0 and all(st % 8 == 0 for st in t.stride()[:-1]) for t in tensors)


_ALLOCATOR_SET = False


def descriptor_loads(mode: str, *tensors: torch.Tensor) -> bool:
    """Whether a launch in `mode` (one of LOAD_MODES) takes the descriptor path for these operands; if it does,
    Triton's allocator for the descriptors' global scratch is set (once per process; CPU under the interpreter).
    Traced calls (torch.compile, export, AOTInductor) keep pointer loads: Inductor's generated launchers do not
    set up that scratch."""
    global _ALLOCATOR_SET
    if mode not in LOAD_MODES:
        raise ValueError(f"mode must be one of {LOAD_MODES}, not {mode!r}")
    unit_inner = all(t.stride(-1) == 1 for t in tensors)  # descriptors address rows of contiguous elements
    tma = mode != "ptr" and unit_inner and not torch.compiler.is_compiling() and (interpreting() or tma_usable(*tensors))
    if tma and not _ALLOCATOR_SET:
        device = tensors[0].device.type
        triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device=device))
        _ALLOCATOR_SET = True
    return tma


def reason(e: BaseException, limit: int = 160) -> str:
    """An exception's first line (at most limit characters), or its type's name where it has no message: what a
    provider's row or timing says when it failed."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def gpu_ms(fn: Callable[[], object], rep_ms: int = 20) -> float:
    """Median ms of fn on the GPU, replayed as a CUDA graph: the time a compiled model pays (the GPU services'
    packages replay graphs), without the host's dispatch. Launched from Python, a small op's dispatch outlasts
    its kernels (the H200's norm-warps run, 2026-12-03: RMSNorm 4096x8192 took 0.145 ms through the op and
    0.038 ms launched bare), so host-timed rows and decisions judged the dispatcher. fn is timed with host
    launches where it cannot be captured."""
    import triton.testing

    try:
        with torch.cuda.stream(torch.cuda.Stream()):
            return float(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))
    except RuntimeError:  # a host sync or an allocation the graph cannot hold
        torch.cuda.synchronize()
        return float(triton.testing.do_bench(fn, warmup=5, rep=rep_ms, return_mode="median"))


@functools.cache
def sm_programs(device: torch.device) -> int:
    """Programs of a persistent launch: one per SM (4 under the interpreter)."""
    return 4 if device.type == "cpu" else torch.cuda.get_device_properties(device).multi_processor_count


def configs(gpu: list, interp: list) -> list:
    """The autotune list: the GPU sweep, or one small config under the interpreter (each config is a full
    run there, and the interpreter's time says nothing about the GPU)."""
    return interp if interpreting() else gpu


# Activation codes shared by the launchers and kernels (constexpr ints: the kernel specializes on them).
ACTS = {"none": 0, "gelu": 1, "gelu_tanh": 2, "silu": 3, "relu": 4}


def check_linear(x: torch.Tensor, weight: torch.Tensor, bias, weight2, bias2, act: str) -> None:  # noqa: ANN001
    """linear_act's operands (gemv.py's too): a known activation, [out, in] weights taking x's rows, x's dtype."""
    if act not in ACTS:
        raise ValueError(f"activation must be one of {sorted(ACTS)}, not {act!r}")
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x [..., {x.shape[-1]}] does not match weight {tuple(weight.shape)} ([out, in])")
    if weight2 is not None and weight2.shape != weight.shape:
        raise ValueError(f"weight2 {tuple(weight2.shape)} must have weight's shape {tuple(weight.shape)}")
    if weight2 is not None and (bias is None) != (bias2 is None):
        raise ValueError("SwiGLU takes both biases or neither")
    if x.dtype != weight.dtype:
        raise ValueError(f"x is {x.dtype} but weight is {weight.dtype}")


@triton.jit
def tanh(x):
    # tanh from exp so it is the same on every backend (the interpreter lacks libdevice); exact for |x| large:
    # exp(-2|x|) underflows to 0 and the result saturates at +-1.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def activate(x, ACT: tl.constexpr):
    """x in fp32; ACT is one of ACTS."""
    if ACT == 1:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACT == 2:
        x = 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    elif ACT == 3:
        x = x / (1.0 + tl.exp(-x))
    elif ACT == 4:
        x = tl.maximum(x, 0.0)
    return x


def torch_activation(x: torch.Tensor, act: str) -> torch.Tensor:
    if act == "none":
        return x
    if act == "gelu":
        return torch.nn.functional.gelu(x)
    if act == "gelu_tanh":
        return torch.nn.functional.gelu(x, approximate="tanh")
    if act == "silu":
        return torch.nn.functional.silu(x)
    if act == "relu":
        return torch.relu(x)
    raise ValueError(f"activation must be one of {sorted(ACTS)}, not {act!r}")


# L2 prefetch: a decode step's latency-bound launches (decode attention, the small projections, the gaps between
# launches) leave the GPU's memory bandwidth idle; a kernel may ask L2 to fetch the weight a later launch reads
# (a hint: no result depends on it). The interpreter has no inline PTX: there the hint is skipped.
# A kernel that prefetches also loads its own stream of once-read data (weights, the key/value cache) with this
# L2 policy, so that stream does not evict the lines asked in for the next launch (createpolicy L2::evict_first
# on sm_90; kernels.cubin shows it: pipelined loads, which Triton turns into cp.async, carry no hint). The
# interpreter ignores it.
STREAM_POLICY: tl.constexpr = tl.constexpr("evict_first")


def prefetch_args(t: torch.Tensor | None, fraction: float) -> tuple[torch.Tensor | None, int]:
    """(tensor, bytes) for a kernel's prefetch operands: the first `fraction` of contiguous t (whole: a slice of a
    weight could be folded into a copy of its own when the model is frozen); (None, 0) where there is nothing to
    fetch, or under the interpreter."""
    nbytes = int(t.numel() * t.element_size() * min(max(fraction, 0.0), 1.0)) if t is not None else 0
    if not nbytes or interpreting():
        return None, 0
    if not t.is_contiguous():
        raise ValueError("a prefetched tensor must be contiguous")
    return t, nbytes


# Inline PTX and torch.compile: Inductor embeds a user kernel only after its mutation analysis
# (torch._higher_order_ops.triton_kernel_wrap) has read which operands the kernel writes; it skips inline asm marked
# pure and gives up on any other, taking every operand as written. Then it clones each operand per call (the
# weights too) and copies the clones back one after another, so an output passed in two places (a placeholder for
# an operand the kernel does not use) gets the clone the kernel never wrote: the compiled PDL decode step returned
# garbage on the H200 (2026-12-05), the L2-prefetch trial faulted. So every asm here is pure and returns 0 (int32)
# that what must follow it uses: the prefetch helpers return their zeros (reduced to one), the PDL steps take the
# zero before them and give it on, and a kernel's work after them sits in `if go == 0:` (always true; the branch
# keeps every load and store after the asm, and keeps the asm, which the compiler would otherwise drop).


@triton.jit
def prefetch_l2(base_ptr, nbytes, pid, n_programs, BLOCK: tl.constexpr = 128):
    """This program's share of nbytes from base_ptr, one prefetch.global.L2 per 128-byte line. Returns 0."""
    lines = tl.cdiv(nbytes, 128)
    per = tl.cdiv(lines, n_programs)
    start = pid * per
    end = tl.minimum(start + per, lines)
    base = base_ptr.to(tl.pointer_type(tl.int8), bitcast=True)
    done = tl.zeros((BLOCK,), tl.int32)
    for first in range(start, end, BLOCK):
        line = first + tl.arange(0, BLOCK)
        done |= _prefetch(base + line.to(tl.int64) * 128, line < end)
    return tl.max(done, axis=0)


@triton.jit
def prefetch_rows(ptr, rows, rows_ok, stride, n_cols, LINE: tl.constexpr, LINES: tl.constexpr):
    """L2 prefetches of the rows `rows` (a vector of row indices, those where rows_ok) of a matrix with unit inner
    stride, n_cols wide: one prefetch.global.L2 per 128-byte line (LINE elements), LINES lines of each row a step.
    Returns 0."""
    done = tl.zeros(rows.shape, tl.int32)
    for c0 in range(0, n_cols, LINE * LINES):
        cols = c0 + tl.arange(0, LINES) * LINE
        done |= tl.max(_prefetch(ptr + rows.to(tl.int64)[:, None] * stride + cols[None, :],
                                 rows_ok[:, None] & (cols < n_cols)[None, :]), axis=1)
    return tl.max(done, axis=0)


@triton.jit
def _prefetch(addresses, ok):
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.u32 $0, 0; }",
        "=r,l,r", [addresses, ok.to(tl.int32)], dtype=tl.int32, is_pure=True, pack=1)


# Programmatic dependent launch (sm_90+, Triton's launch_pdl): a launch may start while the one before it still
# runs. Its programs first let the launch after them start too (griddepcontrol.launch_dependents: that one's programs
# take SM slots as they free up), issue what depends on no earlier launch (gemv.py loads its weight's first
# columns, pdl_wait_for; decode attention asks its cache chunk into L2), then wait (griddepcontrol.wait: the launch
# before has finished and its writes are visible) before any other load or store. Every program waits, so a launch ends after the one before it: a later launch's wait
# covers all earlier ones. What it removes is the gap at each launch boundary, about 110 of them in the 1B Llama's
# decode step. An op asked for it (its `pdl` argument) compiles its kernels with that code (pdl_code) wherever it is
# traced or run; launches Triton makes itself also carry the launch attribute (pdl_launch). Inductor's and
# AOTInductor's launchers of a user kernel set no launch attributes: there the code is inert (griddepcontrol is a
# no-op in a plain launch) until a captured CUDA graph's edges into these kernels are made programmatic ones
# (kpt.gpu.graph_edges, told WAITING_KERNELS through decode_layer.PDL).
# The kernels whose code waits before any memory access an earlier launch writes when their op is asked for PDL
# (Triton's entry names; Inductor appends _<n> to a user kernel's).
WAITING_KERNELS = ("_gemv_kernel", "_split_kernel", "_merge_kernel")


def eager_call(*tensors: torch.Tensor | None) -> bool:
    """Whether an op's function runs on real tensors, launching its kernels itself: not traced by torch.compile or
    torch.export (dynamo; fake tensors; functional or other wrapper tensors, as AOTAutograd and Inductor trace a
    triton_op's function with). Only then may it launch a kernel Inductor could not embed (the Gluon kernels)."""
    return not torch.compiler.is_compiling() and all(
        t is None or type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)


def pdl_code(t: torch.Tensor, asked: bool) -> bool:
    """Whether an op asked for PDL compiles its kernel with the PDL code for tensors on t's device: sm_90+, not the
    interpreter (traced calls included: t may be a fake tensor)."""
    return asked and t.is_cuda and not interpreting() and torch.cuda.get_device_capability(t.device)[0] >= 9


def pdl_launch(t: torch.Tensor, asked: bool) -> bool:
    """pdl_code, and Triton launches the kernel itself (not a trace: torch.library.triton_op runs its function with
    wrap_triton off on real tensors), so the launch can carry the attribute."""
    return pdl_code(t, asked) and not is_wrap_triton_enabled()


def pdl_options(on: bool) -> dict[str, bool]:
    """The launch keyword for pdl_launch()'s answer: Triton's launch_pdl where on, nothing otherwise."""
    return {"launch_pdl": True} if on else {}


@triton.jit
def pdl_start():
    """A PDL launch's first step: the launch after this one may start (its programs wait in pdl_wait). Returns 0
    for what follows to take (pure asm: see above)."""
    return tl.inline_asm_elementwise("griddepcontrol.launch_dependents; mov.u32 $0, 0;", "=r", [], dtype=tl.int32,
                                     is_pure=True, pack=1)


@triton.jit
def pdl_wait(after):
    """Before a PDL launch's first load or store of anything an earlier launch writes: that launch has finished.
    after: the 0 of the steps it must follow (pdl_start, prefetches); returns it, for the kernel's `if go == 0:`
    around everything after the wait."""
    return tl.inline_asm_elementwise("griddepcontrol.wait; mov.u32 $0, $1;", "=r,r", [after], dtype=tl.int32,
                                     is_pure=True, pack=1)


@triton.jit
def pdl_wait_for(value, after):
    """pdl_wait once `value` (a 32-bit scalar: loads of what no earlier launch writes, reduced) is in: those loads
    come before the wait. Returns `after` whatever value is."""
    return tl.inline_asm_elementwise("griddepcontrol.wait; mov.u32 $0, $2;", "=r,r,r",
                                     [value.to(tl.int32, bitcast=True), after], dtype=tl.int32, is_pure=True, pack=1)
