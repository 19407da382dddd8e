"""Shape buckets for declared dynamic dims: inputs are padded up to the bucket's size, so XLA
compiles one program per bucket instead of one per size; outputs are cut back to the real size.

Buckets are powers of two clipped to the dim's [min, max]: batch 1..64 gives 1, 2, 4, ..., 64.
Which output axes follow which input dim is read from the exported program (an output dim whose
size is exactly that dim's symbol). A dim that reaches an output any other way (e.g. 2*s0 after
a reshape) is not bucketed: padding it could not be undone, so each size compiles on its own.
Padding is checked, not assumed, to leave results unchanged: the accuracy check runs random
sizes in range (a model that mixes rows, e.g. batch statistics, fails it and falls back).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy
import torch
import torch.utils._pytree as pytree

from kpt.optimize import inputs as inp

MAX_BUCKETS = 64


def bucket(n: int, lo: int, hi: int) -> int:
    """The smallest power of two >= n, clipped to [lo, hi]."""
    b = 1
    while b < n:
        b *= 2
    return max(lo, min(b, hi))


def bucket_sizes(lo: int, hi: int) -> list[int]:
    out = sorted({bucket(n, lo, hi) for n in [lo] + [2 ** k for k in range(64) if lo <= 2 ** k <= hi] + [hi]})
    return out[:MAX_BUCKETS]


@dataclass(frozen=True)
class Plan:
    pads: tuple[tuple[int, int, str, int], ...]  # (input index, axis, symbol, pad value)
    slices: tuple[tuple[int, int, str], ...]  # (output leaf index, axis, symbol)
    ranges: dict[str, tuple[int, int]]  # symbol -> [min, max]
    unbucketed: tuple[str, ...]  # dynamic symbols left unpadded, with the reason in `notes`
    notes: tuple[str, ...]

    def to_json(self) -> dict:
        return {"pads": [list(p) for p in self.pads], "slices": [list(s) for s in self.slices],
                "ranges": {k: list(v) for k, v in self.ranges.items()}, "unbucketed": list(self.unbucketed),
                "notes": list(self.notes)}

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        return cls(tuple(tuple(p) for p in d["pads"]), tuple(tuple(s) for s in d["slices"]),
                   {k: tuple(v) for k, v in d["ranges"].items()}, tuple(d["unbucketed"]), tuple(d["notes"]))

    def buckets(self) -> dict[str, list[int]]:
        return {s: bucket_sizes(*r) for s, r in self.ranges.items()}


def plan(ep: torch.export.ExportedProgram, spec: inp.InputSpec) -> Plan:
    """Which input axes to pad and which output axes to cut, from a program exported with the spec's
    dynamic dims."""
    names = set(ep.graph_signature.user_inputs)
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in names]
    pads, ranges = [], {}
    for i, (node, t) in enumerate(zip(placeholders, spec.tensors, strict=True)):
        for axis, d in enumerate(t.dims):
            s = node.meta["val"].shape[axis]
            if not d.dynamic or isinstance(s, int):
                continue
            expr = s.node.expr
            if isinstance(expr, sympy.Symbol):
                pads.append((i, axis, str(expr), t.low if t.is_integer and t.low > 0 else 0))
                ranges[str(expr)] = (d.min, d.max)  # the spec was checked against the program's range
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    leaves = [v.meta.get("val") for v in pytree.tree_leaves(out_node.args[0]) if isinstance(v, torch.fx.Node)]
    slices, bad, notes = [], set(), []
    for o, val in enumerate(leaves):
        if not isinstance(val, torch.Tensor):
            continue
        for axis, s in enumerate(val.shape):
            if isinstance(s, int):
                continue
            expr = s.node.expr
            if isinstance(expr, sympy.Symbol) and str(expr) in ranges:
                slices.append((o, axis, str(expr)))
            else:
                for sym in map(str, expr.free_symbols):
                    if sym in ranges and sym not in bad:
                        bad.add(sym)
                        notes.append(f"{sym} reaches output {o} as {expr}: not bucketed")
    return Plan(tuple(p for p in pads if p[2] not in bad), tuple(s for s in slices if s[2] not in bad),
                {k: v for k, v in ranges.items() if k not in bad}, tuple(sorted(bad)), tuple(notes))


def pad_inputs(args: tuple[torch.Tensor, ...], p: Plan) -> tuple[list[torch.Tensor], dict[str, int]]:
    """Host tensors padded up to their buckets; returns them and the real size of each symbol."""
    out, sizes = list(args), {}
    for i, axis, sym, value in p.pads:
        n = out[i].shape[axis]
        sizes[sym] = n
        b = bucket(n, *p.ranges[sym])
        if b > n:
            shape = list(out[i].shape)
            shape[axis] = b - n
            out[i] = torch.cat([out[i], out[i].new_full(shape, value)], dim=axis)
    return out, sizes


def cut_outputs(out: object, sizes: dict[str, int], p: Plan) -> object:
    leaves, tree = pytree.tree_flatten(out)
    for o, axis, sym in p.slices:
        if sym in sizes and leaves[o].shape[axis] != sizes[sym]:
            leaves[o] = leaves[o].narrow(axis, 0, sizes[sym])
    return pytree.tree_unflatten(leaves, tree)
