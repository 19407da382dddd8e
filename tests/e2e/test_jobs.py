"""The mesh end to end: upload -> optimize O0..O3 / export / benchmark -> download -> artifacts
checked in a fresh process; result cache; typed job failures while the service keeps serving."""

import os

import pytest

from kpt import contract as c
from kpt.bus import core as bus_core
from kpt.errors import KptError
from tests.e2e import jobs_helpers as h
from tests.e2e import mesh as meshlib

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = meshlib.start(str(tmp_path_factory.mktemp("jobs")))
    yield m
    m.stop()


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return h.export_zoo("cnn", str(tmp_path_factory.mktemp("models") / "cnn.pt2"))


@pytest.mark.parametrize("level", ["O0", "O1", "O2", "O3"])
def test_optimize_levels(mesh, cnn, tmp_path, level):
    with mesh.client() as cl:
        model = cl.upload(cnn)
        job = cl.optimize(model, target="cpu", level=level).wait(timeout=800)
        r = job.result
        assert job.state == "succeeded", mesh.logs("svc-cpu")
        assert c.level_name(r.requested_level) == level
        assert r.achieved_level <= r.requested_level
        if r.achieved_level < r.requested_level:
            assert r.fallback_reason
        by = {v.variant: v for v in r.variants}
        achieved = f"kpt_{c.level_name(r.achieved_level)}"
        assert {"kpt_O0", achieved} <= set(by)
        for v in (by["kpt_O0"], by[achieved]):
            lat = v.latency
            assert 0 < lat.p50_ms <= lat.p90_ms <= lat.p99_ms and lat.iterations > 0
        if achieved != "kpt_O0":
            ratio = by["kpt_O0"].latency.p50_ms / by[achieved].latency.p50_ms
            assert r.speedup == pytest.approx(ratio, rel=1e-6)
        assert r.accuracy.passed and r.passes
        (path,) = job.download(str(tmp_path))
        (art,) = r.artifacts
        assert os.path.getsize(path) == art.size_bytes
        for key in ("source_digest", "target", "device", "level", "passes", "precision", "max_abs_err", "p50_ms"):
            assert key in art.metadata, key
        assert art.metadata["source_digest"] == model.sha256
        metrics = h.check_in_fresh_process(path, c.format_name(art.format), cnn, art.metadata["input_spec"])
        assert h.within(metrics, art.metadata["precision"]), metrics


def test_export_formats(mesh, cnn, tmp_path):
    formats = ["onnx", "torchscript", "exported_program"]
    with mesh.client() as cl:
        job = cl.export(cl.upload(cnn), formats, target="cpu").wait(timeout=600)
        got = {c.format_name(a.format): a for a in job.result.artifacts}
        assert set(got) == set(formats)
        for path in job.download(str(tmp_path)):
            art = next(a for a in job.result.artifacts if a.name == os.path.basename(path))
            metrics = h.check_in_fresh_process(path, c.format_name(art.format), cnn, art.metadata["input_spec"])
            assert h.within(metrics, "fp32"), (art.name, metrics)


async def _jobs_stream_messages(url: str) -> int:
    bus = await bus_core.connect(url)
    try:
        return (await bus.js.stream_info(bus_core.JOBS_STREAM)).state.last_seq
    finally:
        await bus.close()


async def test_same_submit_twice_is_a_cache_hit(mesh, cnn):
    with mesh.client() as cl:
        model = cl.upload(cnn)
        first = cl.optimize(model, target="cpu", level="O1").wait(timeout=600)
        published = await _jobs_stream_messages(mesh.nats.url)
        second = cl.optimize(model, target="cpu", level="O1")
        assert second.done and second.proto.cache_hit
        assert second.id != first.id and second.proto.cached_from in (first.id, first.proto.cached_from)
        assert second.result == first.result
        assert [e.phase for e in second.events()] == ["done"]
        assert await _jobs_stream_messages(mesh.nats.url) == published  # nothing was sent to a service


def test_benchmark_job_measures_references(mesh):
    with mesh.client() as cl:
        job = cl.benchmark("mlp", target="cpu", level="O1").wait(timeout=600)
        names = {v.variant for v in job.result.variants if not v.error}
        assert {"eager_fp32", "compile_default", "onnxruntime", "kpt_O1"} <= names, job.result.variants


def test_bad_models_fail_typed_and_the_service_keeps_serving(mesh, cnn, tmp_path):
    marker = tmp_path / "pwned"
    with mesh.client() as cl:
        bad = cl.upload(h.corrupt_pt2(cnn, str(tmp_path / "corrupt.pt2")))
        job = cl.optimize(bad, target="cpu", level="O1").wait(timeout=300, raise_on_failure=False)
        assert job.state == "failed" and job.error.code == "INVALID_MODEL", job.error

        bomb = cl.upload(h.pickle_bomb_pt2(cnn, str(tmp_path / "bomb.pt2"), str(marker)))
        job = cl.optimize(bomb, target="cpu", level="O1").wait(timeout=300, raise_on_failure=False)
        assert job.state == "failed" and job.error.code in ("UNSAFE_MODEL", "INVALID_MODEL"), job.error
        assert not marker.exists()

        good = cl.upload(cnn)
        spec = c.InputSpec()
        spec.tensors.add(name="x", dtype="float32", dims=[c.Dim(size=1), c.Dim(size=5), c.Dim(size=7)])
        job = cl.optimize(good, target="cpu", level="O1", inputs=spec).wait(timeout=300, raise_on_failure=False)
        assert job.state == "failed" and job.error.code == "INVALID_INPUT", job.error
        with pytest.raises(KptError) as e:
            cl.optimize(good, target="cpu", level="O1", inputs=spec).wait(timeout=300)
        assert e.value.code == "INVALID_INPUT"

        ok = cl.optimize("mlp", target="cpu", level="O0").wait(timeout=300)
        assert ok.state == "succeeded"
    assert mesh.procs["svc-cpu"].poll() is None
