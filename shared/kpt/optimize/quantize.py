"""int8 quantization pass (torchao): dynamic per-token int8 activations, per-channel int8 weights,
for linear layers. Inductor lowers the quantized matmuls to int8 GEMMs (VNNI on x86)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx as fx

from kpt.optimize.passes import Outcome, PassConfig, Work, register

aten = torch.ops.aten


def lift_linears(gm: fx.GraphModule) -> int:
    """Turn aten.linear calls with constant weights into nn.Linear submodules (what torchao's
    quantize_ rewrites). Graphs from uploads and from graph passes have no nn.Linear left."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.target is not aten.linear.default:
            continue
        w = node.args[1]
        b = node.args[2] if len(node.args) > 2 else None
        if not (isinstance(w, fx.Node) and w.op == "get_attr") or (b is not None and getattr(b, "op", "") != "get_attr"):
            continue
        weight = functools.reduce(getattr, w.target.split("."), gm)
        bias = functools.reduce(getattr, b.target.split("."), gm) if b is not None else None
        lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
        lin.weight = torch.nn.Parameter(weight.detach(), requires_grad=False)
        if bias is not None:
            lin.bias = torch.nn.Parameter(bias.detach(), requires_grad=False)
        name = f"_kpt_linear_{count}"
        gm.add_submodule(name, lin)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        count += 1
    if count:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return count


@dataclass(frozen=True)
class Int8DynamicLinear(PassConfig):
    name: ClassVar[str] = "int8_dynamic_linear"


@register(Int8DynamicLinear)
def _int8(cfg: Int8DynamicLinear, work: Work) -> Outcome:
    if "int8" not in work.allowed:
        return Outcome(False, "the job's precision excludes int8")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    module = work.module
    if isinstance(module, fx.GraphModule):
        lift_linears(module)
    n = sum(1 for m in module.modules() if isinstance(m, torch.nn.Linear))
    if n == 0:
        return Outcome(False, "no linear layers with constant weights: int8 here covers linear layers only")
    quantize_(module, Int8DynamicActivationInt8WeightConfig())
    work.precision = "int8"
    return Outcome(True, f"{n} linear layer(s) to int8 (per-channel weights, dynamic per-token activations); "
                   "other ops stay fp32")
