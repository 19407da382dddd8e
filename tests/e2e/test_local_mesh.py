"""kpt.local.Mesh.start: a mesh that cannot come up stops what it had started."""

import pytest

from kpt import local, natsd

pytestmark = pytest.mark.timeout(60)


def test_a_mesh_that_cannot_start_leaves_nothing_running(tmp_path, monkeypatch):
    """A service whose environment is missing: the typed error, and the nats-server already started is stopped
    (it was left running, one per failed test, on a machine without the service environments)."""
    started = []
    real = natsd.start
    monkeypatch.setattr(natsd, "start", lambda store: started.append(real(store)) or started[-1])
    monkeypatch.setattr(local, "service_python", lambda target: None)
    with pytest.raises(FileNotFoundError, match="services/cpu/.venv is not installed"):
        local.Mesh.start(str(tmp_path), {"tok": "alice"}, targets=("cpu",))
    assert len(started) == 1 and started[0].proc.poll() is not None
