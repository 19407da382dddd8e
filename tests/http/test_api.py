"""The HTTP API against a real mesh: parity with the gRPC contract, auth, typed JSON errors, and one
job submitted, watched (SSE), fetched, listed and downloaded over HTTP while gRPC sees the same job."""

import hashlib
import os
import pickle

import pytest

from kpt import contract as c
from kpt import errors
from tests.http import meshes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
MAX_UPLOAD = 1 << 20


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    # REQUIRE_LIVE_TARGET=false: a tpu job stays queued (nothing serves tpu), so cancel is deterministic.
    m = meshes.start(str(tmp_path_factory.mktemp("http")), meshes.cache_dir(tmp_path_factory),
                     KPT_MAX_UPLOAD_BYTES=str(MAX_UPLOAD), KPT_REQUIRE_LIVE_TARGET="false")
    yield m
    m.stop()


@pytest.fixture
def http(mesh):
    with meshes.client(mesh) as h:
        yield h


def error_of(r, status: int, code: str) -> dict:
    assert (r.status_code, r.headers["content-type"]) == (status, "application/json"), r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert errors.CATALOG[code].http_status == status or status in (404, 405)
    return body["error"]


def test_openapi_covers_every_grpc_call(http):
    spec = http.get("/openapi.json").json()
    summaries = " ".join(op["summary"] for path in spec["paths"].values() for op in path.values())
    methods = c.gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods
    missing = [m.name for m in methods if f"({m.name})" not in summaries]
    assert not missing, f"no HTTP route for {missing}"
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "kpt.v1.JobSpec" in spec["components"]["schemas"]


@pytest.mark.parametrize("header", [None, "Basic dG9rOng=", "Bearer wrong", "Bearer"])
def test_auth_is_the_grpc_auth(mesh, header):
    with meshes.client(mesh, headers={"Authorization": header} if header else {}) as h:
        error_of(h.get("/v1/targets"), 401, "UNAUTHENTICATED")
        error_of(h.post("/v1/jobs", json={}), 401, "UNAUTHENTICATED")


def test_targets_lists_the_live_cpu_service(http):
    (t,) = http.get("/v1/targets").json()["targets"]
    assert t["target"] == "TARGET_CPU" and t["available"] and int(t["memory_bytes"]) > 0 and t["toolchain"]


def test_upload_dedups_and_refuses_bad_models(http):
    data = meshes.pt2_bytes(b"http-upload")
    a = http.post("/v1/models", files={"file": ("a.pt2", data)}).json()
    b = http.post("/v1/models", params={"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)},
                  files={"file": ("b.pt2", data)}).json()
    assert a["model"]["sha256"] == b["model"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert a["model"]["format"] == "MODEL_FORMAT_EXPORTED_PROGRAM" and int(a["model"]["size_bytes"]) == len(data)
    assert b["already_present"] and not a.get("already_present")
    up = lambda body, **kw: http.post("/v1/models", files={"file": ("m.pt2", body)}, **kw)  # noqa: E731
    error_of(up(pickle.dumps(os.system, protocol=2)), 422, "UNSAFE_MODEL")
    error_of(up(b"plain text, not a model"), 422, "INVALID_MODEL")
    error_of(up(meshes.pt2_bytes(os.urandom(MAX_UPLOAD + 4096))), 413, "TOO_LARGE")
    error_of(up(data, params={"sha256": "0" * 64}), 400, "INVALID_ARGUMENT")
    error_of(up(data, params={"size_bytes": len(data) - 1}), 400, "INVALID_ARGUMENT")
    error_of(http.post("/v1/models", content=data, headers={"content-type": "application/octet-stream"}), 400,
             "INVALID_ARGUMENT")
    error_of(http.post("/v1/models", files={"other": ("m.pt2", data)}), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("body,status,code", [
    ({"spec": meshes.quick_spec(), "targets": ["TARGET_QUANTUM"]}, 400, "INVALID_ARGUMENT"),  # not an enum name
    ({"spec": meshes.quick_spec(), "targets": [42]}, 400, "UNKNOWN_TARGET"),
    ({"spec": {**meshes.quick_spec(), "level": 9}, "targets": ["TARGET_CPU"]}, 400, "UNKNOWN_LEVEL"),
    ({"spec": {**meshes.quick_spec(), "model": {"format": "MODEL_FORMAT_ZOO", "name": "nope"}}}, 400, "INVALID_ARGUMENT"),
    ({"spec": {**meshes.quick_spec(), "model": {"sha256": "ab" * 32}}, "targets": ["TARGET_CPU"]}, 404, "NOT_FOUND"),
    ({"spec": meshes.quick_spec(), "surprise": 1}, 400, "INVALID_ARGUMENT"),
    ([1, 2], 400, "INVALID_ARGUMENT"),
])
def test_submit_errors_are_typed(http, body, status, code):
    error_of(http.post("/v1/jobs", json=body), status, code)


def test_other_errors_are_typed(http):
    error_of(http.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}), 400,
             "INVALID_ARGUMENT")
    error_of(http.get("/v1/jobs/no-such-job"), 404, "NOT_FOUND")
    error_of(http.get("/v1/jobs/bad%20id"), 400, "INVALID_ARGUMENT")
    error_of(http.get("/v1/jobs/no-such-job/events"), 404, "NOT_FOUND")
    error_of(http.get("/v1/jobs/no-such-job/artifacts/" + "ab" * 32), 404, "NOT_FOUND")
    error_of(http.get("/v1/jobs/x/artifacts/not-a-digest"), 400, "INVALID_ARGUMENT")
    error_of(http.get("/v1/jobs", params={"page_size": -1}), 400, "INVALID_ARGUMENT")
    error_of(http.get("/v1/jobs", params={"page_token": "zz"}), 400, "INVALID_ARGUMENT")
    error_of(http.get("/v1/jobs", params={"state": "DONE"}), 400, "INVALID_ARGUMENT")
    error_of(http.get("/v1/nothing-here"), 404, "NOT_FOUND")
    error_of(http.delete("/v1/targets"), 405, "INVALID_ARGUMENT")


def test_cancel_and_watch_a_queued_job(mesh, http):
    (job,) = http.post("/v1/jobs", json={"spec": meshes.quick_spec(), "targets": ["TARGET_TPU"]}).json()["jobs"]
    assert job["state"] == "JOB_STATE_QUEUED"
    assert http.post(f"/v1/jobs/{job['id']}/cancel").json()["job"]["state"] == "JOB_STATE_CANCELLED"
    with http.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = meshes.sse_frames(r.iter_lines())
    assert [(e, d.get("phase")) for e, d in frames] == [("event", "queued"), ("event", "cancelled"), ("job", None)]
    assert frames[-1][1]["state"] == "JOB_STATE_CANCELLED"
    with mesh.client() as grpc_client:  # the same record over gRPC: one set of handlers behind both
        assert grpc_client.job(job["id"]).state == "cancelled"
    with meshes.client(mesh, meshes.BOB) as bob:  # another tenant does not see it
        error_of(bob.get(f"/v1/jobs/{job['id']}"), 404, "NOT_FOUND")
        error_of(bob.post(f"/v1/jobs/{job['id']}/cancel"), 404, "NOT_FOUND")
        assert job["id"] not in {j["id"] for j in bob.get("/v1/jobs").json().get("jobs", [])}


def test_job_over_http_end_to_end(mesh, http, tmp_path):
    res = http.post("/v1/jobs", json={"spec": meshes.quick_spec(), "targets": ["TARGET_CPU"]}).json()
    (job,) = res["jobs"]
    with http.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=240) as r:
        frames = meshes.sse_frames(r.iter_lines())
    kinds = [e for e, _ in frames]
    assert kinds[-1] == "job" and set(kinds[:-1]) == {"event"}, kinds
    seqs = [int(d["seq"]) for e, d in frames[:-1]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert frames[0][1]["phase"] == "queued" and frames[-2][1]["phase"] == "done"
    done = frames[-1][1]
    assert done["state"] == "JOB_STATE_SUCCEEDED", mesh.logs("svc-cpu")
    assert http.get(f"/v1/jobs/{job['id']}").json()["job"] == done
    listed = http.get("/v1/jobs", params={"group_id": res["group_id"]}).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert [j["id"] for j in http.get("/v1/jobs", params={"state": "JOB_STATE_SUCCEEDED"}).json()["jobs"]] == [job["id"]]
    r = done["result"]
    assert r["requested_level"] == "LEVEL_O1" and r["passes"] and r["accuracy"]["passed"]
    assert {v["variant"] for v in r["variants"]} >= {"kpt_O0"}
    (art,) = r["artifacts"]
    got = http.get(f"/v1/jobs/{job['id']}/artifacts/{art['sha256']}")
    assert got.status_code == 200 and int(got.headers["content-length"]) == int(art["size_bytes"])
    assert hashlib.sha256(got.content).hexdigest() == art["sha256"]
    assert art["name"] in got.headers["content-disposition"]
    with mesh.client() as grpc_client:  # gRPC downloads the same bytes
        (path,) = grpc_client.job(job["id"]).download(str(tmp_path))
    assert open(path, "rb").read() == got.content
