"""Edges of the SDK and the CLI a user hits: failed jobs, bad paths, streams, timeouts, the local mesh failing.

A fake gateway (an in-process gRPC server whose handlers each test sets) stands in for the mesh.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest
from typer.testing import CliRunner

from kpt import cli, local, natsd, settings
from kpt import contract as c
from kpt.client import Client, Job
from kpt.errors import InvalidArgument, InvalidSetting, KptError, Timeout, Unavailable

pytestmark = pytest.mark.timeout(60)


class FakeGateway(c.GatewayServicer):
    """Each RPC calls self.handlers[name](request, context); a test sets the ones it needs."""

    def __init__(self) -> None:
        self.handlers: dict = {}

    def _h(self, name, request, context):
        if name not in self.handlers:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, name)
        return self.handlers[name](request, context)

    def GetJob(self, request, context):
        return self._h("GetJob", request, context)

    def SubmitJob(self, request, context):
        return self._h("SubmitJob", request, context)

    def ListJobs(self, request, context):
        return self._h("ListJobs", request, context)

    def WatchJob(self, request, context):
        yield from self._h("WatchJob", request, context)

    def DownloadArtifact(self, request, context):
        yield from self._h("DownloadArtifact", request, context)


@pytest.fixture
def gateway():
    server = grpc.server(futures.ThreadPoolExecutor(8))
    fake = FakeGateway()
    c.add_GatewayServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    fake.addr = f"127.0.0.1:{port}"
    yield fake
    server.stop(0)


@pytest.fixture
def env(gateway, tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("KPT_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("KPT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KPT_GATEWAY_ADDR", gateway.addr)
    monkeypatch.setenv("KPT_TOKEN", "tok-secret-123")
    return gateway


def invoke(*args):
    res = CliRunner().invoke(cli.app, list(args))
    # a clean exit: typer.Exit / SystemExit, never an uncaught exception (a traceback for the user)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def failed_job(job_id="j1") -> c.Job:
    job = c.Job(id=job_id, group_id="g1", target=c.Target.TARGET_CPU, state=c.JobState.JOB_STATE_FAILED)
    job.error.code, job.error.message = "ACCURACY_FAILED", "no level within tolerance"
    return job


# -- failed jobs exit non-zero ---------------------------------------------------------------
def test_optimize_json_exits_nonzero_when_the_job_failed(env):
    env.handlers["SubmitJob"] = lambda req, ctx: c.SubmitJobResponse(jobs=[failed_job()])
    res = invoke("optimize", "mlp", "-t", "cpu", "--json")
    assert json.loads(res.stdout)["jobs"][0]["state"] == "JOB_STATE_FAILED"
    assert res.exit_code == 1


@pytest.mark.parametrize("as_json", [False, True])
def test_watch_exits_nonzero_when_the_job_failed(env, as_json):
    env.handlers["GetJob"] = lambda req, ctx: c.GetJobResponse(job=failed_job(req.job_id))
    env.handlers["WatchJob"] = lambda req, ctx: iter([c.WatchJobResponse(job=failed_job(req.job_id))])
    res = invoke("watch", "j1", *(["--json"] if as_json else []))
    assert res.exit_code == 1
    assert "ACCURACY_FAILED" in res.stdout


# -- bad local paths: one typed error, no traceback --------------------------------------------
def test_upload_of_a_missing_path_or_a_directory_is_a_typed_error(tmp_path):
    with Client("127.0.0.1:1", "t") as cl:
        for bad in (tmp_path / "missing.pt2", tmp_path):
            with pytest.raises(InvalidArgument, match="not a readable file"):
                cl.upload(str(bad))


def test_optimize_of_a_directory_exits_2_with_one_line(env, tmp_path):
    res = invoke("optimize", str(tmp_path), "-t", "cpu")
    assert res.exit_code == 2 and "INVALID_ARGUMENT" in res.stderr and "Traceback" not in res.output


def test_jobs_with_an_unknown_state_is_a_typed_error(env):
    with Client(env.addr, "t") as cl:
        with pytest.raises(InvalidArgument, match="unknown state 'bogus'"):
            cl.jobs(state="bogus")
    res = invoke("jobs", "--state", "bogus")
    assert res.exit_code == 2 and "INVALID_ARGUMENT" in res.stderr


def test_compare_of_an_empty_group_is_not_found(env):
    env.handlers["ListJobs"] = lambda req, ctx: c.ListJobsResponse()
    res = invoke("compare", "nope")
    assert res.exit_code == 2 and "NOT_FOUND" in res.stderr


# -- downloads --------------------------------------------------------------------------------
def job_with_artifact(data: bytes) -> c.Job:
    job = c.Job(id="j1", target=c.Target.TARGET_CPU, state=c.JobState.JOB_STATE_SUCCEEDED)
    job.result.artifacts.add(name="model.pt2", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    return job


def test_a_download_that_fails_midway_leaves_no_file(env, tmp_path):
    data = b"x" * 1000

    def broken(req, ctx):
        yield c.DownloadArtifactResponse(chunk=data[:500])
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "object store went away")

    env.handlers["DownloadArtifact"] = broken
    out = tmp_path / "out"
    with Client(env.addr, "t") as cl:
        job = Job(cl, job_with_artifact(data))
        with pytest.raises(KptError):
            job.download(str(out))
    assert os.listdir(out) == []


def test_download_into_a_file_path_is_a_typed_error(env, tmp_path):
    data = b"abc"
    env.handlers["GetJob"] = lambda req, ctx: c.GetJobResponse(job=job_with_artifact(data))
    (tmp_path / "afile").write_text("keep me")
    res = invoke("download", "j1", "-o", str(tmp_path / "afile"))
    assert res.exit_code == 2 and "INVALID_ARGUMENT" in res.stderr
    assert (tmp_path / "afile").read_text() == "keep me"


def test_download_of_a_job_without_artifacts_exits_nonzero(env, tmp_path):
    env.handlers["GetJob"] = lambda req, ctx: c.GetJobResponse(job=failed_job(req.job_id))
    res = invoke("download", "j1", "-o", str(tmp_path / "out"))
    assert res.exit_code == 2 and "NOT_FOUND" in res.stderr and "failed" in res.stderr


# -- streams: deadlines and cancellation -------------------------------------------------------
def test_wait_with_a_timeout_returns_even_when_no_event_ever_comes(env):
    queued = c.Job(id="j1", target=c.Target.TARGET_CPU, state=c.JobState.JOB_STATE_QUEUED)

    def silent(req, ctx):  # a job stuck in the queue: the gateway sends nothing until it ends
        while ctx.is_active():
            time.sleep(0.05)
        return iter(())

    env.handlers["WatchJob"] = silent
    env.handlers["GetJob"] = lambda req, ctx: c.GetJobResponse(job=queued)
    with Client(env.addr, "t") as cl:
        job = cl.job("j1")
        t0 = time.monotonic()
        with pytest.raises(Timeout):
            job.wait(timeout=1.0)
        assert time.monotonic() - t0 < 10


def test_leaving_an_event_stream_early_cancels_it(env):
    ended = threading.Event()

    def endless(req, ctx):
        ctx.add_callback(ended.set)
        while ctx.is_active():
            yield c.WatchJobResponse(event=c.Event(phase="compile", progress=0.5))
            time.sleep(0.05)

    env.handlers["WatchJob"] = endless
    env.handlers["GetJob"] = lambda req, ctx: c.GetJobResponse(job=c.Job(id="j1"))
    with Client(env.addr, "t") as cl:
        events = cl.job("j1").events()
        next(events)
        events.close()  # what `break` in a for loop does once the generator is dropped
        assert ended.wait(5), "the WatchJob stream was left open on the gateway"


def test_an_unreachable_gateway_exits_2_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("KPT_HOME", str(tmp_path))
    monkeypatch.setenv("KPT_GATEWAY_ADDR", f"127.0.0.1:{natsd.free_port()}")
    res = invoke("targets")
    assert res.exit_code == 2 and "UNAVAILABLE" in res.stderr


def test_tokens_never_appear_in_errors(env):
    res = invoke("targets")
    assert "tok-secret-123" not in res.output


# -- the local mesh ----------------------------------------------------------------------------
def test_a_failed_up_leaves_nothing_running(monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("KPT_HOME", str(home))
    started = []
    real = natsd.start
    monkeypatch.setattr(natsd, "start", lambda *a, **k: started.append(real(*a, **k)) or started[-1])
    res = invoke("up", "--targets", "quantum", "--port", "0", "--gateway", f"127.0.0.1:{natsd.free_port()}",
                 "--http", "")
    assert res.exit_code != 0 and "quantum" in res.stderr
    assert len(started) == 1
    started[0].proc.wait(10)  # stopped, not orphaned
    assert not (home / "state.json").exists()
    assert oct((home / "tokens").stat().st_mode & 0o777) == "0o600", "the tokens file holds the token too"


def test_nats_that_never_listens_is_stopped(monkeypatch, tmp_path):
    procs = []

    def never(port, timeout=10.0, proc=None):
        procs.append(proc)
        raise Unavailable("did not listen")

    monkeypatch.setattr(natsd, "wait_port", never)
    with pytest.raises(Unavailable):
        natsd.start(str(tmp_path / "nats"))
    assert procs[0].wait(10) is not None


# -- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,value", [
    ("KPT_HEARTBEAT_S", "-1"), ("KPT_HEARTBEAT_S", "nan"), ("KPT_ACK_WAIT_S", "0"), ("KPT_MAX_ATTEMPTS", "0"),
    ("KPT_TARGET_TTL_S", "inf"), ("KPT_STREAM_REPLICAS", "-3"), ("KPT_JOB_TIMEOUT_S", "-5"),
    ("KPT_MAX_UPLOAD_BYTES", "-1"), ("KPT_JOB_MEMORY_BYTES", "-1"), ("KPT_LOG_LEVEL", "LOUD"), ("KPT_LOG_LEVEL", "debug"),
    ("KPT_MAX_ATTEMPTS", "three"),
])
def test_bad_settings_fail_with_the_hint(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSetting, match=name) as e:  # typed: a library call (Client()) must not exit
        settings.get(name)
    assert e.value.code == "INVALID_SETTING" and e.value.metadata == {"setting": name}


@pytest.mark.parametrize("module", ["kpt_gateway.server", "kpt_cpu.service"])
def test_a_process_with_a_bad_setting_exits_with_the_hint(module):
    env = {**os.environ, "KPT_LOG_LEVEL": "LOUD"}
    out = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "KPT_LOG_LEVEL='LOUD' is invalid" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("name,value,want", [
    ("KPT_JOB_MEMORY_BYTES", "0", 0), ("KPT_HEARTBEAT_S", "0.5", 0.5), ("KPT_LOG_LEVEL", "DEBUG", "DEBUG"),
    ("KPT_MAX_ATTEMPTS", "3", 3),
])
def test_good_settings_parse(monkeypatch, name, value, want):
    monkeypatch.setenv(name, value)
    assert settings.get(name) == want


def test_up_fails_fast_when_a_process_it_started_exits(monkeypatch, tmp_path):
    """The gateway dies at once (its port taken, say): `kpt up` says so, instead of waiting out its 180 s."""
    import sys

    from kpt import local

    monkeypatch.setenv("KPT_HOME", str(tmp_path / "home"))
    crash = local.Proc("gateway", [sys.executable, "-c", "print('address already in use'); raise SystemExit(3)"])
    monkeypatch.setattr(local, "plan", lambda *a, **k: [crash])
    t0 = time.monotonic()
    res = invoke("up", "--gateway", f"127.0.0.1:{natsd.free_port()}", "--http", "")
    assert res.exit_code == 1 and "gateway exited with 3" in res.stderr
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "home" / "state.json").exists()


def test_stale_state_with_pids_now_owned_by_another_user(monkeypatch, tmp_path):
    """After a reboot state.json may name pids that now belong to someone else: not ours, not a traceback."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "state.json").write_text(json.dumps({"gateway": "127.0.0.1:1", "pids": {"nats": 424242, "gateway": 424243}}))
    monkeypatch.setenv("KPT_HOME", str(home))
    monkeypatch.setenv("KPT_GATEWAY_ADDR", "127.0.0.1:1")

    def kill(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", kill)
    res = invoke("status", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["processes"] == {"nats": False, "gateway": False}
    res = invoke("down")
    assert res.exit_code == 0 and not (home / "state.json").exists()


def test_down_leaves_alone_a_pid_reused_by_another_process_of_the_same_user(monkeypatch, tmp_path):
    """state.json names a pid that is now another process of this user (after a reboot): its start time differs
    from the one `kpt up` recorded, so `kpt down` and `kpt status` leave it alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = local.started_at(other.pid)
        assert start is not None
        home = tmp_path / "home"
        home.mkdir()
        (home / "state.json").write_text(json.dumps({"gateway": "127.0.0.1:1", "pids": {"gateway": other.pid},
                                                     "started": {"gateway": start - 1}}))
        monkeypatch.setenv("KPT_HOME", str(home))
        monkeypatch.setenv("KPT_GATEWAY_ADDR", "127.0.0.1:1")
        res = invoke("status", "--json")
        assert res.exit_code == 0 and json.loads(res.stdout)["processes"] == {"gateway": False}
        assert invoke("down").exit_code == 0 and not (home / "state.json").exists()
        assert other.poll() is None  # not signalled
        (home / "state.json").write_text(json.dumps({"gateway": "127.0.0.1:1", "pids": {"gateway": other.pid},
                                                     "started": {"gateway": start}}))
        assert json.loads(invoke("status", "--json").stdout)["processes"] == {"gateway": True}
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("text", ["{not json", "[]", json.dumps({"pids": {}})])
@pytest.mark.parametrize("cmd", [("status",), ("down",), ("up",), ("jobs",)])
def test_a_corrupt_state_file_is_one_line_with_a_hint(monkeypatch, tmp_path, text, cmd):
    """A state.json cut short (a crash while writing, a full disk) or not one of kpt up's: exit 2 and the hint."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "state.json").write_text(text)
    monkeypatch.setenv("KPT_HOME", str(home))
    res = invoke(*cmd)
    assert res.exit_code == 2 and "is not a state file of `kpt up`" in " ".join(res.stderr.split()), res.stderr


def test_server_text_with_brackets_is_printed_as_is(env):
    """An error message holding "[/...]" (a path, a shape, a user's own input) is text, not rich markup: it used to
    crash the CLI with a MarkupError traceback or lose the bracketed part."""
    res = invoke("jobs", "--state", "[/bogus]")
    assert res.exit_code == 2 and "'[/bogus]'" in " ".join(res.stderr.split()), res.stderr
