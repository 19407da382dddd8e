"""Attention masks that torch.export materializes where the eager model passes none.

transformers builds its attention mask lazily: eagerly, a model without padding calls
scaled_dot_product_attention with no mask (ViT) or with is_causal=True (GPT-2, Llama). Traced by torch.export,
the same model passes a materialized boolean mask, all true or lower-triangular, built from aranges of the static
sequence length. The fused backends then lose what the mask costs them: flash cannot take a mask at all, and
ViT's mask is an expanded view whose last dimension has stride 0, which no fused backend takes, so every
attention of the compiled ViT-B/16 (ours and torch.compile's) ran the math backend, upcast to fp32 (H200: 2.9 of
its 6.3 ms of device time, slower than eager bf16).

drop_static_masks rewrites such calls in the exported program, exactly: a mask that depends on no input value
(only on shapes, constants and weights) is evaluated once; all true (or an all-zero float mask) is dropped, and
the causal pattern becomes is_causal=True. Any other mask, or one that depends on an input (a padding mask),
stays as it is.

GPU passes use it through kpt.gpu.exported (the attention choice, the compile). The CPU service does not: on this project's
2-core CPU machine (torch 2.13) ViT-B/16 at batch 1, torch.compile'd, measured 221 ms with the mask and without.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch.export.graph_signature import InputKind

log = logging.getLogger(__name__)
aten = torch.ops.aten
SDPA = aten.scaled_dot_product_attention.default
# Ops that read only their first argument's metadata (shape, dtype, device), never its values.
METADATA_ONLY = {aten.ones_like.default, aten.zeros_like.default, aten.empty_like.default, aten.full_like.default,
                 aten.new_ones.default, aten.new_zeros.default, aten.new_empty.default, aten.new_full.default,
                 aten.sym_size.int, aten.sym_stride.int, aten.sym_numel.default, aten.sym_storage_offset.default}
SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _value_inputs(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The nodes whose values this node reads."""
    if node.target in METADATA_ONLY:
        first = node.args[0] if node.args else None
        return [n for n in node.all_input_nodes if n is not first]
    return node.all_input_nodes


def _input_dependent(ep: torch.export.ExportedProgram) -> set[torch.fx.Node]:
    """Nodes whose values depend on a user input's values (the graph is in topological order)."""
    users = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    dep: set[torch.fx.Node] = set()
    for node in ep.graph.nodes:
        if (node.op == "placeholder" and node.name in users) or any(a in dep for a in _value_inputs(node)):
            dep.add(node)
    return dep


def _ancestors(node: torch.fx.Node) -> set[torch.fx.Node]:
    seen, todo = set(), [node]
    while todo:
        for a in todo.pop().all_input_nodes:
            if a not in seen:
                seen.add(a)
                todo.append(a)
    return seen | {node}


def _static(node: torch.fx.Node) -> bool:
    """No symbolic value or shape: the node computes the same thing for every input the program accepts."""
    val = node.meta.get("val")
    if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return False
    return not isinstance(val, torch.Tensor) or all(isinstance(d, int) for d in val.shape)


def _placeholder_values(ep: torch.export.ExportedProgram, example: tuple) -> dict[str, object] | None:
    values, users = {}, list(example)
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            if not users:
                return None
            values[spec.arg.name] = users.pop(0)
        elif spec.target in ep.state_dict:
            values[spec.arg.name] = ep.state_dict[spec.target]
        elif spec.target in ep.constants:
            values[spec.arg.name] = ep.constants[spec.target]
    return values


def _evaluate(ep: torch.export.ExportedProgram, nodes: set[torch.fx.Node], placeholders: dict) -> dict:
    env: dict[torch.fx.Node, object] = {}
    with torch.no_grad():
        for node in ep.graph.nodes:
            if node not in nodes:
                continue
            if node.op == "placeholder":
                env[node] = placeholders[node.name]
            elif node.op == "get_attr":
                env[node] = getattr(ep.graph_module, node.target)
            else:
                args = torch.fx.node.map_arg(node.args, env.__getitem__)
                kwargs = torch.fx.node.map_arg(node.kwargs, env.__getitem__)
                env[node] = node.target(*args, **kwargs)
    return env


def classify(mask: torch.Tensor, q_len: int) -> str:
    """"all": the mask lets every query see every key; "causal": key j is seen by query i exactly when j <= i
    (square scores); "other" for anything else."""
    allowed = mask if mask.dtype == torch.bool else mask == 0
    if mask.dtype != torch.bool:
        blocked = mask[~allowed]
        # A float mask blocks with -inf or the dtype's lowest value (transformers): exp() of either is 0.
        if blocked.numel() and not bool((blocked <= torch.finfo(mask.dtype).min / 2).all()):
            return "other"
    if bool(allowed.all()):
        return "all"
    if mask.shape[-1] == mask.shape[-2] == q_len:
        tril = torch.ones(q_len, q_len, dtype=torch.bool, device=mask.device).tril()
        if bool((allowed == tril).all()):
            return "causal"
    return "other"


def _kind(ep: torch.export.ExportedProgram, mask: torch.fx.Node, nodes: set[torch.fx.Node], placeholders: dict,
          q_len: int) -> str:
    """classify() of an input-independent mask, or "other" where that cannot be told."""
    if not all(_static(n) for n in nodes):
        return "other"  # evaluated at one size, it would prove nothing for the others
    try:
        value = _evaluate(ep, nodes, placeholders)[mask]
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
        log.info("attention mask %s kept: evaluating it failed (%s: %s)", mask.name, type(e).__name__, e)
        return "other"
    return classify(value, q_len) if isinstance(value, torch.Tensor) else "other"


def _call(node: torch.fx.Node) -> dict:
    call = dict(zip(SDPA_ARGS, node.args, strict=False))
    call.update(node.kwargs)
    return call


def drop_static_masks(ep: torch.export.ExportedProgram, example: tuple) -> str:
    """Rewrites, in place, each attention call of ep whose mask is input-independent and all true (dropped) or
    causal (is_causal=True instead); returns what it did ("" when nothing)."""
    calls = [n for n in ep.graph.nodes if n.op == "call_function" and n.target == SDPA]
    masked = [n for n in calls if isinstance(_call(n).get("attn_mask"), torch.fx.Node)]
    if not masked:
        return ""
    placeholders = _placeholder_values(ep, example)
    if placeholders is None:
        return ""
    dependent = _input_dependent(ep)
    done: Counter = Counter()
    freed: set[torch.fx.Node] = set()
    kinds: dict[tuple[torch.fx.Node, int], str] = {}  # the layers of a model usually share one mask
    for node in masked:
        call = _call(node)
        mask = call["attn_mask"]
        if mask in dependent or call.get("dropout_p", 0.0) or call.get("is_causal", False):
            done["kept"] += 1
            continue
        nodes = _ancestors(mask)
        q_len = call["query"].meta["val"].shape[-2]
        if not isinstance(q_len, int):
            kind = "other"  # a dynamic sequence length
        elif (mask, q_len) in kinds:
            kind = kinds[mask, q_len]
        else:
            kind = kinds[mask, q_len] = _kind(ep, mask, nodes, placeholders, q_len)
        if kind == "other":
            done["kept"] += 1
            continue
        call["attn_mask"] = None
        call["is_causal"] = kind == "causal"
        node.args = (call.pop("query"), call.pop("key"), call.pop("value"))
        node.kwargs = {k: v for k, v in call.items() if k != "attn_mask"}
        done[kind] += 1
        freed |= nodes
    # The mask's construction, where nothing else uses it (an arange may also feed position embeddings).
    for n in reversed(list(ep.graph.nodes)):
        if n in freed and n.op == "call_function" and not n.users:
            ep.graph.erase_node(n)
    ep.graph_module.recompile()
    parts = [f"{done['all']} all-true mask(s) dropped" if done["all"] else "",
             f"{done['causal']} causal mask(s) made is_causal" if done["causal"] else "",
             f"{done['kept']} mask(s) kept" if done["kept"] else ""]
    return ", ".join(p for p in parts if p)
