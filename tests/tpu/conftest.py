"""The tpu service's tests run its code in its own environment (services/tpu/.venv: torch 2.9 +
torch_xla 2.9) as subprocesses on XLA's CPU device; the development environment has no torch_xla."""

import json
import os
import subprocess

import pytest

from kpt import local

PY = local.service_python("tpu")


@pytest.fixture(scope="session")
def tpu_python():
    if PY is None:
        pytest.skip("services/tpu/.venv is missing (`make install` builds it)")
    return PY


@pytest.fixture(scope="session")
def run_tpu(tpu_python, tmp_path_factory):
    """run_tpu(code, **env) -> the JSON object the code printed last (json.dumps on its own line)."""
    cache = str(tmp_path_factory.mktemp("xla-cache"))

    def run(code: str, timeout: int = 300, **env: str) -> dict:
        e = {**os.environ, "PJRT_DEVICE": "CPU", "KPT_CACHE_DIR": cache, "KPT_LOG_LEVEL": "WARNING", **env}
        p = subprocess.run([tpu_python, "-c", code], capture_output=True, text=True, timeout=timeout, env=e)
        if p.returncode != 0:
            raise AssertionError(f"tpu subprocess failed ({p.returncode}):\n{p.stderr[-4000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    return run
