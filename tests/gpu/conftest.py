"""GPU service tests. Tests marked @pytest.mark.gpu need a CUDA device and are skipped without one
(never faked); everything else runs on CPU-only CI, including the contract checks of both services
without their GPU. On the H100: scripts/gpu_run.sh tests (python3 -m pytest -m gpu tests/gpu, with
pytest-xdist's one worker where installed, so a test that crashes its process is reported as failed and
the rest still run)."""

from __future__ import annotations

import pytest
import torch

# GPU test files in the order they run: the cheap checks of the device and of the runtime (compile, load,
# CUDA graphs on one small model) first, the jobs (several compiles each) last, so a cut-short run still
# says whether the basics work.
FILE_ORDER = {"test_gpu_device.py": 0, "test_gpu_runtime.py": 1, "test_gpu_jobs.py": 2}

# Compile-time budget for max-autotune in jobs run inside the test process. The whole GPU phase has to fit
# in one device command (scripts/gpu_run.sh stops at 570 s); tuning every GEMM of every tiny model would
# add about AUTOTUNE_S_PER_PROBLEM (6 s) per distinct GEMM to each O2/O3 compile. Below 6 s no problem is
# tuned and the reports say "max-autotune skipped". Tuning itself is exercised by the O2 job test, whose
# jobs run in fresh processes with the service's own budget (levels.AUTOTUNE_BUDGET_S).
IN_PROCESS_AUTOTUNE_BUDGET_S = 1.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available() and not getattr(torch.version, "hip", None):
        items.sort(key=lambda item: FILE_ORDER.get(item.path.name, -1) if item.get_closest_marker("gpu") else -1)
        return
    why = ("no CUDA device here" if not torch.cuda.is_available()
           else "this is a ROCm build: the gpu tests target the NVIDIA service (ROCm paths are unit-tested)")
    skip = pytest.mark.skip(reason=f"gpu test: {why}")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def in_process_budget(monkeypatch: pytest.MonkeyPatch) -> float:
    """levels.levels() of jobs run in this process tune GEMMs within IN_PROCESS_AUTOTUNE_BUDGET_S (see above)."""
    from kpt.gpu import levels

    monkeypatch.setattr(levels, "AUTOTUNE_BUDGET_S", IN_PROCESS_AUTOTUNE_BUDGET_S)
    return IN_PROCESS_AUTOTUNE_BUDGET_S
