"""The benchmark protocol: every variant measured interleaved, in one process, in one run.

After warmup, rounds run each variant `round_iters` times, rotating the order each round so no
variant always runs right after another; background load then hits all variants alike. Stop
when every median moved less than `stable_rel` since the last round (after min_iters), or the
time budget (per variant, summed) is spent, or a variant reached max_iters.

Peak memory (CPU): the resident-set high-water mark over one warm call, minus the resident set
before it. The kernel's peak is reset through /proc/self/clear_refs ("5", Linux >= 4.0) after
malloc_trim(0) hands freed heap pages back, so memory the call reuses from earlier calls is
faulted in again and counted. This sees every allocator (c10, AOTInductor, onnxruntime's own
arena growth, OpenMP stacks) at no per-allocation cost, unlike tracemalloc, which sees only
Python allocations. Memory an arena kept from an earlier call is not counted (onnxruntime).
CUDA: torch.cuda.max_memory_allocated over one call.
"""

from __future__ import annotations

import ctypes
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger(__name__)
MAX_SAMPLES = 256


@dataclass(frozen=True)
class Settings:
    warmup_iters: int = 5
    min_iters: int = 20
    max_iters: int = 2000
    time_budget_s: float = 10.0  # per variant
    stable_rel: float = 0.02
    round_iters: int = 5
    threads: int = 0  # 0 = leave torch's default (all cores this process may use)

    def __post_init__(self) -> None:
        if self.warmup_iters < 0 or self.min_iters < 1 or self.round_iters < 1:
            raise ValueError("warmup_iters must be >= 0, min_iters and round_iters >= 1")
        if self.max_iters < self.min_iters:
            raise ValueError(f"max_iters ({self.max_iters}) must be >= min_iters ({self.min_iters})")
        if self.time_budget_s <= 0 or not 0 < self.stable_rel < 1:
            raise ValueError("time_budget_s must be > 0 and stable_rel in (0, 1), e.g. 0.02")
        if self.threads < 0:
            raise ValueError("threads must be >= 0 (0 = all cores)")


def settings_from_dict(d: dict, defaults: Settings = Settings()) -> Settings:
    """BenchmarkSettings (protobuf JSON dict); zero/omitted fields keep `defaults`."""
    kw = {k: type(getattr(defaults, k))(d[k]) for k in ("warmup_iters", "min_iters", "max_iters", "time_budget_s",
                                                        "stable_rel", "threads") if d.get(k)}
    if "max_iters" not in kw and kw.get("min_iters", 0) > defaults.max_iters:
        kw["max_iters"] = kw["min_iters"]
    if "min_iters" not in kw and kw.get("max_iters", defaults.min_iters) < defaults.min_iters:
        kw["min_iters"] = kw["max_iters"]
    return Settings(**{**defaults.__dict__, **kw})


@dataclass(frozen=True)
class Stats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    iterations: int
    samples_ms: tuple[float, ...]

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms",
                                                 "iterations")}, "samples_ms": list(self.samples_ms)}


def percentile(sorted_ms: list[float], q: float) -> float:
    """Linear-interpolated percentile of sorted data (numpy's default method)."""
    if not sorted_ms:
        raise ValueError("no samples")
    pos = (len(sorted_ms) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def stats(times_ms: list[float]) -> Stats:
    s = sorted(times_ms)
    step = max(1, -(-len(times_ms) // MAX_SAMPLES))  # ceil: at most 256 evenly spaced, in run order
    return Stats(percentile(s, 0.5), percentile(s, 0.9), percentile(s, 0.99), statistics.fmean(s), s[0], s[-1],
                 len(s), tuple(round(x, 4) for x in times_ms[::step][:MAX_SAMPLES]))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _stable(history: dict[str, list[float]], previous: dict[str, float], rel: float) -> bool:
    for name, times in history.items():
        med = statistics.median(times)
        prev = previous.get(name)
        if prev is None or abs(med - prev) > rel * prev:
            return False
    return True


def _wall_ms(fn: Callable[[], object], device: str, clock: Callable[[], float]) -> float:
    t0 = clock()
    fn()
    _sync(device)
    return (clock() - t0) * 1e3


def measure(variants: dict[str, Callable[[], object]], settings: Settings, device: str = "cpu",
            clock: Callable[[], float] = time.perf_counter,
            timed: Callable[[Callable[[], object]], float] | None = None) -> dict[str, list[float]]:
    """Latencies in ms of each zero-argument callable, interleaved as the module doc says.
    `timed(fn) -> ms` times one call (default: the host clock around the call and a sync)."""
    if not variants:
        raise ValueError("nothing to measure")
    names = list(variants)
    with torch.inference_mode():
        for _ in range(settings.warmup_iters):
            for name in names:
                variants[name]()
        _sync(device)
        times: dict[str, list[float]] = {n: [] for n in names}
        previous: dict[str, float] = {}
        deadline = clock() + settings.time_budget_s * len(names)
        rnd = 0
        while True:
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                fn = variants[name]
                for _ in range(settings.round_iters):
                    times[name].append(timed(fn) if timed else _wall_ms(fn, device, clock))
            rnd += 1
            n = min(len(t) for t in times.values())
            if max(len(t) for t in times.values()) >= settings.max_iters:
                break
            if n >= settings.min_iters and _stable(times, previous, settings.stable_rel):
                break
            if clock() > deadline and n >= min(settings.min_iters, settings.round_iters):
                log.info("benchmark time budget spent after %d rounds", rnd)
                break
            previous = {k: statistics.median(v) for k, v in times.items()}
    return times


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> int | None:
    """Peak extra memory of one call in bytes (see module doc); None where it cannot be measured."""
    with torch.inference_mode():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - before
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _status_bytes("VmRSS")
            fn()
            return max(0, _status_bytes("VmHWM") - before)
        except (OSError, KeyError) as e:
            log.warning("peak memory not measurable here: %s", e)
            return None
