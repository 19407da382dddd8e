"""The local mesh on one machine: which processes `kpt up` starts, with which environment.

One plan, used by `kpt up`, by the test suite, and mirrored by compose/docker-compose.yml.
Every service whose virtual environment is installed (services/<target>/.venv) is started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kpt.contract import CONCRETE_TARGETS

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # KPT_* settings of this process


def service_python(target: str) -> str | None:
    exe = REPO / "services" / target / ".venv" / "bin" / "python"
    return str(exe) if exe.exists() else None


def installed_targets() -> list[str]:
    return [t for t in CONCRETE_TARGETS if service_python(t)]


def plan(nats_url: str, gateway_addr: str, targets: list[str] | None = None,
         common: dict[str, str] | None = None, replicas: int = 1) -> list[Proc]:
    env = {"KPT_NATS_URL": nats_url, "KPT_GATEWAY_ADDR": gateway_addr, **(common or {})}
    procs = [Proc("gateway", [sys.executable, "-m", "kpt_gateway.server"], dict(env))]
    for t in targets if targets is not None else installed_targets():
        py = service_python(t)
        if py is None:
            raise FileNotFoundError(f"services/{t}/.venv is not installed (make services/{t}/.venv)")
        for i in range(replicas):
            name = f"svc-{t}" if replicas == 1 else f"svc-{t}-{i}"
            procs.append(Proc(name, [py, "-m", f"kpt_{t}.service"], {**env, "KPT_SERVICE_ID": f"{t}-{i}"}))
    return procs


def launch(proc: Proc, log_dir: str) -> subprocess.Popen:
    os.makedirs(log_dir, exist_ok=True)
    log = open(os.path.join(log_dir, f"{proc.name}.log"), "ab")
    base = {k: v for k, v in os.environ.items() if not k.startswith("KPT_")}
    return subprocess.Popen(proc.argv, env={**base, **proc.env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
