"""The GPU benchmark protocol: kpt.optimize.bench's interleaved rounds, timed with device events.

Every iteration starts on an idle GPU (the previous one was waited for) and is timed by a pair of
CUDA/HIP events around the call, so the time includes what the host spends launching work, as a
caller would see it, at event resolution (about 0.5 us) rather than a host clock's. Inputs rotate
through several batches drawn with different seeds, so no variant sees the same bytes twice in a
row (nothing stays in L2 from the previous call). Variants are interleaved and the order rotates
each round, as on CPU; stop rules and settings are kpt.optimize.bench.Settings.

Peak memory comes from the caching allocator: the high-water mark of allocated bytes during one
call, minus what was allocated before it, plus the memory a CUDA-graph runner keeps reserved for
its graphs between calls.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from typing import Callable, Sequence

import torch

from kpt.gpu.runtime import resident_bytes
from kpt.optimize import bench

log = logging.getLogger(__name__)

Inputs = Sequence[tuple[torch.Tensor, ...]]


def _rotating(fn: Callable[..., object], inputs: Inputs) -> Callable[[], object]:
    batches = itertools.cycle(inputs)
    return lambda: fn(*next(batches))


def measure(variants: dict[str, Callable[..., object]], inputs: Inputs, settings: bench.Settings,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Latencies in ms of each variant called on the rotating inputs (see the module doc)."""
    if not variants or not inputs:
        raise ValueError("nothing to measure")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(fn: Callable[[], object]) -> float:
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    calls = {name: _rotating(fn, inputs) for name, fn in variants.items()}
    return bench.measure(calls, settings, "cuda", clock, timed=timed)


def peak_memory(fn: Callable[..., object], x: tuple[torch.Tensor, ...]) -> int:
    """Peak allocator bytes of one call beyond what was allocated before it, plus graph pools held."""
    with torch.inference_mode():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn(*x)
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - before) + resident_bytes(fn)


def time_once(fn: Callable[[], object], reps: int = 20, warmup: int = 3) -> float:
    """Median ms of fn() over reps, each timed with events on an idle GPU (for pass decisions)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        for _ in range(reps):
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
    return statistics.median(out)
