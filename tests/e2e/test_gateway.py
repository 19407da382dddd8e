"""The gateway alone (no services): uploads, auth, tenants, validation, idempotent submits."""

import io
import os
import pickle
import zipfile

import grpc
import pytest

from kpt import contract as c
from kpt.errors import KptError
from tests.e2e import mesh as meshlib

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
MAX_UPLOAD = 4 << 20


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = meshlib.start(str(tmp_path_factory.mktemp("gw")), targets=(), KPT_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
                   KPT_REQUIRE_LIVE_TARGET="false")
    yield m
    m.stop()


def pt2_bytes(payload: bytes = b"{}") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/archive_format", "pt2")
        z.writestr("m/models/model.json", payload)
    return buf.getvalue()


def upload(cl, tmp_path, data: bytes, name="m.pt2"):
    p = tmp_path / name
    p.write_bytes(data)
    return cl.upload(str(p))


def code_of(excinfo) -> str:
    return excinfo.value.code


def test_upload_dedups_by_digest(mesh, tmp_path):
    with mesh.client() as cl:
        a = upload(cl, tmp_path, pt2_bytes(b"dedup"))
        b = upload(cl, tmp_path, pt2_bytes(b"dedup"), "other-name.pt2")
    assert a.sha256 == b.sha256 and a.format == c.ModelFormat.MODEL_FORMAT_EXPORTED_PROGRAM


@pytest.mark.parametrize("data,code", [
    (pt2_bytes(b"x" * 5000)[:-100], "INVALID_MODEL"),
    (b"just some text, not a model\n", "INVALID_MODEL"),
    (pickle.dumps(os.system, protocol=2), "UNSAFE_MODEL"),
    (b"", "INVALID_MODEL"),
])
def test_bad_uploads(mesh, tmp_path, data, code):
    with mesh.client() as cl:
        with pytest.raises(KptError) as e:
            upload(cl, tmp_path, data)
    assert code_of(e) == code


def test_oversize_upload(mesh, tmp_path):
    with mesh.client() as cl:
        with pytest.raises(KptError) as e:
            upload(cl, tmp_path, pt2_bytes(os.urandom(MAX_UPLOAD + 1024)))
    assert code_of(e) == "TOO_LARGE"


def test_oversize_upload_without_announced_size(mesh):
    """A client that lies (no size in the header) is cut off at the limit."""
    with mesh.client() as cl:
        def parts():
            yield c.UploadModelRequest(header=c.UploadHeader(name="big.pt2"))
            for _ in range(MAX_UPLOAD // (1 << 20) + 2):
                yield c.UploadModelRequest(chunk=b"\0" * (1 << 20))
        with pytest.raises(KptError) as e:
            cl.calls.stream_in("UploadModel", parts())
    assert code_of(e) == "TOO_LARGE"


@pytest.mark.parametrize("token", [None, "", "wrong"])
def test_missing_or_invalid_token(mesh, token):
    from kpt.client import Client
    with Client(mesh.gateway_addr, token or "") as cl:
        with pytest.raises(KptError) as e:
            cl.targets()
    assert code_of(e) == "UNAUTHENTICATED"


def test_raw_grpc_status_carries_error_detail(mesh):
    """Clients in other languages get the gRPC code and the ErrorDetail in the status details."""
    from grpc_status import rpc_status
    with grpc.insecure_channel(mesh.gateway_addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            c.GatewayStub(ch).ListTargets(c.ListTargetsRequest())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    st = rpc_status.from_call(e.value)
    detail = c.ErrorDetail()
    st.details[0].Unpack(detail)
    assert detail.code == "UNAUTHENTICATED"


def zoo_spec(name="mlp", **kw):
    return c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=c.ModelRef(format=c.ModelFormat.MODEL_FORMAT_ZOO, name=name), **kw)


def test_unknown_target_and_level(mesh):
    with mesh.client() as cl:
        with pytest.raises(KptError) as e:
            cl.calls.unary("SubmitJob", c.SubmitJobRequest(spec=zoo_spec(), targets=[42]))
        assert code_of(e) == "UNKNOWN_TARGET"
        with pytest.raises(KptError) as e:
            cl.calls.unary("SubmitJob", c.SubmitJobRequest(spec=zoo_spec(level=9), targets=[1]))
        assert code_of(e) == "UNKNOWN_LEVEL"
        with pytest.raises(KptError) as e:
            cl.submit(zoo_spec(), ["quantum"])
        assert code_of(e) == "UNKNOWN_TARGET"


def test_no_live_service_is_unavailable_when_required(tmp_path_factory):
    m = meshlib.start(str(tmp_path_factory.mktemp("gw2")), targets=())
    try:
        with m.client() as cl:
            with pytest.raises(KptError) as e:
                cl.submit(zoo_spec(), ["cpu"])
        assert code_of(e) == "UNAVAILABLE"
    finally:
        m.stop()


def test_resubmitted_job_id_is_one_job(mesh):
    with mesh.client() as cl:
        a = cl.submit(zoo_spec(), ["cpu"], job_id="same-id")[0]
        b = cl.submit(zoo_spec(), ["cpu"], job_id="same-id")[0]
        assert a.id == b.id == "same-id"
        assert a.proto.created_at == b.proto.created_at
        assert [j.id for j in cl.jobs()].count("same-id") == 1


def test_fan_out_makes_a_group(mesh):
    with mesh.client() as cl:
        jobs = cl.submit(zoo_spec(), ["cpu", "tpu", "intel"])
        assert len({j.proto.group_id for j in jobs}) == 1
        assert sorted(c.target_name(j.proto.target) for j in jobs) == ["cpu", "intel", "tpu"]
        assert len(cl.jobs(group_id=jobs[0].proto.group_id)) == 3


def test_tenants_see_only_their_own(mesh, tmp_path):
    with mesh.client("alice") as alice, mesh.client("bob") as bob:
        model = upload(alice, tmp_path, pt2_bytes(b"alice-only"))
        job = alice.submit(c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=model), ["cpu"])[0]
        for call in (lambda: bob.job(job.id), lambda: bob.download(job.id, "ab" * 32, str(tmp_path / "x")),
                     lambda: list(bob.calls.stream_out("WatchJob", c.WatchJobRequest(job_id=job.id))),
                     lambda: bob.calls.unary("CancelJob", c.CancelJobRequest(job_id=job.id)),
                     lambda: bob.submit(c.JobSpec(kind=c.JobKind.JOB_KIND_OPTIMIZE, model=model), ["cpu"])):
            with pytest.raises(KptError) as e:
                call()
            assert code_of(e) == "NOT_FOUND"
        assert job.id not in {j.id for j in bob.jobs()}
        assert alice.job(job.id).state == "queued"


def test_cancel_queued_job(mesh):
    with mesh.client() as cl:
        job = cl.submit(zoo_spec("cnn"), ["cpu"])[0]
        assert job.cancel().state == "cancelled"
        events = list(job.events())
        assert [e.phase for e in events] == ["queued", "cancelled"]
        assert job.state == "cancelled"


def test_bad_job_ids(mesh):
    with mesh.client() as cl:
        with pytest.raises(KptError) as e:
            cl.job("../../etc")
        assert code_of(e) == "INVALID_ARGUMENT"


def test_a_stream_on_a_connection_gone_silent_fails_unavailable(tmp_path_factory, monkeypatch):
    """A peer that stops answering (here the gateway, stopped with SIGSTOP, its socket open) leaves no stream hanging:
    keepalive pings (KPT_GRPC_KEEPALIVE_S, both sides) end the call UNAVAILABLE after about twice that."""
    import signal

    monkeypatch.setenv("KPT_GRPC_KEEPALIVE_S", "1")
    m = meshlib.start(str(tmp_path_factory.mktemp("ka")), targets=(), KPT_REQUIRE_LIVE_TARGET="false",
                      KPT_GRPC_KEEPALIVE_S="1")
    gw = m.procs["gateway"].pid
    try:
        with m.client() as cl:
            job = cl.submit(zoo_spec("cnn"), ["cpu"])[0]  # queued for good: no service
            events = job.events()
            assert next(events).phase == "queued"
            os.kill(gw, signal.SIGSTOP)
            with pytest.raises(KptError) as e:  # without keepalive: waits for ever (the test's timeout fails it)
                next(events)
            assert code_of(e) == "UNAVAILABLE"
    finally:
        os.kill(gw, signal.SIGCONT)
        m.stop()
