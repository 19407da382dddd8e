"""Fixtures for the CPU service tests (helpers live in cpu_helpers.py)."""

from __future__ import annotations

import pytest

from tests.cpu.cpu_helpers import Runner


@pytest.fixture(scope="session", autouse=True)
def _cpu_cache(kpt_cache_dir: str) -> str:
    """Every CPU service test compiles into the session's cache (tests/conftest.py's kpt_cache_dir)."""
    return kpt_cache_dir


@pytest.fixture(scope="session")
def mlp_pt2(tmp_path_factory: pytest.TempPathFactory) -> str:
    from kpt.optimize import zoo

    path = str(tmp_path_factory.mktemp("uploads") / "mlp.pt2")
    zoo.export("mlp", path)
    return path


@pytest.fixture
def run_job(tmp_path) -> Runner:
    return Runner(str(tmp_path / "work"))
