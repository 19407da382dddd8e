"""GPU service tests. Tests marked @pytest.mark.gpu need a CUDA device and are skipped without one
(never faked); everything else runs on CPU-only CI, including the contract checks of both services
without their GPU. On the H100: scripts/gpu_run.sh tests (python3 -m pytest -m gpu tests/gpu)."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available() and not getattr(torch.version, "hip", None):
        return
    why = ("no CUDA device here" if not torch.cuda.is_available()
           else "this is a ROCm build: the gpu tests target the NVIDIA service (ROCm paths are unit-tested)")
    skip = pytest.mark.skip(reason=f"gpu test: {why}")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kpt_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One compiler cache for the session (cold at its start), like a service's KPT_CACHE_DIR."""
    path = str(tmp_path_factory.mktemp("kpt-cache"))
    old = os.environ.get("KPT_CACHE_DIR")
    os.environ["KPT_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("KPT_CACHE_DIR", None)
    else:
        os.environ["KPT_CACHE_DIR"] = old
