"""A linear layer's GELU done in its GEMM's epilogue (cuBLASLt), where a trial measures it faster (O3).

On torch 2.11 an AOTInductor package cannot hand cuBLASLt a linear layer's 1-D bias: Inductor's max-autotune gives
its ATen addmm choice the bias expanded to the output's shape (fixed upstream in pytorch/pytorch#179808), and
torch.compile's bias_addmm choice exists only with the Python wrapper. BERT-base's FFN up-projection (b8 s384, on
the H100, 2026-12-07) therefore ran a copy of the bias into the output (0.056 ms a forward), cuBLAS with beta 1
(0.230 ms) and the GELU as a kernel of its own (0.207 ms): 0.49 of the package's 1.96 ms of device time.

aten._addmm_activation(bias, x, w.t(), use_gelu=True) takes the 1-D bias and, on CUDA, asks cuBLASLt for its
GELU_BIAS epilogue: bias and GELU applied as the GEMM stores its tile. Inductor keeps the op as an ATen call and
AOTInductor's C shim has it (aoti_torch_cuda__addmm_activation). Its GELU is the tanh approximation (ATen's own
decomposition says so for CUDA), where BERT and ViT ask for the exact erf form; the two differ by at most about
5e-4 (near x = +-2), under one bf16 rounding step of the values there (7.8e-3 at 1-2). So the rewrite is not
exact for an erf GELU: it is an O3 choice, taken only where the GeluEpilogue pass's trial measures the rewritten
graph faster, and the level's accuracy check against eager fp32 decides as for every other O3 change.

fuse_gelus rewrites, in the exported program, each GELU whose input is a biased bf16/fp16 linear that nothing
else reads, for products of at least casts.MIN_ROWS rows (a decode step's matrix-vector product keeps Inductor's
own kernel).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from kpt.gpu import casts
from kpt.optimize.passes import Outcome, PassConfig, Work, register

log = logging.getLogger(__name__)
aten = torch.ops.aten
# Set on the candidate's module when the pass keeps the rewrite: the compile's export applies it (kpt.gpu.exported).
ATTR = "_kpt_gelu_epilogue"
DONE = "GELU(s) in their GEMM's epilogue (cuBLASLt, tanh approximation)"  # what fuse_gelus reports, after the count
APPROXIMATIONS = ("none", "tanh")  # erf (approximated by the epilogue's tanh form) and tanh (exact)


def supported() -> bool:
    """Whether AOTInductor's C shim can call aten._addmm_activation on CUDA, on a CUDA build (hipBLASLt's GELU
    epilogue has not run on AMD hardware here)."""
    return torch.version.hip is None and casts.declares("aoti_torch_cuda__addmm_activation")


def _approximation(node: torch.fx.Node) -> str | None:
    if node.op != "call_function" or node.target != aten.gelu.default:
        return None
    return node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")


def _linear(gelu: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node, torch.fx.Node] | None:
    """(input, weight, bias) of the biased reduced-precision linear this GELU alone reads, or None."""
    if _approximation(gelu) not in APPROXIMATIONS:
        return None
    src = casts.sole_linear(gelu)
    bias = None if src is None else src.args[2] if len(src.args) > 2 else src.kwargs.get("bias")
    if not isinstance(bias, torch.fx.Node):
        return None
    x, w = src.args[:2]
    xv, wv, bv = (n.meta.get("val") for n in (x, w, bias))
    if not all(isinstance(v, torch.Tensor) for v in (xv, wv, bv)):
        return None
    if xv.dtype not in casts.REDUCED or {wv.dtype, bv.dtype} != {xv.dtype} or wv.dim() != 2 or bv.dim() != 1:
        return None
    if xv.dim() < 2 or not all(isinstance(d, int) for d in wv.shape) or not casts.many_rows(xv):
        return None
    return x, w, bias


def _matches(ep: torch.export.ExportedProgram) -> list[tuple[torch.fx.Node, tuple]]:
    """Each GELU fuse_gelus would rewrite, with its linear's (input, weight, bias)."""
    return [(n, found) for n in ep.graph.nodes if (found := _linear(n)) is not None]


def candidates(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """The GELU nodes fuse_gelus would rewrite."""
    return [n for n, _ in _matches(ep)]


def fuse_gelus(ep: torch.export.ExportedProgram) -> str:
    """Rewrites, in place, each candidates() GELU and its linear into one aten._addmm_activation over the flattened
    input; returns what it did ("" when nothing)."""
    graph, done = ep.graph, 0
    for gelu, (x, w, bias) in _matches(ep):
        fake = torch._guards.detect_fake_mode([x.meta["val"], w.meta["val"]])
        if fake is None:  # values without a fake mode: the new nodes' shapes could not be recorded
            continue

        def product(flat: torch.fx.Node, w: torch.fx.Node = w, bias: torch.fx.Node = bias, fake=fake) -> torch.fx.Node:  # noqa: ANN001
            wt = casts.call(graph, aten.t.default, (w,), fake)
            return casts.call(graph, aten._addmm_activation.default, (bias, flat, wt), fake, {"use_gelu": True})

        casts.replace_linear(graph, gelu, gelu.args[0], fake, product)
        done += 1
    if not done:
        return ""
    graph.lint()
    ep.graph_module.recompile()
    return f"{done} {DONE}"


@dataclass(frozen=True)
class GeluEpilogue(PassConfig):
    """Times the exported graph with its linear layers' GELUs in their GEMMs' epilogues (fuse_gelus) against the
    graph as it is, both compiled and replayed as CUDA graphs (kpt.gpu.passes.time_trial), and keeps the rewrite
    for the compile where it measures at least min_speedup faster."""

    name: ClassVar[str] = "gelu_epilogue"
    min_speedup: float = 1.02  # below this the difference is within run-to-run noise of gpu_bench.compare


@register(GeluEpilogue)
def _gelu(cfg: GeluEpilogue, work: Work) -> Outcome:
    from kpt.gpu import exported
    from kpt.gpu.passes import decided_trial, on_gpu, timed_how

    if not on_gpu(work):
        return Outcome(False, "GEMM epilogues are tried on GPUs only")
    if not supported():
        return Outcome(False, "this torch's AOTInductor cannot call aten._addmm_activation on this device")
    ep, _ = exported.export_for_compile(work)
    base = ep.module()  # a copy: the rewrite below leaves it as exported
    done = fuse_gelus(ep)
    if not done:
        return Outcome(False, f"no GELU over a biased bf16/fp16 linear layer of at least {casts.MIN_ROWS} rows")
    times, reused = decided_trial("gelu_epilogue", "addmm_activation", base, ep.module(), work.example(), work.device)
    b, t = times["base_ms"], times["trial_ms"]
    measured = f"{b:.3f} -> {t:.3f} ms{timed_how(times)}" + (" (measured by an earlier job)" if reused else "")
    if b / t < cfg.min_speedup:
        return Outcome(False, f"{done}: measured no faster ({measured})")
    setattr(work.module, ATTR, True)
    return Outcome(True, f"{done}: {measured}")
