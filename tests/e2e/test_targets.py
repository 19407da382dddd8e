"""The tpu (XLA's CPU device here) and intel services through the gateway: export and benchmark jobs, artifacts checked in a fresh process of the target's own environment, and a fan-out group
with the cpu service compared side by side. (Optimize jobs of every service: tests/contract.)"""

import os

import pytest

from kpt import contract as c
from kpt import local
from tests.e2e import jobs_helpers as h
from tests.e2e import mesh as meshlib

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
EXPORTS = {"tpu": ["stablehlo", "exported_program"], "intel": ["torchscript", "onnx", "openvino_ir"]}
# What a benchmark job on each target measures besides ours (kpt_O0 and the requested level).
REFERENCES = {"tpu": {"eager_fp32"}, "intel": {"eager_fp32"}}


@pytest.fixture(scope="module", params=sorted(EXPORTS))
def mesh(request, tmp_path_factory):
    target = request.param
    if local.service_python(target) is None:
        pytest.fail(f"services/{target}/.venv is missing: `make install` builds every service environment")
    m = meshlib.start(str(tmp_path_factory.mktemp(f"targets-{target}")), targets=("cpu", target))
    m.target = target
    yield m
    m.stop()


def test_export_formats_round_trip(mesh, tmp_path):
    """A zoo model, built in the target's own torch: an upload saved by a newer torch than the intel service's
    2.8 is rewritten for it, which OpenVINO cannot convert (that case is refused UNSUPPORTED: tests/intel)."""
    formats = EXPORTS[mesh.target]
    with mesh.client() as cl:
        job = cl.export("mlp", formats, target=mesh.target).wait(timeout=600, raise_on_failure=False)
        assert job.state == "succeeded", (job.error, mesh.logs(f"svc-{mesh.target}"))
        got = {c.format_name(a.format): a for a in job.result.artifacts}
        assert set(got) == set(formats)
        for path in job.download(str(tmp_path)):
            art = next(a for a in job.result.artifacts if a.name == os.path.basename(path))
            metrics = h.check_in_fresh_process(path, c.format_name(art.format), "zoo:mlp", art.metadata["input_spec"],
                                               target=mesh.target)
            assert h.within(metrics, "fp32"), (art.name, metrics)


def test_benchmark_job_measures_references_and_ours(mesh):
    with mesh.client() as cl:
        job = cl.benchmark("mlp", target=mesh.target, level="O1").wait(timeout=600, raise_on_failure=False)
        assert job.state == "succeeded", (job.error, mesh.logs(f"svc-{mesh.target}"))
        measured = {v.variant for v in job.result.variants if not v.error and v.latency.p50_ms > 0}
        assert REFERENCES[mesh.target] | {"kpt_O0", "kpt_O1"} <= measured, job.result.variants


def test_fan_out_group_with_cpu(mesh):
    with mesh.client() as cl:
        jobs = cl.submit(cl._spec("optimize", "mlp", "O1"), ["cpu", mesh.target])
        for j in jobs:
            j.wait(timeout=600, raise_on_failure=False)
        group = cl.jobs(group_id=jobs[0].proto.group_id)
    assert sorted(c.target_name(j.proto.target) for j in group) == sorted(["cpu", mesh.target])
    for j in group:
        assert j.state == "succeeded", j.error
        assert j.result.accuracy.passed and j.result.variants
