import pytest
import torch

from kpt.optimize import bench


class FakeClock:
    """Time advances only when a variant runs: durations are exact and tests never read wall time."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_variants(clock: FakeClock, durations_s: dict, log: list) -> dict:
    def make(name):
        def run():
            log.append(name)
            d = durations_s[name]
            clock.t += d() if callable(d) else d
        return run
    return {n: make(n) for n in durations_s}


def test_percentiles_match_numpy_linear_interpolation():
    data = [float(x) for x in [7, 1, 3, 9, 5]]
    s = sorted(data)
    assert bench.percentile(s, 0.5) == 5.0
    assert bench.percentile(s, 0.9) == pytest.approx(8.2)  # numpy.percentile(data, 90)
    assert bench.percentile(s, 0.99) == pytest.approx(8.92)
    st = bench.stats(data)
    assert (st.min_ms, st.max_ms, st.mean_ms, st.iterations) == (1.0, 9.0, 5.0, 5)


def test_samples_are_at_most_256_evenly_spaced_in_run_order():
    st = bench.stats([float(i) for i in range(1000)])
    assert len(st.samples_ms) <= 256 and st.samples_ms[0] == 0.0
    steps = {b - a for a, b in zip(st.samples_ms, st.samples_ms[1:], strict=False)}
    assert steps == {4.0}
    assert bench.stats([1.0, 2.0]).samples_ms == (1.0, 2.0)


def test_rounds_interleave_and_rotate_the_order():
    clock, log = FakeClock(), []
    variants = make_variants(clock, {"a": 0.001, "b": 0.002, "c": 0.003}, log)
    s = bench.Settings(warmup_iters=1, min_iters=6, max_iters=100, round_iters=2, stable_rel=0.01)
    times = bench.measure(variants, s, clock=clock)
    measured = log[3:]  # after one warmup call each
    blocks = [measured[i:i + 2] for i in range(0, len(measured), 2)]
    assert all(b[0] == b[1] for b in blocks)  # round_iters consecutive calls per variant
    firsts = [blocks[i][0] for i in range(0, len(blocks), 3)]
    assert firsts[:3] == ["a", "b", "c"]  # each round starts one variant later
    assert times["a"][0] == pytest.approx(1.0) and times["c"][0] == pytest.approx(3.0)
    assert len({len(t) for t in times.values()}) == 1  # all variants got the same count


def test_stops_once_medians_are_stable_after_min_iters():
    clock, log = FakeClock(), []
    variants = make_variants(clock, {"a": 0.001, "b": 0.001}, log)
    s = bench.Settings(warmup_iters=0, min_iters=10, max_iters=1000, round_iters=5, stable_rel=0.01)
    times = bench.measure(variants, s, clock=clock)
    # constant times: stable as soon as min_iters is reached and a previous median exists
    assert len(times["a"]) == 10


def test_keeps_going_while_medians_drift_then_hits_max_iters():
    clock, log = FakeClock(), []
    drift = iter(range(1, 10**6))
    variants = make_variants(clock, {"a": lambda: next(drift) * 1e-4, "b": 0.001}, log)
    s = bench.Settings(warmup_iters=0, min_iters=5, max_iters=50, round_iters=5, stable_rel=0.001,
                       time_budget_s=1e9)
    times = bench.measure(variants, s, clock=clock)
    assert len(times["a"]) == 50


def test_time_budget_bounds_the_run():
    clock, log = FakeClock(), []
    drift = iter(range(1, 10**6))
    variants = make_variants(clock, {"a": lambda: next(drift) * 0.01, "b": 0.5}, log)
    s = bench.Settings(warmup_iters=0, min_iters=5, max_iters=10**6, round_iters=5, stable_rel=0.001,
                       time_budget_s=10.0)
    times = bench.measure(variants, s, clock=clock)
    assert len(times["a"]) < 100 and len(times["a"]) == len(times["b"])
    assert clock.t <= 2 * 10.0 + 30  # the budget is per variant; one more round may finish


def test_settings_validate_and_read_protobuf_json():
    with pytest.raises(ValueError, match="max_iters"):
        bench.Settings(min_iters=10, max_iters=5)
    with pytest.raises(ValueError, match="stable_rel"):
        bench.Settings(stable_rel=0)
    s = bench.settings_from_dict({"min_iters": 50, "time_budget_s": 2.5, "threads": 1})
    assert (s.min_iters, s.time_budget_s, s.threads, s.warmup_iters) == (50, 2.5, 1, bench.Settings().warmup_iters)


def test_peak_memory_sees_a_large_temporary_allocation():
    def alloc():
        t = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
        return int(t[::4096].sum())

    peak = bench.peak_memory(alloc)
    small = bench.peak_memory(lambda: torch.ones(16).sum())
    assert peak is not None and small is not None
    assert peak >= 60 << 20 and small < 8 << 20
