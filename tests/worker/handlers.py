"""Job handlers for testing the child-process runtime itself (timeouts, crashes, memory, errors).

They exercise the real process machinery; the optimizer's own handlers are tested elsewhere.
"""

import os
import signal
import sys
import time

from kpt.errors import InvalidModel


def capability() -> dict:
    return {"target": "TARGET_CPU", "device_name": "test", "device_kind": "cpu", "available": True,
            "toolchain_fingerprint": "test"}


def ok(job, model_path, workdir, emit):
    emit("pass", "one", 0.5)
    with open(os.path.join(workdir, "a.bin"), "wb") as f:
        f.write(b"artifact")
    return {"kind": "JOB_KIND_OPTIMIZE", "artifacts": [{"name": "a.bin", "format": "ARTIFACT_FORMAT_ONNX"}],
            "speedup": 1.5, "environment": {"env_keys": ",".join(sorted(os.environ))}}


def sleep_forever(job, model_path, workdir, emit):
    emit("compile", "sleeping", 0.1)
    time.sleep(3600)


def invalid(job, model_path, workdir, emit):
    raise InvalidModel("not a model", where="here")


def untyped(job, model_path, workdir, emit):
    raise ZeroDivisionError("boom")


def segfault(job, model_path, workdir, emit):
    os.kill(os.getpid(), signal.SIGSEGV)


def hog(job, model_path, workdir, emit):
    blocks = []
    while True:
        blocks.append(bytearray(256 << 20))


def killed_mid_line(job, model_path, workdir, emit):
    fd = int(sys.argv[sys.argv.index("--proto-fd") + 1])
    os.write(fd, b'{"event": {"phase": "comp')
    os.kill(os.getpid(), signal.SIGKILL)


def missing_artifact(job, model_path, workdir, emit):
    return {"kind": "JOB_KIND_OPTIMIZE", "artifacts": [{"name": "never-written.bin", "format": "ARTIFACT_FORMAT_ONNX"}]}


def by_model_name(job, model_path, workdir, emit):
    """Runs the handler of this module that the job's model names (one worker, several behaviours)."""
    return globals()[job["spec"]["model"]["name"]](job, model_path, workdir, emit)


def sleep_then_ok(job, model_path, workdir, emit):
    time.sleep(3)
    return ok(job, model_path, workdir, emit)


def stuck_on_a_then_ok(job, model_path, workdir, emit):
    """Never ends on the replica whose children have KPT_TEST_STUCK set; elsewhere succeeds."""
    if os.environ.get("KPT_TEST_STUCK"):
        emit("compile", "stuck", 0.1)
        time.sleep(3600)
    return ok(job, model_path, workdir, emit)
