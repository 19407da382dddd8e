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

import contextlib
import itertools
import logging
import statistics
import time
from typing import Callable, ContextManager, Sequence

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


def event_ms(fn: Callable[[], object]) -> float:
    """ms of one call of fn, timed by a pair of events on an idle GPU."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def compare(fns: dict[str, Callable[[], object]], reps: int = 20, warmup: int = 3,
            contexts: dict[str, Callable[[], ContextManager]] | None = None,
            timer: Callable[[Callable[[], object]], float] = event_ms) -> dict[str, float]:
    """Median ms of each fn (for pass decisions): one call of each per round, the order rotating every round, so
    clock changes and other work on the device weigh on every candidate alike rather than on whichever was timed
    last. contexts: per name, a context entered around that name's calls, outside the timed span (an attention
    backend choice)."""
    if not fns or reps < 1:
        raise ValueError("compare needs at least one function and reps >= 1")
    names, ctx = list(fns), contexts or {}
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:
            with ctx.get(n, contextlib.nullcontext)():
                for _ in range(warmup):
                    fns[n]()
        for r in range(reps):
            for n in names[r % len(names):] + names[:r % len(names)]:
                with ctx.get(n, contextlib.nullcontext)():
                    times[n].append(timer(fns[n]))
    return {n: statistics.median(t) for n, t in times.items()}


def time_once(fn: Callable[[], object], reps: int = 20, warmup: int = 3) -> float:
    """Median ms of fn() over reps, each timed with events on an idle GPU."""
    return compare({"fn": fn}, reps, warmup)["fn"]
