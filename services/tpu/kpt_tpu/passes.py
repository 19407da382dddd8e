"""TPU passes: bf16 by explicit casts, int8 weight-only through torch_xla's quantized matmul, and
the final pass that writes the XLA artifact and compiles each shape bucket once.

bf16 keeps fp32 weights and casts them (and the activations) to bf16 right at each matmul/conv, the
result back to fp32: norms, softmax and residual sums stay fp32, XLA fuses the casts into the
consumer, and the StableHLO weights stay plain numpy arrays (numpy has no bfloat16).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kpt.optimize import inputs as inp
from kpt.optimize.passes import Artifact, Outcome, PassConfig, Work, register
from kpt_tpu import artifact, buckets, runtime


class BF16Linear(nn.Module):
    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = lin.weight, lin.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.to(torch.bfloat16) if self.bias is not None else None
        return F.linear(x.to(torch.bfloat16), self.weight.to(torch.bfloat16), b).to(x.dtype)


class BF16Conv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        b = c.bias.to(torch.bfloat16) if c.bias is not None else None
        return F.conv2d(x.to(torch.bfloat16), c.weight.to(torch.bfloat16), b, c.stride, c.padding, c.dilation,
                        c.groups).to(x.dtype)


class Int8Linear(nn.Module):
    """Symmetric per-output-channel int8 weights; activations stay fp32 (weight-only)."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        from torch_xla.experimental.xla_quantized_matmul import XlaQuantizedLinear

        w = lin.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.q = XlaQuantizedLinear(lin.in_features, lin.out_features, is_symmetric=True)
        self.q.load_quantized_weight(q, scale)
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.q(x)
        return y + self.bias if self.bias is not None else y


def _replace(module: nn.Module, kinds: tuple[type, ...], make) -> int:
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, kinds):
            setattr(module, name, make(child))
            n += 1
        else:
            n += _replace(child, kinds, make)
    return n


@dataclass(frozen=True)
class XlaBF16(PassConfig):
    name: ClassVar[str] = "xla_bf16_casts"


_MATMULS = ("linear", "mm", "addmm", "bmm", "baddbmm", "matmul", "conv2d", "convolution")


def _graph_bf16(gm: torch.fx.GraphModule) -> int:
    """Casts around every matmul/conv op of an exported graph (uploaded programs have no nn.Linear left)."""
    targets = {getattr(torch.ops.aten, n).default for n in _MATMULS if hasattr(torch.ops.aten, n)}
    n = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in targets:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dtype != torch.float32:
            continue
        with gm.graph.inserting_before(node):
            node.args = tuple(gm.graph.call_function(torch.ops.aten._to_copy.default, (a,), {"dtype": torch.bfloat16})
                              if isinstance(a, torch.fx.Node) else a for a in node.args)
        with gm.graph.inserting_after(node):
            back = gm.graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": torch.float32})
        node.replace_all_uses_with(back, delete_user_cb=lambda user, back=back: user is not back)
        n += 1
    gm.recompile()
    return n


@register(XlaBF16)
def _bf16(cfg: XlaBF16, work: Work) -> Outcome:
    if "bf16" not in work.allowed:
        return Outcome(False, "the job's precision excludes bf16")
    n = _replace(work.module, (nn.Linear,), BF16Linear)
    n += _replace(work.module, (nn.Conv2d,), BF16Conv2d)
    if not n and isinstance(work.module, torch.fx.GraphModule):
        n = _graph_bf16(work.module)
    if not n:
        return Outcome(False, "no Linear or Conv2d layer to compute in bf16")
    work.precision = "bf16"
    return Outcome(True, f"{n} Linear/Conv2d layers compute in bf16 (explicit casts; fp32 weights, inputs, "
                         "outputs, norms and softmax)")


@dataclass(frozen=True)
class XlaInt8WeightOnly(PassConfig):
    name: ClassVar[str] = "xla_int8_weight_only"
    min_features: int = 16  # smaller layers gain nothing and lose the most accuracy

    def __post_init__(self) -> None:
        if self.min_features < 1:
            raise ValueError("min_features must be >= 1")


@register(XlaInt8WeightOnly)
def _int8(cfg: XlaInt8WeightOnly, work: Work) -> Outcome:
    if "int8" not in work.allowed:
        return Outcome(False, "the job's precision excludes int8")
    n = _replace(work.module, (nn.Linear,),
                 lambda lin: Int8Linear(lin) if min(lin.in_features, lin.out_features) >= cfg.min_features else lin)
    n = sum(isinstance(m, Int8Linear) for m in work.module.modules())
    if not n:
        return Outcome(False, f"no Linear layer with >= {cfg.min_features} features")
    work.precision = "int8"
    return Outcome(True, f"{n} Linear layers hold int8 per-channel weights (torch_xla quantized_matmul, "
                         "fp32 activations)")


@dataclass(frozen=True)
class XlaCompile(PassConfig):
    """Write the artifact (artifact.py), then compile it once per shape bucket with dynamo's openxla
    backend, filling the persistent compilation cache. compile_s is the XLA compile time."""

    name: ClassVar[str] = "xla_openxla_compile"
    phase: ClassVar[str] = "compile"
    file: str = "model.stablehlo.zip"
    warm_buckets: bool = True


def bucket_inputs(spec: inp.InputSpec, plan: buckets.Plan) -> list[tuple[dict[str, int], tuple[torch.Tensor, ...]]]:
    """One input set per bucket combination of the dynamic symbols (each symbol walks its buckets with
    the others at their example's bucket)."""
    base = inp.sizes(spec)
    # the plan names dims by the program's symbols (s0, ...); inputs.sizes by the spec's names
    spec_name = {sym: inp._symbol(spec.tensors[i], axis, spec.tensors[i].dims[axis]) for i, axis, sym, _ in plan.pads}
    combos = [dict(base)]
    for sym, sizes in plan.buckets().items():
        for b in sizes:
            c = dict(base)
            c[spec_name[sym]] = b
            if c not in combos:
                combos.append(c)
    out = []
    for c in combos:
        x = []
        gen = torch.Generator().manual_seed(0)
        for t in spec.tensors:
            shape = inp.shape(t, c)
            x.append(torch.randint(max(t.low, 0), max(t.high, 1), shape, generator=gen).to(t.torch_dtype)
                     if t.is_integer else torch.randn(shape, generator=gen).to(t.torch_dtype))
        out.append((c, tuple(x)))
    return out


@register(XlaCompile)
def _compile(cfg: XlaCompile, work: Work) -> Outcome:
    os.makedirs(work.workdir, exist_ok=True)
    path = os.path.join(work.workdir, cfg.file)
    work.say("torch.export and StableHLO")
    manifest = artifact.write(work.module, work.spec, work.precision, path)
    work.artifact = Artifact(path, artifact.FORMAT, f"torch_xla {manifest['torch_xla']} openxla on "
                                                    f"{runtime.device_kind()}")
    plan = buckets.Plan.from_json(manifest["buckets"])
    if not cfg.warm_buckets:
        return Outcome(True, f"wrote {cfg.file}; buckets {plan.buckets()}")
    prog = artifact.load(path)
    n0, s0, t0 = runtime.compilations(), runtime.compile_seconds(), time.perf_counter()
    sets = bucket_inputs(work.spec, plan)
    with torch.no_grad():
        for i, (_, x) in enumerate(sets):
            work.say(f"XLA compile of bucket {i + 1}/{len(sets)}")
            prog(*x)
            runtime.sync()
    compiles, secs = runtime.compilations() - n0, runtime.compile_seconds() - s0
    work.compile_s = secs
    notes = f"; {'; '.join(plan.notes)}" if plan.notes else ""
    return Outcome(True, f"wrote {cfg.file} (program.pt2 + StableHLO); {len(sets)} bucket shape(s) "
                         f"{plan.buckets() or 'static'}: {compiles} XLA compilation(s), {secs:.2f}s compile, "
                         f"{time.perf_counter() - t0:.2f}s wall{notes}")
