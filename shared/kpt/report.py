"""Human-readable reports of jobs (rich tables), shared by the CLI and `make demo`. Text from a job (messages, names,
reasons) goes into the tables as rich Text: rich would read "[...]" in it as markup."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from kpt import contract as c


def _ms(v: float) -> str:
    return f"{v:.3f}" if v else "-"


def variants_table(result: c.Result, title: str = "latency (ms)") -> Table:
    t = Table(title=title)
    for col in ("variant", "p50", "p90", "p99", "throughput/s", "peak MiB", "compile s", "max abs err", "note"):
        t.add_column(col, justify="left" if col in ("variant", "note") else "right")
    for v in result.variants:
        lat, acc = v.latency, v.accuracy
        t.add_row(Text(v.variant), _ms(lat.p50_ms), _ms(lat.p90_ms), _ms(lat.p99_ms),
                  f"{v.throughput_per_s:.1f}" if v.throughput_per_s else "-",
                  f"{v.peak_memory_bytes / 2**20:.0f}" if v.peak_memory_bytes else "-",
                  f"{v.compile_s:.1f}" if v.compile_s else "-",
                  f"{acc.max_abs_err:.2e}" if acc.samples else "-", Text(v.error))
    return t


def passes_table(result: c.Result) -> Table:
    t = Table(title="passes")
    for col in ("level", "pass", "applied", "seconds", "what / why"):
        t.add_column(col)
    for p in result.passes:
        t.add_row(c.level_name(p.level), Text(p.name), "yes" if p.applied else "skipped", f"{p.seconds:.2f}", Text(p.reason))
    return t


def job_report(job: c.Job) -> Group:
    r = job.result
    head = Table.grid(padding=(0, 2))
    head.add_row("job", Text(f"{job.id} ({c.kind_name(job.spec.kind)} on {c.target_name(job.target)})"))
    head.add_row("state", Text(c.state_name(job.state) + (f"  (cache hit: result of {job.cached_from})" if job.cache_hit else "")))
    if job.HasField("error"):
        head.add_row("error", Text(f"{job.error.code}: {job.error.message}"))
    if r.device:
        head.add_row("device", Text(f"{r.device}  backend {r.backend}"))
    if r.requested_level:
        lvl = f"requested {c.level_name(r.requested_level)}"
        if r.achieved_level:  # a benchmark job measures levels and delivers none
            lvl += f", delivered {c.level_name(r.achieved_level)}"
        head.add_row("level", Text(lvl + (f"  ({r.fallback_reason})" if r.fallback_reason else "")))
    if r.speedup:
        head.add_row("speedup", f"{r.speedup:.2f}x (baseline p50 / optimized p50, measured interleaved)")
    if r.accuracy.samples:
        a = r.accuracy
        head.add_row("accuracy", f"max abs {a.max_abs_err:.2e}, rel L2 {a.rel_l2:.2e}, cosine {a.cosine:.6f}"
                     + (f", SQNR {a.sqnr_db:.1f} dB" if a.sqnr_db else "") + ("  PASS" if a.passed else "  FAIL"))
    for art in r.artifacts:
        head.add_row("artifact", Text(f"{art.name}  {c.format_name(art.format)}  {art.size_bytes / 2**20:.2f} MiB  {art.sha256[:12]}"))
    parts = [head]
    if r.variants:
        parts.append(variants_table(r))
    if r.passes:
        parts.append(passes_table(r))
    return Group(*parts)


def _model(j: c.Job) -> str:
    m = j.spec.model
    return f"{m.name or m.sha256[:12]} {c.kind_name(j.spec.kind)} {c.level_name(j.spec.level)}"


def compare_table(jobs: list[c.Job]) -> Table:
    t = Table(title="side by side")
    mixed = len({_model(j) for j in jobs}) > 1  # e.g. a group id reused by a later submit
    if mixed:
        t.caption = "these jobs differ in model, kind or level: not comparable"
    for col in ("target",) + (("model / kind / level",) if mixed else ()) + (
            "device", "state", "level", "baseline p50", "optimized p50", "optimized p99", "speedup", "max abs err"):
        t.add_column(col)
    for j in sorted(jobs, key=lambda j: j.target):
        r = j.result
        by = {v.variant: v for v in r.variants}
        base = by.get("kpt_O0")
        # A benchmark job delivers no level; the level it measured against kpt_O0 is the requested one.
        level = r.achieved_level or (r.requested_level if r.kind == c.JobKind.JOB_KIND_BENCHMARK else 0)
        best = by.get(f"kpt_{c.level_name(level)}") if level else None
        t.add_row(c.target_name(j.target), *((Text(_model(j)),) if mixed else ()), Text(r.device or "-"),
                  c.state_name(j.state), c.level_name(level) if level else "-",
                  _ms(base.latency.p50_ms) if base else "-", _ms(best.latency.p50_ms) if best else "-",
                  _ms(best.latency.p99_ms) if best else "-", f"{r.speedup:.2f}x" if r.speedup else "-",
                  f"{r.accuracy.max_abs_err:.2e}" if r.accuracy.samples else (Text(j.error.code) if j.HasField("error") else "-"))
    return t


def show(renderable) -> None:
    Console().print(renderable)
