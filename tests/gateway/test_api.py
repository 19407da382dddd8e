"""kpt_gateway.api.Api on a real JetStream, without gRPC or HTTP in front: what both adapters share."""

import asyncio

import pytest

from kpt import contract as c
from kpt.bus import records
from kpt.errors import InvalidArgument, KptError, TooLarge, Unavailable
from tests.gateway.test_sniff import pt2_zip

pytestmark = pytest.mark.timeout(60)
ZOO = c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=c.ModelRef(format=c.ModelFormat.MODEL_FORMAT_ZOO, name="mlp"))


async def ids(bus, tenant: str) -> set[str]:
    return {j.id for j in await records.list_jobs(bus, tenant)}


async def test_a_refused_fan_out_creates_no_job(api, bus):
    """cpu is live, nvidia is not: the submit is refused whole, not after the cpu job was queued."""
    req = c.SubmitJobRequest(spec=ZOO, targets=[c.Target.TARGET_CPU, c.Target.TARGET_NVIDIA])
    with pytest.raises(Unavailable):
        await api.submit("fanout", req)
    assert await ids(bus, "fanout") == set()


async def test_fan_out_job_ids_stay_valid(api, bus):
    """A 64-character job id fanned out to two targets would name jobs no call could reach ('<id>-cpu')."""
    api.require_live = False
    req = c.SubmitJobRequest(spec=ZOO, job_id="a" * 64, targets=[c.Target.TARGET_CPU, c.Target.TARGET_TPU])
    with pytest.raises(InvalidArgument, match="job id"):
        await api.submit("longid", req)
    assert await ids(bus, "longid") == set()
    req.job_id = "a" * 60
    for job in (await api.submit("longid", req)).jobs:
        assert (await api.get("longid", job.id)).id == job.id


async def test_oversize_spec_is_too_large(api, bus):
    """A spec past what one bus message holds is refused with TOO_LARGE, not INTERNAL (MaxPayloadError)."""
    spec = c.JobSpec()
    spec.CopyFrom(ZOO)
    spec.inputs.tensors.add(name="x" * (9 << 20), dtype="float32").dims.add(size=1)
    with pytest.raises(TooLarge):
        await api.submit("big", c.SubmitJobRequest(spec=spec, targets=[c.Target.TARGET_CPU]))
    assert await ids(bus, "big") == set()


@pytest.mark.parametrize("req", [c.ListJobsRequest(page_token="-1"), c.ListJobsRequest(page_size=-1),
                                 c.ListJobsRequest(state=99)], ids=["page_token", "page_size", "state"])
async def test_negative_paging_refused(api, req):
    """As over HTTP (page_size >= 0, a token this gateway returned, a JobState): gRPC gets INVALID_ARGUMENT too."""
    api.require_live = False
    for _ in range(3):
        await api.submit("pages", c.SubmitJobRequest(spec=ZOO, targets=[c.Target.TARGET_CPU]))
    with pytest.raises(InvalidArgument):
        await api.list("pages", req)


async def test_unknown_declared_format_is_invalid_argument(api):
    async def chunks():
        yield pt2_zip({"m/archive_format": "pt2"})

    with pytest.raises(KptError) as e:
        await api.upload("fmt", c.UploadHeader(name="m.pt2", format=99), chunks())
    assert e.value.code == "INVALID_ARGUMENT"


async def test_download_checks_the_digest_first(api):
    """HTTP refuses a malformed digest with 400 before looking the job up; gRPC answered 404 (no such job)."""
    with pytest.raises(KptError) as e:
        await anext(api.download("dl", "no-such-job", "not-a-digest"))
    assert e.value.code == "INVALID_ARGUMENT"


async def test_watch_shows_only_the_tenants_own_job_of_that_id(api, bus):
    """Job ids are unique per tenant only: two tenants' jobs of one id keep their progress events apart."""
    api.require_live = False
    for tenant in ("alice", "bob"):
        await api.submit(tenant, c.SubmitJobRequest(spec=ZOO, job_id="shared-id", targets=[c.Target.TARGET_CPU]))
    bobs = await api.get("bob", "shared-id")
    await records.publish_event(bus, bobs, "compile", "bob's compile", 0.5)
    seen = []

    async def collect():
        async for item in api.watch("alice", "shared-id"):
            if item.HasField("event"):
                seen.append(item.event.message)

    with pytest.raises(asyncio.TimeoutError):  # alice's job never ends: the watch is cut after every stored event
        await asyncio.wait_for(collect(), 3)
    assert seen and "bob's compile" not in seen, seen
