"""The CLI as a user runs it: kpt up -> targets -> optimize --json -> jobs -> compare -> download -> down."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from kpt import natsd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
KPT = os.path.join(os.path.dirname(sys.executable), "kpt")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("kpt-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPT_")}
    env.update(KPT_HOME=str(home))
    gateway, http = (f"127.0.0.1:{natsd.free_port()}" for _ in range(2))
    up = subprocess.run([KPT, "up", "--targets", "cpu", "--gateway", gateway, "--http", http, "--json"], env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    yield env, json.loads(up.stdout)
    subprocess.run([KPT, "down"], env=env, timeout=60)


def kpt(env, *args, check=True):
    out = subprocess.run([KPT, *args], env=env, capture_output=True, text=True, timeout=400)
    if check:
        assert out.returncode == 0, out.stderr + out.stdout
    return out


def test_up_status_targets(home):
    env, state = home
    assert any(t["target"] == "TARGET_CPU" for t in state["targets"])
    assert oct(os.stat(os.path.join(env["KPT_HOME"], "token")).st_mode & 0o777) == "0o600"
    with urllib.request.urlopen(state["state"]["http"] + "/", timeout=10) as page:  # the web page, same process
        assert page.status == 200 and b"<html" in page.read().lower()
    status = json.loads(kpt(env, "status", "--json").stdout)
    assert all(status["processes"].values()) and set(status["processes"]) >= {"nats", "gateway", "svc-cpu"}
    targets = json.loads(kpt(env, "targets", "--json").stdout)["targets"]
    assert targets[0]["device_kind"] == "cpu"


def test_optimize_compare_download(home, tmp_path):
    env, _ = home
    res = json.loads(kpt(env, "optimize", "mlp", "-t", "cpu", "-l", "O1", "--json", "-o", str(tmp_path)).stdout)
    (job,) = res["jobs"]
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert os.listdir(tmp_path) == [job["result"]["artifacts"][0]["name"]]
    jobs = json.loads(kpt(env, "jobs", "--json").stdout)["jobs"]
    assert job["id"] in {j["id"] for j in jobs}
    cmp = json.loads(kpt(env, "compare", res["group_id"], "--json").stdout)["jobs"]
    assert [j["id"] for j in cmp] == [job["id"]]
    table = kpt(env, "compare", res["group_id"]).stdout
    assert "cpu" in table and "O1" in table
    again = tmp_path / "again"
    paths = json.loads(kpt(env, "download", job["id"], "-o", str(again), "--json").stdout)["paths"]
    assert len(paths) == 1 and os.path.getsize(paths[0]) == int(job["result"]["artifacts"][0]["size_bytes"])


def test_errors_are_clear(home):
    env, _ = home
    out = kpt(env, "optimize", "mlp", "-t", "quantum", check=False)
    assert out.returncode == 2 and "UNKNOWN_TARGET" in out.stderr
    out = kpt(env, "optimize", "mlp", "-t", "cpu", "-l", "O9", check=False)
    assert out.returncode == 2 and "UNKNOWN_LEVEL" in out.stderr
    out = kpt(env, "optimize", "no-such-model.pt2", check=False)
    assert out.returncode != 0 and "no such file" in (out.stderr + out.stdout)
    bad_env = dict(env, KPT_TOKEN="wrong")
    out = kpt(bad_env, "targets", check=False)
    assert out.returncode == 2 and "UNAUTHENTICATED" in out.stderr
