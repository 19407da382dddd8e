"""The result cache as the gateway serves it: what a hit hands to another submitter of the same job."""


import pytest

from kpt import contract as c
from kpt.bus import records
from kpt_gateway.api import Api
from tests.gateway.test_sniff import pt2_zip

pytestmark = pytest.mark.timeout(60)
FINGERPRINT = "fp-cache"
MODEL = pt2_zip({"m/archive_format": "pt2", "m/models/model.json": "{}"})


async def upload(api: Api, tenant: str, name: str) -> c.ModelRef:
    async def chunks():
        yield MODEL

    return (await api.upload(tenant, c.UploadHeader(name=name), chunks())).model


async def test_a_hit_does_not_show_another_tenants_upload_name(api, bus):
    """The key leaves an upload's file name out (the bytes decide the result), so a second tenant uploading the
    same bytes under another name gets the first tenant's result: it must not carry the first tenant's name."""
    spec = c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE)
    first = await upload(api, "alice", "alice-secret-project.pt2")
    spec.model.CopyFrom(c.ModelRef(sha256=first.sha256))
    done = (await api.submit("alice", c.SubmitJobRequest(spec=spec, targets=[c.Target.TARGET_CPU]))).jobs[0]
    assert not done.cache_hit
    done.state = c.JobState.JOB_STATE_SUCCEEDED  # what the worker stores once the job succeeded
    done.result.artifacts.add(sha256="ab" * 32, name="model.aoti.pt2",
                              metadata={"source_name": "alice-secret-project.pt2", "level": "LEVEL_O2"})
    _, info = api._resolve(c.Target.TARGET_CPU, api.view.live())  # the live service whose fingerprint keys it
    await records.remember(bus, records.cache_key(done.spec, done.target, info.toolchain_fingerprint), done)

    await upload(api, "bob", "mine.pt2")
    hit = (await api.submit("bob", c.SubmitJobRequest(spec=spec, targets=[c.Target.TARGET_CPU]))).jobs[0]
    assert hit.cache_hit and hit.state == c.JobState.JOB_STATE_SUCCEEDED
    meta = hit.result.artifacts[0].metadata
    assert meta["level"] == "LEVEL_O2" and meta["source_name"] == "mine.pt2"
    assert "alice" not in str(await api.get("bob", hit.id))
