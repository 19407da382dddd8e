"""Programmatic edges in a captured CUDA graph: programmatic dependent launch for kernels whose launcher set no
launch attribute.

Hopper lets a kernel start while the kernel before it still runs, where the second one waits
(griddepcontrol.wait) before touching what the first writes (kernels/_common.py, PDL). A launch asks for it with
a launch attribute, which Inductor's launcher of a user kernel and AOTInductor's (cuLaunchKernel) never set. In a
graph the same relation is an edge's data: a programmatic dependency from the upstream kernel's programmatic port
(CUDA 12.3+, edge data; the programming guide's "Use in CUDA Graphs"). So a graph captured from plain launches,
kept uninstantiated (torch.cuda.CUDAGraph(keep_graph=True)), gets PDL by rewriting its edges: each default edge
from a kernel node into a kernel node whose kernel waits becomes programmatic. The kernel's own code decides
correctness, so `waits` must only say yes for kernels compiled to wait before any such access; other edges are
left as they are.

Driver calls through NVIDIA's cuda-bindings (cuda.bindings.driver), imported on first use: the GPU service
carries it; nothing here runs without a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from kpt.errors import Unsupported

log = logging.getLogger(__name__)

PROGRAMMATIC = 1  # CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC, and the edge's port: CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC
# Set by kernels/ on a module whose launches it asked for PDL (kernels/decode_layer.py's PDL): the names of the
# kernels that then wait. The build records them in the package (kpt.gpu.graphs), and the runtime rewrites the
# package's captured graph with them (kpt.gpu.runtime).
ATTR = "kpt_pdl"


def kernels_of(module: torch.nn.Module) -> tuple[str, ...]:
    """The names of the kernels that module's launches wait in (ATTR on any of its modules), sorted; () if none."""
    return tuple(sorted({name for m in module.modules() for name in getattr(m, ATTR, None) or ()}))


def named(kernels: Sequence[str]) -> Callable[[str], bool]:
    """make_programmatic's test for `kernels`: a kernel by Triton's entry name, or Inductor's copy of it (the name
    with _<n> appended, as in a compiled model or an AOTInductor package)."""
    def waits(name: str) -> bool:
        return any(name == k or (name.startswith(k + "_") and name[len(k) + 1:].isdigit()) for k in kernels)

    return waits


@dataclass(frozen=True)
class Edge:
    upstream: object  # a graph node (cuda.bindings' CUgraphNode, or anything hashable in tests)
    downstream: object
    default: bool  # zeroed edge data: the downstream node waits for the upstream one's completion


def chosen(edges: Sequence[Edge], kernels: dict[object, str], waits: Callable[[str], bool]) -> list[Edge]:
    """The edges to make programmatic: default ones from a kernel node into a kernel node whose kernel waits.
    kernels: each kernel node's kernel name (kernel nodes only)."""
    return [e for e in edges if e.default and e.upstream in kernels and e.downstream in kernels
            and waits(kernels[e.downstream])]


def already(edges: Sequence[Edge], kernels: dict[object, str], waits: Callable[[str], bool]) -> list[Edge]:
    """The edges from a kernel node into a waiting kernel's node that were captured as other than default ones (a
    launch that carried the PDL attribute itself): programmatic already, nothing to rewrite."""
    return [e for e in edges if not e.default and e.upstream in kernels and e.downstream in kernels
            and waits(kernels[e.downstream])]


def call(name: str, result: tuple) -> tuple:
    """The values of a cuda-bindings driver call's result (its error code first), or Unsupported naming the call."""
    from cuda.bindings import driver

    err, *values = result
    if err != driver.CUresult.CUDA_SUCCESS:
        raise Unsupported(f"the captured graph's edges cannot be rewritten: {name} returned {err!r}")
    return tuple(values)


def handle(graph: torch.cuda.CUDAGraph):  # noqa: ANN201 - cuda.bindings' CUgraph
    """The driver's handle of a graph captured with keep_graph=True (the driver's entry points loaded: the context
    torch made is current)."""
    from cuda.bindings import driver

    call("cuInit", driver.cuInit(0))
    return driver.CUgraph(graph.raw_cuda_graph())


def edges_of(graph) -> list[Edge]:  # noqa: ANN001 - handle()'s CUgraph
    """Every edge of the graph, with whether its data is the default (a full dependency)."""
    from cuda.bindings import driver

    (_, _, _, count) = call("cuGraphGetEdges", driver.cuGraphGetEdges(graph, 0))
    ups, downs, data, count = call("cuGraphGetEdges", driver.cuGraphGetEdges(graph, count))
    return [Edge(u, d, e.from_port == 0 and e.to_port == 0 and e.type == 0)
            for u, d, e in zip(ups[:count], downs[:count], data[:count], strict=True)]


def kernel_params(node):  # noqa: ANN001, ANN201 - a CUgraphNode in, CUDA_KERNEL_NODE_PARAMS or None out
    """A kernel node's launch parameters; None for any other node."""
    from cuda.bindings import driver

    (kind,) = call("cuGraphNodeGetType", driver.cuGraphNodeGetType(node))
    if kind != driver.CUgraphNodeType.CU_GRAPH_NODE_TYPE_KERNEL:
        return None
    (params,) = call("cuGraphKernelNodeGetParams", driver.cuGraphKernelNodeGetParams(node))
    return params


def kernel_name(params) -> str:  # noqa: ANN001 - kernel_params()'s
    """The kernel's entry name: its CUfunction's, or where the node holds a CUkernel instead (a kernel launched from a
    library, CUDA 12+) that one's; "" where neither has a name to read."""
    from cuda.bindings import driver

    if int(params.func):
        err, name = driver.cuFuncGetName(params.func)
    elif int(getattr(params, "kern", 0) or 0):
        err, name = driver.cuKernelGetName(params.kern)
    else:
        return ""
    return name.decode(errors="replace") if err == driver.CUresult.CUDA_SUCCESS else ""


def unmatched(kernels: dict[object, str], limit: int = 12) -> str:
    """What a graph's kernel nodes are called, for the log when none of them is one that waits: the distinct names
    (the first `limit`, sorted) and how many nodes had none to read."""
    names = sorted({n for n in kernels.values() if n})
    nameless = sum(1 for n in kernels.values() if not n)
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"{len(names)} distinct kernel names ({shown or 'none'}); {nameless} kernel node(s) without a name"


def make_programmatic(graph: torch.cuda.CUDAGraph, waits: Callable[[str], bool]) -> int:
    """Rewrites chosen() edges of `graph` (captured with keep_graph=True, not yet instantiated: its first replay or
    instantiate() builds what runs) as programmatic dependencies; returns how many edges between kernels now lead
    into a waiting kernel as programmatic ones: those it rewrote, and any captured so (a launch that carried the
    PDL attribute itself)."""
    from cuda.bindings import driver

    g = handle(graph)
    edges = edges_of(g)
    kernels, library = {}, 0
    for node in {n for e in edges for n in (e.upstream, e.downstream)}:
        params = kernel_params(node)
        if params is not None:  # a kernel without a name waits for nothing of ours
            kernels[node] = kernel_name(params)
            library += not int(params.func)  # the node holds a CUkernel (a library's kernel), not a CUfunction
    picked = chosen(edges, kernels, waits)
    if picked:
        ups, downs = [e.upstream for e in picked], [e.downstream for e in picked]
        call("cuGraphRemoveDependencies", driver.cuGraphRemoveDependencies(g, ups, downs, None, len(picked)))
        data = []
        for _ in picked:
            d = driver.CUgraphEdgeData()
            d.from_port, d.type = PROGRAMMATIC, PROGRAMMATIC
            data.append(d)
        added = driver.cuGraphAddDependencies(g, ups, downs, data, len(picked))
        if added[0] != driver.CUresult.CUDA_SUCCESS:  # the plain edges back: the graph stays what was captured
            call("cuGraphAddDependencies", driver.cuGraphAddDependencies(g, ups, downs, None, len(picked)))
            call("cuGraphAddDependencies (programmatic)", added)
    captured = already(edges, kernels, waits)
    log.info("%d of the graph's %d edges made programmatic (%d kernel nodes, %d of them a library's CUkernel)%s",
             len(picked), len(edges), len(kernels), library,
             f"; {len(captured)} into waiting kernels captured as such" if captured else "")
    if not picked and not captured and kernels:
        # The 1B Llama's O3 build timed its PDL trial so (H100, 2026-12-07: 0 of 136 edges, where the same code had
        # made 133 programmatic the day before): the kernels then run their PDL code as plain launches.
        log.warning("no edge leads into a kernel that waits (%d of the %d edges were captured as other than default "
                    "ones): the graph runs as captured; %s", sum(not e.default for e in edges), len(edges),
                    unmatched(kernels))
    return len(picked) + len(captured)
