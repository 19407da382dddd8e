"""The gaps between the 1B Llama's decode-step launches, uncompiled and compiled: the step through
kernels/decode_layer.py (bf16, batch 1) captured as a CUDA graph each way, the graphs replayed interleaved
(kpt.gpu.bench.compare), then a few replays profiled: each launch's start less the end of the launch before, its
median over the calls, summed and by boundary (the kernel before -> the kernel after); beside them each kernel
node's launch parameters and its function's attributes, read from the graph (cuda-bindings), and where the two
graphs' nodes differ; and each shape's launches' durations (by kernel and grid). Says whether the compiled step's
longer replay (1.192 against 1.146 ms, device time 1.051 against 1.036, H100, 2026-12-06) is its kernels' or its
boundaries', and which boundaries (its kernels': Inductor had tuned each call site of gemv.py's kernel on its own;
compiled_free is that, compiled now takes the eager picks; then Inductor's fp64 float arguments, which kernels/ now
truncate: compiled 1.0637 against 1.0640 ms, 2026-12-06).

    PYTHONPATH=.:shared python3 bench/graph_gaps.py > graph_gaps.json     (needs a CUDA device and cuda-bindings)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import statistics
import sys
from collections.abc import Callable

import torch

from bench import card

log = logging.getLogger("bench.graph_gaps")
# eager_pdl: kernels/' launches as programmatic dependent ones; compiled_free: compiled without gemv.PIN (Inductor
# tunes each call site itself; compiled takes the eager variant's picks)
VARIANTS = ("eager", "compiled", "compiled_free", "eager_pdl")
NODE_KEYS = ("block", "shared_bytes", "registers", "static_shared", "max_dynamic_shared", "carveout", "cache_mode_ca")


def short(name: str) -> str:
    """A kernel's name without Inductor's _<n> suffix on its copy of a user kernel, cut to 60 characters."""
    return re.sub(r"_\d+$", "", name)[:60]


def calls_of(records: list[tuple[float, float, str]], per_call: int) -> tuple[list[list], list[str]]:
    """records, (start us, end us, name) of consecutive calls of per_call launches each in start order, cut into
    the calls, and one call's kernel names (short()); ValueError where they are not whole calls of the same kernels."""
    if per_call < 2 or not records or len(records) % per_call:
        raise ValueError(f"{len(records)} records are not whole calls of {per_call} launches")
    calls = [records[i:i + per_call] for i in range(0, len(records), per_call)]
    names = [[short(n) for _, _, n in c] for c in calls]
    if any(n != names[0] for n in names):
        raise ValueError("the calls launched different kernels")
    return calls, names[0]


def gaps(records: list[tuple[float, float, str]], per_call: int) -> list[tuple[str, str, float]]:
    """(kernel before, kernel after, us) for each boundary inside one call (calls_of's records): each boundary's
    median over the calls (negative where a launch started before the one before it ended: programmatic dependent
    launches)."""
    calls, names = calls_of(records, per_call)
    return [(names[i - 1], names[i], statistics.median(c[i][0] - c[i - 1][1] for c in calls))
            for i in range(1, per_call)]


def durations(records: list[tuple[float, float, str]], per_call: int) -> list[tuple[str, float]]:
    """(kernel, us) for each launch of one call (calls_of's records): its duration's median over the calls."""
    calls, names = calls_of(records, per_call)
    return [(names[i], statistics.median(c[i][1] - c[i][0] for c in calls)) for i in range(per_call)]


def by_launch(durs: list[tuple[str, float]], nodes: list[dict]) -> dict[str, dict[str, float]]:
    """The launches of one call grouped by kernel and grid (from the graph's kernel nodes, in launch order: a chain's
    nodes are; the same shape's launches, e.g. each layer's q/k/v projection, share both), largest total first: how
    many, their summed and median duration (us). By kernel alone where the nodes are not one kernel node a launch."""
    matched = len(nodes) == len(durs) and all("grid" in n for n in nodes)
    groups: dict[str, list[float]] = {}
    for i, (kernel, us) in enumerate(durs):
        grid = nodes[i].get("grid") if matched else None
        groups.setdefault(kernel + (f" grid {'x'.join(map(str, grid))}" if grid else ""), []).append(us)
    out = {k: {"count": len(v), "us": round(sum(v), 3), "median_us": round(statistics.median(v), 3)}
           for k, v in groups.items()}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us"]))


def by_boundary(bounds: list[tuple[str, str, float]]) -> dict[str, dict[str, float]]:
    """Each kind of boundary (before -> after): how many a call has and their gaps' sum (us), largest sum first."""
    out: dict[str, dict[str, float]] = {}
    for before, after, us in bounds:
        row = out.setdefault(f"{before} -> {after}", {"count": 0, "us": 0.0})
        row["count"] += 1
        row["us"] = round(row["us"] + us, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us"]))


def node_diffs(a: list[dict], b: list[dict]) -> dict:
    """Where two graphs' kernel nodes (graph order) differ: per NODE_KEYS and grid, the positions, names and values."""
    if len(a) != len(b):
        return {"node_counts": [len(a), len(b)]}
    out: dict[str, list] = {}
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        for key in (*NODE_KEYS, "grid"):
            if x.get(key) != y.get(key):
                out.setdefault(key, []).append([i, x["name"], x.get(key), y.get(key)])
    return {k: {"count": len(v), "first": v[:12]} for k, v in out.items()}


def ordered(nodes: list, edges: list[tuple]) -> list:
    """nodes in an order their edges (upstream, downstream) allow, ties in the order given (driver handles compared by
    address)."""
    key = {int(n): i for i, n in enumerate(nodes)}
    waits = {int(n): 0 for n in nodes}
    after: dict[int, list[int]] = {}
    for up, down in edges:
        waits[int(down)] += 1
        after.setdefault(int(up), []).append(int(down))
    ready = sorted((k for k, w in waits.items() if not w), key=key.get)
    out = []
    while ready:
        k = ready.pop(0)
        out.append(nodes[key[k]])
        for d in after.get(k, []):
            waits[d] -= 1
            if not waits[d]:
                ready = sorted([*ready, d], key=key.get)
    return out


def kernel_nodes(graph: torch.cuda.CUDAGraph) -> list[dict]:
    """The kernel nodes of a graph captured with keep_graph=True, in the order they were captured: name, grid, block,
    dynamic shared bytes and the function's attributes (driver calls through kpt.gpu.graph_edges')."""
    from cuda.bindings import driver

    from kpt.gpu import graph_edges as ge

    attr = driver.CUfunction_attribute
    g = ge.handle(graph)
    _, count = ge.call("cuGraphGetNodes", driver.cuGraphGetNodes(g, 0))
    nodes, count = ge.call("cuGraphGetNodes", driver.cuGraphGetNodes(g, count))
    out = []
    for node in ordered(nodes[:count], [(e.upstream, e.downstream) for e in ge.edges_of(g)]):
        p = ge.kernel_params(node)
        if p is None:
            out.append({"name": f"<{ge.call('cuGraphNodeGetType', driver.cuGraphNodeGetType(node))[0]!r}>"})
            continue
        row = {"grid": [p.gridDimX, p.gridDimY, p.gridDimZ], "block": [p.blockDimX, p.blockDimY, p.blockDimZ],
               "shared_bytes": p.sharedMemBytes, "name": short(ge.kernel_name(p))}
        if int(p.func):
            for key, a in (("registers", attr.CU_FUNC_ATTRIBUTE_NUM_REGS),
                           ("static_shared", attr.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES),
                           ("max_dynamic_shared", attr.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES),
                           ("carveout", attr.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT),
                           ("cache_mode_ca", attr.CU_FUNC_ATTRIBUTE_CACHE_MODE_CA)):
                err, value = driver.cuFuncGetAttribute(a, p.func)
                row[key] = value if err == driver.CUresult.CUDA_SUCCESS else None
        out.append(row)
    return out


def captured(fn: Callable, x: tuple[torch.Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, list[dict]]:
    """fn(*x) captured (kpt.gpu.bench.captured) and instantiated, with its kernel nodes."""
    from kpt.gpu import bench

    graph, _ = bench.captured(fn, x, keep=True)
    nodes = kernel_nodes(graph)
    graph.instantiate()
    return graph, nodes


def timeline(replay: Callable[[], object], calls: int) -> list[tuple[float, float, str]]:
    """(start us, end us, name) of every kernel record of `calls` replays, in start order."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            replay()
        torch.cuda.synchronize()
    return sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--calls", type=int, default=9, help="replays profiled")
    ap.add_argument("--reps", type=int, default=200)
    args = card.gpu_args(ap, argv, "graph_gaps")
    if args is None:
        return 2
    from kernels import gemv, modules, pick_configs
    from kpt.gpu import bench, models
    from kpt.gpu.compile import trial_options
    from kpt.optimize import inputs as inp

    step, spec = models.MODELS["llama-1b-decode"]("cuda:0")
    step = modules.swap_decode_layers(modules.swap_decode_attention(step.to(torch.bfloat16)))
    x = tuple(inp.generate(spec, seed=0, device="cuda:0"))
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                 "command": "python3 bench/graph_gaps.py " + " ".join(argv or sys.argv[1:]),
                 "environment": card.environment()}
    replays, nodes = {}, {}
    for name in args.variants.split(","):
        model = modules.swap_decode_pdl(step) if name == "eager_pdl" else step
        compiled = name.startswith("compiled")
        if compiled and name != "compiled_free":  # the eager picks first, as the build's trials (kernels.pinned)
            pick_configs(model, x)
        if name == "compiled_free":  # a module of its own, no FX graph cache: nothing handed back from "compiled"
            model = copy.deepcopy(step)
        options = trial_options(step, x) | ({"fx_graph_cache": False} if name == "compiled_free" else {})
        fn = torch.compile(model, dynamic=False, options=options) if compiled else model
        gemv.PIN = name != "compiled_free"
        try:
            graph, nodes[name] = captured(fn, x)
        finally:
            gemv.PIN = True
        replays[name] = graph.replay
        log.info("%s captured: %d nodes", name, len(nodes[name]))
    out["p50_ms"] = bench.compare(replays, reps=args.reps, warmup=10)
    for name, replay in replays.items():
        records = timeline(replay, args.calls)
        per_call = len(records) // args.calls
        bounds = gaps(records, per_call)
        device = statistics.median(sum(e - s for s, e, _ in records[i:i + per_call])
                                   for i in range(0, len(records), per_call))
        out.setdefault("variants", {})[name] = {
            "launches": per_call, "device_ms": round(device / 1e3, 4),
            "gap_ms": round(sum(us for *_, us in bounds) / 1e3, 4), "by_boundary": by_boundary(bounds),
            "by_launch": by_launch(durations(records, per_call), nodes[name]), "nodes": nodes[name][:8]}
    names = list(nodes)
    out["node_diffs"] = {f"{a} vs {b}": node_diffs(nodes[a], nodes[b]) for a in names for b in names if a < b}
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
