"""The contract every optimizer service must pass, run against each service as real processes.

A service whose hardware is absent must say so (available=false with a reason) and its jobs are
refused with UNAVAILABLE; the job tests then apply only where the hardware is present.
"""

import os
import sys

import pytest

from kpt import contract as c
from kpt import health, local, natsd
from kpt.errors import KptError
from tests.e2e import jobs_helpers as h
from tests.e2e import mesh as meshlib

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SERVICES = ["cpu", "nvidia", "amd", "tpu", "intel"]
# The GPU services' own environments hold CUDA/ROCm builds of torch that CI does not install; without a
# GPU their behaviour (capability report, UNAVAILABLE) is tested from the development environment.
DEV_ENV_OK = {"nvidia", "amd"}
REQUIRED_TOOLCHAIN = {"torch", "python"}
META_KEYS = {"source_digest", "target", "device", "level", "passes", "precision", "max_abs_err", "input_spec"}


@pytest.fixture(scope="module", params=SERVICES)
def svc(request, tmp_path_factory):
    name = request.param
    pythons = {}
    if local.service_python(name) is None:
        if name not in DEV_ENV_OK:
            pytest.fail(f"services/{name}/.venv is missing: `make install` builds every service environment")
        pythons[name] = sys.executable
    health_addr = f"127.0.0.1:{natsd.free_port()}"
    m = meshlib.start(str(tmp_path_factory.mktemp(f"contract-{name}")), targets=(name,), pythons=pythons,
                      KPT_HEALTH_ADDR=health_addr)
    m.health_addr = health_addr
    with m.client() as cl:
        (info,) = [i for i in cl.targets() if c.target_name(i.target) == name]
    yield name, m, info
    m.stop()


@pytest.fixture
def usable(svc):
    name, mesh, info = svc
    if not info.available:
        pytest.skip(f"{name} has no device here: {info.unavailable_reason}")
    return svc


def test_capability_advertised(svc):
    name, _, info = svc
    assert info.service_id and info.device_kind and info.toolchain_fingerprint
    assert REQUIRED_TOOLCHAIN <= set(info.toolchain), dict(info.toolchain)
    assert info.last_seen.seconds > 0
    if info.available:
        assert info.device_name and info.device_count >= 1 and info.memory_bytes > 0
        assert c.Precision.PRECISION_FP32 in info.precisions and info.formats
    else:
        assert info.unavailable_reason, "an unusable service must say why"


async def test_grpc_health_on_every_process(svc):
    _, mesh, _ = svc
    assert await health.check(mesh.health_addr) == "SERVING"  # the service
    assert await health.check(mesh.gateway_addr) == "SERVING"  # the gateway


def test_unusable_target_refuses_jobs(svc):
    name, mesh, info = svc
    if info.available:
        pytest.skip(f"{name} has its device here")
    with mesh.client() as cl:
        with pytest.raises(KptError) as e:
            cl.optimize("mlp", target=name, level="O1")
    assert e.value.code == "UNAVAILABLE" and info.unavailable_reason in e.value.message


def test_lifecycle_result_and_artifact(usable, tmp_path):
    name, mesh, _ = usable
    with mesh.client() as cl:
        job = cl.optimize("mlp", target=name, level="O1")
        events = list(job.events())
        phases = [e.phase for e in events]
        assert phases[0] == "queued" and phases[1] == "started" and phases[-1] == "done", phases
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        progress = [e.progress for e in events]
        assert progress == sorted(progress) and progress[-1] == 1.0, progress
        job.refresh()
        assert job.state == "succeeded" and job.proto.attempt == 1 and job.proto.service_id
        assert job.proto.started_at.ToNanoseconds() <= job.proto.finished_at.ToNanoseconds()
        r = job.result
        assert r.kind == c.JobKind.JOB_KIND_OPTIMIZE and r.device and r.backend and r.environment
        assert r.accuracy.passed and r.accuracy.samples > 0 and r.passes and r.attempts
        assert {v.variant for v in r.variants} >= {"kpt_O0", f"kpt_{c.level_name(r.achieved_level)}"}
        (art,) = r.artifacts
        assert len(art.sha256) == 64 and art.size_bytes > 0 and META_KEYS <= set(art.metadata)
        (path,) = job.download(str(tmp_path))
        metrics = h.check_in_fresh_process(path, c.format_name(art.format), "zoo:mlp", art.metadata["input_spec"],
                                           target=name)
        assert h.within(metrics, art.metadata["precision"]), metrics


def test_typed_job_error(usable, tmp_path):
    name, mesh, _ = usable
    with mesh.client() as cl:
        good = h.export_zoo("mlp", str(tmp_path / "mlp.pt2"))
        bad = cl.upload(h.corrupt_pt2(good, str(tmp_path / "bad.pt2")))
        job = cl.optimize(bad, target=name, level="O1").wait(timeout=300, raise_on_failure=False)
        assert job.state == "failed" and job.error.code == "INVALID_MODEL" and job.error.message
        phases = [e.phase for e in job.events()]
        assert phases[-1] == "failed"
    assert all(p.poll() is None for p in mesh.procs.values()), "a failed job must not take the service down"
    assert os.path.exists(good)
