"""The job child process: results, typed errors, crashes, timeouts, memory limits, credentials."""

import os
import signal
import sys

import pytest

from kpt.errors import Cancelled, Internal, InvalidModel, OutOfMemory, Timeout, WorkerCrashed
from kpt.worker.process import Child

HERE = os.path.dirname(__file__)
pytestmark = pytest.mark.timeout(60)


async def spawn(handler: str, memory: int = 0) -> Child:
    child = await Child.spawn(f"handlers:{handler}", "handlers:capability", python=sys.executable,
                              env={"PYTHONPATH": HERE}, memory_bytes=memory)
    await child.ready(60)
    return child


async def run(child: Child, tmp_path, timeout: float = 30):
    events = []

    async def on_event(ev):
        events.append(ev)

    result = await child.run({"job": {}, "model_path": None, "workdir": str(tmp_path)}, on_event, timeout)
    return result, events


async def test_result_events_and_no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("KPT_TOKEN", "secret")
    monkeypatch.setenv("KPT_NATS_URL", "nats://127.0.0.1:1")
    child = await spawn("ok")
    assert child.capability["device_name"] == "test"
    result, events = await run(child, tmp_path)
    assert events == [{"phase": "pass", "message": "one", "progress": 0.5}]
    assert result["speedup"] == 1.5
    assert (tmp_path / "a.bin").read_bytes() == b"artifact"
    keys = result["environment"]["env_keys"].split(",")
    assert "KPT_TOKEN" not in keys and "KPT_NATS_URL" not in keys


async def test_typed_error_passes_through(tmp_path):
    with pytest.raises(InvalidModel) as e:
        await run(await spawn("invalid"), tmp_path)
    assert e.value.metadata == {"where": "here"}


async def test_untyped_error_becomes_internal(tmp_path):
    with pytest.raises(Internal, match="ZeroDivisionError: boom"):
        await run(await spawn("untyped"), tmp_path)


async def test_crash_is_retryable(tmp_path):
    with pytest.raises(WorkerCrashed) as e:
        await run(await spawn("segfault"), tmp_path)
    assert e.value.retryable


async def test_timeout_kills_the_child(tmp_path):
    child = await spawn("sleep_forever")
    with pytest.raises(Timeout):
        await run(child, tmp_path, timeout=1.0)
    assert await child.proc.wait() != 0


async def test_memory_limit(tmp_path):
    with pytest.raises(OutOfMemory):
        await run(await spawn("hog", memory=1 << 30), tmp_path)


async def test_child_limits_are_set_without_code_between_fork_and_exec(tmp_path):
    # The address-space limit is applied to the running child by the parent (no preexec_fn: the service
    # parent runs gRPC threads, and Python code between fork and exec is unsafe there).
    import resource

    child = await spawn("ok", memory=3 << 30)
    assert resource.prlimit(child.proc.pid, resource.RLIMIT_AS) == (3 << 30, 3 << 30)
    await run(child, tmp_path)


def test_a_child_whose_parent_is_gone_exits_at_once():
    import subprocess

    # --parent-pid names a process that is not our parent: the death signal could never fire, so the child
    # must not go on to import its handler and wait for a job.
    out = subprocess.run([sys.executable, "-m", "kpt.worker.child", "--handler", "handlers:ok",
                          "--capability", "handlers:capability", "--proto-fd", "1", "--parent-pid", "1"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": HERE +
                                                                           os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 1 and "ready" not in out.stdout


async def test_a_child_that_died_before_its_job_is_a_crash(tmp_path):
    # A warm child can die while it waits for a job (the kernel's OOM killer picks it; someone kills it): the
    # job gets the retryable typed error, not a broken-pipe error out of the runtime.
    child = await spawn("ok")
    os.kill(child.proc.pid, signal.SIGTERM)
    await child.proc.wait()
    with pytest.raises(WorkerCrashed) as e:
        await run(child, tmp_path)
    assert e.value.retryable


async def test_a_child_cancelled_before_its_job_is_cancelled(tmp_path):
    # A cancel can land while the parent still fetches the model: the child is killed before it gets the job.
    child = await spawn("ok")
    child.cancel()
    await child.proc.wait()
    with pytest.raises(Cancelled):
        await run(child, tmp_path)


async def test_a_child_killed_mid_line_is_a_crash(tmp_path):
    # Killed (SIGKILL: OOM killer, cancel) halfway through writing a line: the parent reads a partial line at EOF.
    with pytest.raises(OutOfMemory):
        await run(await spawn("killed_mid_line"), tmp_path)
