"""Edge cases of the rich reports (kpt.report): text from jobs is shown as-is, never read as markup;
levels and side-by-side tables say what was measured."""

import asyncio

from rich.console import Console

from kpt import contract as c
from kpt import report

BRACKETS = ["shape [s0, 128] does not match [1, 128]", "cannot open [/tmp/model.pt2]", "[bold]x[/bold]"]


def render(renderable) -> str:
    con = Console(width=240, record=True, color_system=None)
    con.print(renderable)
    return con.export_text()


def failed_job(message: str) -> c.Job:
    j = c.Job(id="f1", target=c.Target.TARGET_NVIDIA, state=c.JobState.JOB_STATE_FAILED)
    j.error.code, j.error.message = "INVALID_MODEL", message
    return j


def test_error_messages_with_brackets_are_shown_verbatim():
    for msg in BRACKETS:
        j = failed_job(msg)
        assert f"INVALID_MODEL: {msg}" in render(report.job_report(j))


def test_server_text_in_tables_is_not_markup():
    j = c.Job(id="j1", target=c.Target.TARGET_CPU, state=c.JobState.JOB_STATE_SUCCEEDED)
    r = j.result
    r.device, r.backend, r.fallback_reason = "dev [/x]", "inductor [b]", "O3 outside tolerance [/y]"
    r.requested_level, r.achieved_level = c.Level.LEVEL_O3, c.Level.LEVEL_O2
    v = r.variants.add(variant="onnxruntime")
    v.error = "provider [/CUDA] missing"
    p = r.passes.add(name="fold", level=c.Level.LEVEL_O1, applied=False, reason="no [conv] found")
    r.artifacts.add(name="model [1].pt2", sha256="ab" * 32)
    out = render(report.job_report(j))
    for s in ("dev [/x]", "inductor [b]", "O3 outside tolerance [/y]", "provider [/CUDA] missing",
              "no [conv] found", "model [1].pt2"):
        assert s in out, s
    assert p.name in out
    assert "dev [/x]" in render(report.compare_table([j]))


def benchmark_job(target: int, model: str = "minilm") -> c.Job:
    j = c.Job(id=f"b-{target}", target=target, state=c.JobState.JOB_STATE_SUCCEEDED)
    j.spec.kind = j.result.kind = c.JobKind.JOB_KIND_BENCHMARK
    j.spec.model.name = model
    j.spec.level = j.result.requested_level = c.Level.LEVEL_O2
    for name, p50 in (("eager_fp32", 2.0), ("kpt_O0", 1.9), ("kpt_O2", 1.25)):
        v = j.result.variants.add(variant=name)
        v.latency.p50_ms, v.latency.p99_ms = p50, p50 * 2
    return j


def test_benchmark_job_does_not_claim_level_unspecified_was_delivered():
    out = render(report.job_report(benchmark_job(c.Target.TARGET_CPU)))
    assert "UNSPECIFIED" not in out
    assert "requested O2" in out


def test_compare_of_benchmark_jobs_shows_the_measured_level():
    out = render(report.compare_table([benchmark_job(c.Target.TARGET_CPU), benchmark_job(c.Target.TARGET_TPU)]))
    rows = [line for line in out.splitlines() if line.strip("│ ").startswith(("cpu", "tpu"))]
    assert len(rows) == 2
    for line in rows:
        assert "1.250" in line and "2.500" in line  # optimized p50 and p99 of kpt_O2


def test_compare_of_jobs_of_different_models_says_so():
    out = render(report.compare_table([benchmark_job(c.Target.TARGET_CPU, "minilm"),
                                       benchmark_job(c.Target.TARGET_TPU, "bert-base")]))
    assert "minilm" in out and "bert-base" in out
    assert "not comparable" in out


def test_compare_of_one_model_has_no_warning_and_empty_compare_renders():
    out = render(report.compare_table([benchmark_job(c.Target.TARGET_CPU), benchmark_job(c.Target.TARGET_TPU)]))
    assert "not comparable" not in out
    assert "side by side" in render(report.compare_table([]))


# -- the gateway's targets view (kpt_gateway.targets): a failed re-open must not end the watch ----------------

class _Entry:
    def __init__(self, key, value, delta=0):
        self.key, self.value, self.delta, self.operation = key, value, delta, "PUT"


class _Watcher:
    def __init__(self, entries, fail_after):
        self.entries, self.fail_after = entries, fail_after

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for e in self.entries:
            yield e
        if self.fail_after:
            raise ConnectionError("connection lost")
        await asyncio.Event().wait()

    async def stop(self):
        if self.fail_after:
            raise ConnectionError("connection closed")


class _FlakyTargets:
    """Opens: 1) one entry, then the watch breaks; 2) the re-open fails (NATS reconnecting); 3) works."""

    def __init__(self, info):
        self.info, self.opens = info, 0

    async def watchall(self):
        self.opens += 1
        if self.opens == 2:
            raise ConnectionError("no servers available")
        return _Watcher([_Entry("cpu.a", self.info.SerializeToString()), None], fail_after=self.opens == 1)


async def test_targets_view_survives_a_failed_reopen(monkeypatch):
    from kpt_gateway import targets

    monkeypatch.setattr(targets.asyncio, "sleep", _no_sleep)
    info = c.TargetInfo(service_id="a", target=c.Target.TARGET_CPU, available=True, last_seen=c.now())
    bus = type("Bus", (), {})()
    bus.targets = _FlakyTargets(info)
    view = targets.TargetsView(bus)
    await view.start()
    for _ in range(100):
        if bus.targets.opens >= 3:
            break
        await _real_sleep(0.01)
    assert bus.targets.opens == 3, "the watch stopped for good after one failed re-open"
    assert not view._task.done()
    assert [i.service_id for i in view.live()] == ["a"]
    await view.stop()


_real_sleep = asyncio.sleep


async def _no_sleep(_s):
    await _real_sleep(0)
