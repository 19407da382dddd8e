"""Which services give their job processes an address-space limit (RLIMIT_AS via KPT_JOB_MEMORY_BYTES)."""

import importlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target,limited", [("nvidia", False), ("amd", False), ("tpu", False), ("intel", True),
                                            ("cpu", True)])
def test_device_runtimes_get_no_address_space_limit(target, limited, monkeypatch):
    # CUDA, ROCm and XLA reserve far more virtual memory than a job uses: a 16 GiB RLIMIT_AS kills them
    # (cuInit fails; a tpu job process died with SIGABRT importing its handler). CPU-side services keep it.
    pytest.importorskip("nats", reason="the service parent needs nats-py (kpt.worker.serve)")
    monkeypatch.syspath_prepend(str(REPO / "services" / target))
    monkeypatch.delenv("KPT_JOB_MEMORY_BYTES", raising=False)
    for name in [m for m in sys.modules if m.startswith(f"kpt_{target}")]:
        monkeypatch.delitem(sys.modules, name)
    service = importlib.import_module(f"kpt_{target}.service")
    started = []
    monkeypatch.setattr(service, "run", lambda *a, **k: started.append(os.environ.get("KPT_JOB_MEMORY_BYTES")))
    if target in ("nvidia", "amd"):
        monkeypatch.setattr(service, f"for_{target}", lambda: [{}])  # no nvidia-smi or KFD topology needed
    service.main()
    assert started == [None if limited else "0"]
    monkeypatch.setenv("KPT_JOB_MEMORY_BYTES", str(8 << 30))  # an explicit setting always wins
    started.clear()
    service.main()
    assert started == [str(8 << 30)]
