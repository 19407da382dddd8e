"""Fixtures for the generic optimization pipeline tests (small models only: mlp, cnn)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mlp_pt2(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The zoo mlp exported and saved as a user would upload it (dynamic batch 1..64)."""
    from kpt.optimize import zoo

    path = str(tmp_path_factory.mktemp("uploads") / "mlp.pt2")
    zoo.export("mlp", path)
    return path
