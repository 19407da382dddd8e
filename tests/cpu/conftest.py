"""Fixtures for the CPU service tests (helpers live in cpu_helpers.py)."""

from __future__ import annotations

import os

import pytest

from tests.cpu.cpu_helpers import Runner


@pytest.fixture(scope="session", autouse=True)
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


@pytest.fixture(scope="session")
def mlp_pt2(tmp_path_factory: pytest.TempPathFactory) -> str:
    from kpt.optimize import zoo

    path = str(tmp_path_factory.mktemp("uploads") / "mlp.pt2")
    zoo.export("mlp", path)
    return path


@pytest.fixture
def run_job(tmp_path) -> Runner:
    return Runner(str(tmp_path / "work"))
