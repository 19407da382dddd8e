"""Device-independent passes: conv+bn folding, the SDPA report, precision casts, saving the program."""

from __future__ import annotations

import functools
import operator
import os
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.nn.utils.fusion import fuse_conv_bn_weights

from kpt.optimize.passes import Artifact, Outcome, PassConfig, Work, register

aten = torch.ops.aten
_CONV = {aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.convolution.default}
_BN = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
_SDPA = {aten.scaled_dot_product_attention.default, aten._scaled_dot_product_flash_attention_for_cpu.default,
         aten._scaled_dot_product_efficient_attention.default, aten._scaled_dot_product_flash_attention.default}
_MATMUL = {aten.matmul.default, aten.bmm.default, aten.baddbmm.default}
_SOFTMAX = {aten.softmax.int, aten._softmax.default}


def _get(gm: fx.GraphModule, node: object) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise LookupError("not a constant")
    return functools.reduce(getattr, node.target.split("."), gm)


def _bn_parts(bn: fx.Node) -> tuple | None:
    """(weight, bias, running_mean, running_var, eps, output users) of an eval-mode BN node."""
    if bn.target is aten.batch_norm.default:
        _, w, b, rm, rv, training, _momentum, eps = bn.args[:8]
        return None if training else (w, b, rm, rv, eps, [bn])
    _, w, b, rm, rv, _momentum, eps = bn.args[:7]
    users = list(bn.users)
    if any(u.target is not operator.getitem for u in users) or any(u.args[1] != 0 and u.users for u in users):
        return None
    return w, b, rm, rv, eps, [u for u in users if u.args[1] == 0]


def fold_conv_bn(gm: fx.GraphModule) -> list[str]:
    """Fold eval-mode BatchNorm into the conv feeding it, in place; returns the folded conv names."""
    folded = []
    for bn in list(gm.graph.nodes):
        if bn.op != "call_function" or bn.target not in _BN:
            continue
        conv = bn.args[0]
        if not (isinstance(conv, fx.Node) and conv.target in _CONV and len(conv.users) == 1):
            continue
        parts = _bn_parts(bn)
        if parts is None:
            continue
        w, b, rm, rv, eps, outs = parts
        try:
            cw, cb, bw, bb = _get(gm, conv.args[1]), _get(gm, conv.args[2] if len(conv.args) > 2 else None), _get(gm, w), _get(gm, b)
            mean, var = _get(gm, rm), _get(gm, rv)
        except LookupError:
            continue  # weights computed at run time: nothing to fold ahead of time
        transposed = conv.target is aten.convolution.default and bool(conv.args[6])
        fw, fb = fuse_conv_bn_weights(cw, cb, mean, var, eps, bw, bb, transpose=transposed)
        prefix = f"_kpt_folded_{len(folded)}"
        gm.register_parameter(prefix + "_weight", torch.nn.Parameter(fw.detach(), requires_grad=False))
        gm.register_parameter(prefix + "_bias", torch.nn.Parameter(fb.detach(), requires_grad=False))
        with gm.graph.inserting_before(conv):
            wn, bn_node = gm.graph.get_attr(prefix + "_weight"), gm.graph.get_attr(prefix + "_bias")
        args = list(conv.args) + [None] * max(0, 3 - len(conv.args))
        args[1], args[2] = wn, bn_node
        conv.args = tuple(args)
        for out in outs:
            out.replace_all_uses_with(conv)
        for user in list(bn.users):
            gm.graph.erase_node(user)
        gm.graph.erase_node(bn)
        folded.append(conv.name)
    if folded:
        gm.graph.eliminate_dead_code()
        _drop_unused_attrs(gm)
        gm.recompile()
    return folded


def _drop_unused_attrs(gm: fx.GraphModule) -> None:
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [n for n, _ in list(gm.named_parameters()) + list(gm.named_buffers())]:
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(gm.get_submodule(owner) if owner else gm, leaf)


@dataclass(frozen=True)
class FoldConvBatchNorm(PassConfig):
    name: ClassVar[str] = "fold_conv_bn"


@register(FoldConvBatchNorm)
def _fold(cfg: FoldConvBatchNorm, work: Work) -> Outcome:
    # An eager module without batchnorm layers has nothing to fold: no export (about 20 s for a 1B Llama).
    # Graphs (uploads, earlier passes' output) hold batchnorm as aten calls, so they are always looked at.
    if not any(isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, fx.GraphModule)) for m in work.module.modules()):
        return Outcome(False, "no batchnorm layers in the model")
    gm = work.export().module()
    folded = fold_conv_bn(gm)
    if not folded:
        return Outcome(False, "no eval-mode conv+batchnorm pairs with constant weights in the graph")
    work.module = gm
    return Outcome(True, f"folded {len(folded)} batchnorm(s) into conv weights ({', '.join(folded[:8])})")


@dataclass(frozen=True)
class SdpaAttention(PassConfig):
    """Attention as one fused scaled_dot_product_attention call. Zoo transformers are built with
    attn_implementation="sdpa"; for uploaded graphs this reports what the graph contains."""

    name: ClassVar[str] = "sdpa_attention"


def _unfused_attention(gm: fx.GraphModule) -> int:
    """softmax nodes fed by a matmul and feeding a matmul: attention written out by hand."""
    def fed_by_matmul(n: fx.Node, depth: int = 4) -> bool:
        return depth > 0 and isinstance(n, fx.Node) and (
            n.target in _MATMUL or any(fed_by_matmul(a, depth - 1) for a in n.all_input_nodes))
    return sum(1 for n in gm.graph.nodes if n.target in _SOFTMAX and fed_by_matmul(n.args[0])
               and any(u.target in _MATMUL for u in n.users))


@register(SdpaAttention)
def _sdpa(cfg: SdpaAttention, work: Work) -> Outcome:
    ep = work.export()
    fused = sum(1 for n in ep.graph.nodes if n.target in _SDPA)
    unfused = _unfused_attention(ep.graph_module)
    if fused:
        return Outcome(True, f"{fused} attention call(s) run fused scaled_dot_product_attention"
                       + (f"; {unfused} unfused softmax attention pattern(s) remain" if unfused else ""))
    if unfused:
        return Outcome(False, f"{unfused} hand-written attention pattern(s) (matmul-softmax-matmul) found and not "
                       "rewritten here; Inductor's attention-fusion patterns may still fuse them at compile time. "
                       "For HF models, export with attn_implementation='sdpa'.")
    return Outcome(False, "no attention in the graph")


# Buffers that keep their precision when a model is cast down: rotary-embedding inverse frequencies (HF's
# `inv_freq`/`original_inv_freq`, the decode step's `inv_freq`). Rounded to bf16 they rotate a token at position
# p by p times a 0.2%-off angle: about 2 rad of error at p = 2000. On the H200 the 1B Llama's decode step cast
# whole gave 3 dB SQNR against fp32; a from_pretrained(torch_dtype=bf16) model keeps them in fp32, as here.
KEEP_PRECISION = ("inv_freq", "original_inv_freq")


def keeps_precision(name: str) -> bool:
    """Whether the parameter or buffer of this dotted name stays as it is when the model is cast down."""
    return name.rpartition(".")[2] in KEEP_PRECISION


def cast_down(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """module.to(dtype), except the buffers named in KEEP_PRECISION, which stay as they were."""
    keep = [(name, b) for name, b in module.named_buffers() if keeps_precision(name)]
    module = module.to(dtype)
    for name, b in keep:
        owner, _, attr = name.rpartition(".")
        module.get_submodule(owner)._buffers[attr] = b
    return module


class CastBoundary(torch.nn.Module):
    """Runs `inner` in `dtype` behind an fp32 interface: float inputs cast in, float outputs cast back."""

    def __init__(self, inner: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = cast_down(inner, dtype)
        self.dtype = dtype
        self.training = False  # not .eval(): unlifted exported programs refuse train()/eval() calls

    def forward(self, *args: torch.Tensor) -> object:
        args = tuple(a.to(self.dtype) if a.is_floating_point() else a for a in args)
        out = self.inner(*args)
        return pytree.tree_map_only(torch.Tensor, lambda t: t.float() if t.is_floating_point() else t, out)


def cast_module(work: Work, dtype: torch.dtype, precision: str) -> int:
    """Cast the candidate's weights to dtype behind an fp32 boundary; returns the tensors cast."""
    n = sum(1 for name, t in list(work.module.named_parameters()) + list(work.module.named_buffers())
            if t.is_floating_point() and not keeps_precision(name))
    work.module = CastBoundary(work.module, dtype)
    work.precision = precision
    return n


@dataclass(frozen=True)
class SaveExportedProgram(PassConfig):
    """The O0 artifact: the model itself, as torch.export.save writes it."""

    name: ClassVar[str] = "exported_program"
    file: str = "model.pt2"


@register(SaveExportedProgram)
def _save(cfg: SaveExportedProgram, work: Work) -> Outcome:
    path = os.path.join(work.workdir, cfg.file)
    os.makedirs(work.workdir, exist_ok=True)
    torch.export.save(work.export(), path)
    work.artifact = Artifact(path, "ARTIFACT_FORMAT_EXPORTED_PROGRAM", "torch.export eager")
    return Outcome(True, f"saved the exported program unchanged ({os.path.getsize(path)} bytes)")
