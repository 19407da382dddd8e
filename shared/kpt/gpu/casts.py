"""The fp32 cast of a reduced-precision model's output, done by the GEMM that produces it.

A bf16 or fp16 candidate keeps an fp32 interface (kpt.optimize.graph_passes.CastBoundary), so a language model's
LM head writes its logits in bf16 and a second kernel reads them back and writes them again as fp32. On the H200,
GPT-2 at b8 s512 (8x512x50257 logits) spends 0.305 ms of its 2.76 ms of device time in that cast, in our build and
in torch.compile's alike. cuBLAS can write the fp32 result itself: aten.mm.dtype takes bf16/fp16 operands,
accumulates in fp32 as the bf16 GEMM does, and stores fp32, so the logits also skip their last bf16 rounding.

fuse_output_casts rewrites, in the exported program, each fp32 cast whose input is a bias-free linear in bf16 or
fp16 that nothing else uses (an LM head, a classifier without bias) into mm(out_dtype=float32) over the
flattened input (the weight padded to a multiple of ALIGN rows), for products of at least MIN_ROWS rows whose
depth is a multiple of ALIGN. Only where Inductor lowers mm's out_dtype (it then calls cuBLAS: torch 2.13's
Inductor offers no Triton template for an out_dtype) and for a CUDA device: aten.mm.dtype has no CPU kernel.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)
aten = torch.ops.aten
CASTS = (aten.to.dtype, aten._to_copy.default)
REDUCED = (torch.bfloat16, torch.float16)
# A product of fewer rows (a decode step's matrix-vector product) keeps Inductor's reduction kernel, which casts
# its small output as it stores it; the cast kernel costs at GPT-2's 4096 rows and a prefill's 2048.
MIN_ROWS = 64
# cuBLAS's fast GEMMs need 16-byte aligned rows. Inductor pads a plain mm's operands to reach them (pad_mm), not an
# mm.dtype: on the H200, GPT-2's 50257-wide LM head writing fp32 ran cutlass_75_tensorop_s1688gemm_bf16_128x128_tn
# _align1 in 3.35 ms (2026-12-04). So the rewrite pads the weight's rows to a multiple of ALIGN itself and returns
# the first n columns, a strided view of the wider fp32 result (Inductor keeps an output's eager strides). Padded to
# 50264, the GEMM writing fp32 took 0.544 ms against 1.072 ms for the bf16 GEMM and its cast (bench/out_cast.py,
# H200). A depth that is not a multiple of ALIGN keeps its cast: padding it would copy the activations too.
ALIGN = 8
DONE = "fp32 output cast(s) done by their GEMM"  # what fuse_output_casts reports, after the count
# The C functions an AOTInductor package may call for ATen ops on CUDA.
SHIM = os.path.join(os.path.dirname(torch.__file__), "include", "torch", "csrc", "inductor", "aoti_torch", "generated",
                    "c_shim_cuda.h")


def supported() -> bool:
    """Whether this torch's Inductor lowers aten.mm.dtype (its mm lowering takes out_dtype) and AOTInductor's C shim
    can call it, on a CUDA build: ROCm's mm.dtype has not run on AMD hardware here, so a ROCm build keeps its
    casts."""
    if torch.version.hip is not None:
        return False
    try:
        from torch._inductor.kernel import mm
    except ImportError:
        return False
    return "out_dtype" in inspect.signature(mm.tuned_mm).parameters and declares("aoti_torch_cuda_mm_dtype_out")


def declares(function: str, shim: str | None = None) -> bool:
    """Whether the C shim header (SHIM unless given) declares that function (an ATen op's, which an AOTInductor
    package may call)."""
    return function in _shim(shim or SHIM)


@functools.cache
def _shim(shim: str) -> str:
    """The C shim header's text, read once per process and path (every GPU compile asks); "" where it is missing."""
    try:
        with open(shim, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _cast_to(node: torch.fx.Node) -> torch.dtype | None:
    if node.op != "call_function" or node.target not in CASTS:
        return None
    if node.target == aten.to.dtype:
        return node.args[1] if len(node.args) > 1 else node.kwargs.get("dtype")
    return node.kwargs.get("dtype")


def sole_linear(node: torch.fx.Node) -> torch.fx.Node | None:
    """The aten.linear node that is node's first argument where node alone reads it (its dtype assertions aside)."""
    src = node.args[0] if node.args else None
    if not isinstance(src, torch.fx.Node) or src.op != "call_function" or src.target != aten.linear.default:
        return None
    return src if [u for u in src.users if u.target != aten._assert_tensor_metadata.default] == [node] else None


def many_rows(xv: torch.Tensor) -> bool:
    """Whether a linear's input has MIN_ROWS rows or more (a dynamic dim: a prefill-sized product, as far as known);
    a decode step's matrix-vector product keeps Inductor's own kernel."""
    rows = 1
    for d in xv.shape[:-1]:
        rows *= d if isinstance(d, int) else MIN_ROWS
    return rows >= MIN_ROWS


def _head(cast: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node] | None:
    """(input, weight) of the bias-free reduced-precision linear this fp32 cast alone reads, or None."""
    src = sole_linear(cast)
    if src is None or len(src.args) > 2 and src.args[2] is not None or src.kwargs.get("bias") is not None:
        return None
    x, w = src.args[:2]
    xv, wv = x.meta.get("val"), w.meta.get("val")
    if not (isinstance(xv, torch.Tensor) and isinstance(wv, torch.Tensor)):
        return None
    if xv.dtype not in REDUCED or wv.dtype != xv.dtype or wv.dim() != 2 or xv.dim() < 2:
        return None
    if not all(isinstance(d, int) for d in wv.shape) or wv.shape[1] % ALIGN:
        return None  # an unaligned depth: cuBLAS's slow kernels, as measured above
    if not many_rows(xv):
        return None  # a decode step's product: Inductor's own matrix-vector kernel casts as it stores
    return x, w


def call(graph: torch.fx.Graph, target, args: tuple, fake, kwargs: dict | None = None) -> torch.fx.Node:  # noqa: ANN001 - an op overload
    """A new call_function node (at the graph's insertion point) with its fake value recorded."""
    node = graph.call_function(target, args, kwargs or {})
    vals = tuple(a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args)
    with fake:
        node.meta["val"] = target(*vals, **(kwargs or {}))
    return node


def replace_linear(graph: torch.fx.Graph, node: torch.fx.Node, linear: torch.fx.Node, fake,  # noqa: ANN001 - a FakeTensorMode
                   product: Callable[[torch.fx.Node], torch.fx.Node]) -> None:
    """Replaces `node` (the end of a pattern over `linear`, which nothing else reads) by product(linear's input
    flattened to 2-D): node itself becomes the reshape back to the input's leading dims, so its users and the graph
    signature's output names stay valid; linear goes, with its dtype assertions."""
    x, w = linear.args[:2]
    xv, (n_out, k) = x.meta["val"], w.meta["val"].shape
    with graph.inserting_before(node):
        flat = call(graph, aten.reshape.default, (x, [-1, k]), fake) if xv.dim() > 2 else x
        out = product(flat)
        lead = [d if isinstance(d, int) else call(graph, aten.sym_size.int, (x, i), fake)
                for i, d in enumerate(xv.shape[:-1])]
    node.target, node.args, node.kwargs = aten.reshape.default, (out, [*lead, n_out]), {}
    for user in list(linear.users):
        graph.erase_node(user)  # its dtype assertions
    graph.erase_node(linear)


def fuse_output_casts(ep: torch.export.ExportedProgram) -> str:
    """Rewrites, in place, each fp32 cast of a bias-free bf16/fp16 linear's output into one GEMM that writes fp32;
    returns what it did ("" when nothing)."""
    heads = [(n, _head(n)) for n in ep.graph.nodes if _cast_to(n) == torch.float32]
    heads = [(cast, xw) for cast, xw in heads if xw is not None]
    if not heads:
        return ""
    graph, done = ep.graph, 0
    for cast, (x, w) in heads:
        linear = cast.args[0]
        xv, wv = x.meta["val"], w.meta["val"]
        fake = torch._guards.detect_fake_mode([xv, wv])
        if fake is None:  # values without a fake mode: the new nodes' shapes could not be recorded
            continue
        def product(flat: torch.fx.Node, w: torch.fx.Node = w, n_out: int = wv.shape[0], fake=fake) -> torch.fx.Node:  # noqa: ANN001
            pad = -n_out % ALIGN
            wide = call(graph, aten.constant_pad_nd.default, (w, [0, 0, 0, pad]), fake) if pad else w
            mm = call(graph, aten.mm.dtype, (flat, call(graph, aten.t.default, (wide,), fake), torch.float32), fake)
            return call(graph, aten.slice.Tensor, (mm, 1, 0, n_out), fake) if pad else mm

        replace_linear(graph, cast, linear, fake, product)
        done += 1
    if not done:
        return ""
    graph.lint()
    ep.graph_module.recompile()
    log.debug("%d fp32 output cast(s) done by their GEMM", done)
    return f"{done} {DONE}"
