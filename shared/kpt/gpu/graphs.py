"""The CUDA graphs pass: replay the compiled package as one graph when that is correct and faster.

Runs after the compile pass, on the package itself: takes the process's one runner of it
(kpt.gpu.runtime.shared, the same runner the ladder's validation and the benchmark use: a package is
loaded once per process), captures one call on the example input, checks the replay against a plain
run of the same runner, and times both interleaved with device events. When replay is as accurate and faster, the package's
runtime record says so (kpt.gpu.runtime) and every later load replays graphs. Launch overhead is
what it removes: it matters for small batches and decode steps, not for large compute-bound calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from kpt.gpu import bench as gpu_bench
from kpt.gpu import cache, graph_edges, runtime
from kpt.optimize import accuracy, bench
from kpt.optimize import inputs as inp
from kpt.optimize.passes import Outcome, PassConfig, Work, register

log = logging.getLogger(__name__)

CHOOSE = bench.Settings(warmup_iters=3, min_iters=10, max_iters=200, time_budget_s=1.5, stable_rel=0.03,
                        round_iters=5)


@dataclass(frozen=True)
class CudaGraphs(PassConfig):
    name: ClassVar[str] = "cuda_graphs"
    # Replay must beat the plain run by this factor; below it the difference is within the run-to-run
    # noise of a short interleaved measurement (CHOOSE), and a graph costs memory for its pool.
    min_speedup: float = 1.02
    # Replay runs the same kernels; a library may still pick another algorithm on the capture stream (another
    # reduction order). A sanity bound: the level's own check against eager fp32 judges the replayed package.
    max_rel_l2: float = 1e-3


@register(CudaGraphs)
def _graphs(cfg: CudaGraphs, work: Work) -> Outcome:
    if not (work.device.startswith("cuda") and torch.cuda.is_available()):
        return Outcome(False, "CUDA graphs need a GPU")
    art = work.artifact
    if art is None or art.format != "ARTIFACT_FORMAT_AOTI_PACKAGE":
        return Outcome(False, "needs the AOTInductor package of an earlier compile pass")
    earlier = runtime.read_record(art.path)
    if earlier:  # a package from the cache, measured when it was first built
        return Outcome(bool(earlier.get("cudagraphs")), "measured when this package was first built: "
                       + earlier.get("detail", "replays CUDA graphs" if earlier.get("cudagraphs") else "plain"))
    loaded = runtime.shared(art.path)
    plain = runtime.PlainRunner(loaded.runner, loaded.lock)
    waiting = graph_edges.kernels_of(work.module)  # compiled for programmatic dependent launch: kernels/ says which
    graphed = runtime.GraphedRunner(loaded.runner, loaded.lock,
                                    waits=graph_edges.named(waiting) if waiting else None)
    inputs = [inp.generate(work.spec, seed, work.device) for seed in (0, 101, 102)]
    try:
        with torch.inference_mode():
            got = graphed(*inputs[1])
            ref = plain(*inputs[1])
    except RuntimeError as e:  # capture refused: a host sync, a CPU op or an allocation the graph cannot hold
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _decided(art.path, False, f"the package cannot be captured as a CUDA graph: {first[:300]}")
    m = accuracy.compare(got, ref)
    if not m.rel_l2 <= cfg.max_rel_l2:
        return _decided(art.path, False, f"graph replay differs from a plain run (rel_l2 {m.rel_l2:.3g} > "
                        f"{cfg.max_rel_l2:g}): not used")
    times = gpu_bench.measure({"plain": plain, "graph": graphed}, inputs, CHOOSE)
    p = bench.percentile(sorted(times["plain"]), 0.5)
    g = bench.percentile(sorted(times["graph"]), 0.5)
    if p / g < cfg.min_speedup:
        return _decided(art.path, False, f"graph replay not faster: p50 {g:.3f} ms vs {p:.3f} ms plain; plain "
                        "launches kept")
    edges = (f"; {graphed.programmatic_edges} edges into {', '.join(waiting)} programmatic"
             if graphed.programmatic_edges else "")
    return _decided(art.path, True, f"replayed as a CUDA graph: p50 {p:.3f} -> {g:.3f} ms ({p / g:.2f}x); "
                    f"graph pool {graphed.resident_bytes / 2**20:.1f} MiB{edges}",
                    waiting if graphed.programmatic_edges else ())


def _decided(path: str, use: bool, detail: str, pdl_kernels: tuple[str, ...] = ()) -> Outcome:
    """Record the decision in the package (and in its cache entry, so a reuse does not measure again); pdl_kernels:
    the kernels whose incoming edges each load's captured graph makes programmatic (kpt.gpu.runtime.load_aoti)."""
    runtime.write_record(path, cudagraphs=use, detail=detail, pdl_kernels=list(pdl_kernels))
    cache.update(path)
    return Outcome(use, detail)
