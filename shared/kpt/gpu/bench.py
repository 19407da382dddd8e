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

from kpt.gpu.runtime import capturing, resident_bytes
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


def generation_loop(fn: Callable[..., object], x: tuple[torch.Tensor, ...],
                    advance: Callable[[tuple, object], tuple], steps: int) -> Callable[[], None]:
    """A call running fn `steps` times back to back from inputs x, each call's inputs made on the device from the
    last one's outputs by advance(inputs, outputs) (kpt.gpu.models.next_step: a greedy decode loop's next token).
    Nothing in it waits for the device, so the host launches step n + 1 while the device runs step n, as in a
    generation loop; every run starts again from x (a decode loop rewrites the same cache positions)."""
    if steps < 1:
        raise ValueError("a generation loop needs at least one step")

    def run() -> None:
        y = x
        for _ in range(steps):
            y = advance(y, fn(*y))

    return run


def per_step_ms(fns: dict[str, Callable[..., object]], x: tuple[torch.Tensor, ...],
                advance: Callable[[tuple, object], tuple], steps: int = 32, reps: int = 7,
                warmup: int = 1) -> dict[str, float]:
    """Median ms per step of each fn in a generation loop of `steps` steps (generation_loop), timed by events
    around the whole loop on an idle GPU and divided by steps; the loops interleaved as in compare. Every loop
    starts from x itself and writes its caches in place (what is written changes no step's time): a package that
    binds its graphs to where large inputs live (kpt.gpu.runtime) replays the graph it has for them. warmup: untimed
    loops of each fn first (0 where the caller ran them)."""
    loops = {n: generation_loop(fn, x, advance, steps) for n, fn in fns.items()}
    return {n: ms / steps for n, ms in compare(loops, reps, warmup=warmup).items()}


def time_once(fn: Callable[[], object], reps: int = 20, warmup: int = 3) -> float:
    """Median ms of fn() over reps, each timed with events on an idle GPU."""
    return compare({"fn": fn}, reps, warmup)["fn"]


def captured(fn: Callable[..., object], x: tuple[torch.Tensor, ...], keep: bool = False,
             ) -> tuple[torch.cuda.CUDAGraph, object]:
    """(graph, what fn returned while captured): fn(*x) called three times on a side stream (autotuners and lazy
    initialization run outside the capture), then captured under inference mode. keep: the graph is kept
    uninstantiated (torch.cuda.CUDAGraph(keep_graph=True)) for its nodes to be read or rewritten; instantiate() it
    before replay."""
    with torch.inference_mode():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn(*x)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph(keep_graph=keep)
        with capturing(graph):
            out = fn(*x)
    return graph, out


def kernel_table(kernels: Sequence[tuple[str, float]], calls: int, top: int = 12) -> dict:
    """Where one call's device time goes, from (kernel name, microseconds) records of `calls` calls: launches
    and device ms per call, and the `top` kernels by time, each with its launches, ms per call and share."""
    if calls < 1:
        raise ValueError("calls must be >= 1")
    by_name: dict[str, list[float]] = {}
    for name, us in kernels:
        by_name.setdefault(name, []).append(us)
    total = sum(us for _, us in kernels)
    ranked = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))
    return {"launches_per_call": round(len(kernels) / calls, 1), "device_ms_per_call": round(total / calls / 1e3, 4),
            "top": [{"kernel": name[:160], "launches_per_call": round(len(us) / calls, 1),
                     "ms_per_call": round(sum(us) / calls / 1e3, 4), "share": round(sum(us) / total, 4) if total else 0.0}
                    for name, us in ranked[:top]]}


def launches(fn: Callable[[], object], calls: int = 1) -> list[tuple[str, float]]:
    """(name, us) of every device record of `calls` fn() calls (kernels replayed inside CUDA graphs, copies) in the
    order they started: what one launch of a sequence costs beside the next."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return [(name, us) for _, name, us in sorted((e.time_range.start, e.name, e.time_range.elapsed_us())
                                                 for e in prof.events()
                                                 if e.device_type == torch.autograd.DeviceType.CUDA)]


def profile_kernels(fn: Callable[..., object], x: tuple[torch.Tensor, ...], calls: int = 5, top: int = 12) -> dict:
    """kernel_table of fn(*x) from the profiler's device records (kernels replayed inside CUDA graphs included):
    says which kernels a variant's time is made of, e.g. how many small launches a decode step pays per token."""
    with torch.inference_mode():
        fn(*x)
        records = launches(lambda: fn(*x), calls)  # copies too (a graph's input copies are its cost)
    return kernel_table(records, calls, top)

