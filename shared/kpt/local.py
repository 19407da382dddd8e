"""The local mesh on one machine: which processes `kpt up` starts, with which environment.

One plan, used by `kpt up`, by the test suite, and mirrored by compose/docker-compose.yml.
Every service whose virtual environment is installed (services/<target>/.venv) is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kpt import natsd
from kpt.client import Client
from kpt.contract import CONCRETE_TARGETS, target_name
from kpt.errors import KptError

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
         common: dict[str, str] | None = None, replicas: int = 1, pythons: dict[str, str] | None = None) -> list[Proc]:
    """The processes of a local mesh. `pythons` overrides a service's interpreter (tests use it to run a
    service whose own environment is not installed here from the development environment)."""
    env = {"KPT_NATS_URL": nats_url, "KPT_GATEWAY_ADDR": gateway_addr, **(common or {})}
    procs = [Proc("gateway", [sys.executable, "-m", "kpt_gateway.server"], dict(env))]
    for t in targets if targets is not None else installed_targets():
        py = (pythons or {}).get(t) or service_python(t)
        if py is None:
            raise FileNotFoundError(f"services/{t}/.venv is not installed (make services/{t}/.venv)")
        for i in range(replicas):
            name = f"svc-{t}" if replicas == 1 else f"svc-{t}-{i}"
            procs.append(Proc(name, [py, "-m", f"kpt_{t}.service"], {**env, "KPT_SERVICE_ID": f"{t}-{i}"}))
    return procs


def started_at(pid: int) -> int | None:
    """When the process pid started (clock ticks since boot, /proc/<pid>/stat's 22nd field); None if it is gone or
    the system has no /proc. With the pid it names one process: a pid reused later has another start."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def launch(proc: Proc, log_dir: str) -> subprocess.Popen:
    os.makedirs(log_dir, exist_ok=True)
    log = open(os.path.join(log_dir, f"{proc.name}.log"), "ab")
    base = {k: v for k, v in os.environ.items() if not k.startswith("KPT_")}
    return subprocess.Popen(proc.argv, env={**base, **proc.env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


@dataclass
class Mesh:
    """A running local mesh owned by this process (tests, benchmarks)."""

    nats: natsd.NatsServer
    gateway_addr: str
    env: dict
    log_dir: str
    tokens: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    http_addr: str = ""  # the gateway's HTTP API and web page

    @property
    def http_url(self) -> str:
        return f"http://{self.http_addr}"

    @classmethod
    def start(cls, tmp: str, tokens: dict[str, str], targets: tuple[str, ...] = ("cpu",), replicas: int = 1,
              pythons: dict[str, str] | None = None, **env: str) -> "Mesh":
        """nats-server, gateway and services as child processes, on free loopback ports."""
        server = natsd.start(os.path.join(tmp, "nats"))
        addr = f"127.0.0.1:{natsd.free_port()}"
        http = env.pop("KPT_HTTP_ADDR", None) or f"127.0.0.1:{natsd.free_port()}"  # never the fixed default port
        common = {
            "KPT_HTTP_ADDR": http,
            "KPT_TOKENS": ",".join(f"{t}:{n}" for t, n in tokens.items()),
            "KPT_HEARTBEAT_S": "0.5",
            "KPT_CACHE_DIR": os.path.join(tmp, "cache"),
            "KPT_LOG_LEVEL": "INFO",
            **env,
        }
        mesh = cls(server, addr, common, os.path.join(tmp, "logs"), tokens, http_addr=http)
        try:
            for p in plan(server.url, addr, list(targets), common=common, replicas=replicas, pythons=pythons):
                mesh.procs[p.name] = launch(p, mesh.log_dir)
            mesh.wait_targets({t: replicas for t in targets})
        except BaseException:  # a service not installed, or one that never came up: nothing left running
            mesh.stop()
            raise
        return mesh

    def add_replica(self, name: str, target: str = "cpu") -> None:
        (proc,) = [p for p in plan(self.nats.url, self.gateway_addr, [target], common=self.env) if p.name != "gateway"]
        proc.name, proc.env["KPT_SERVICE_ID"] = name, name
        self.procs[name] = launch(proc, self.log_dir)

    def client(self, tenant: str | None = None) -> Client:
        by_tenant = {v: k for k, v in self.tokens.items()}
        return Client(self.gateway_addr, by_tenant[tenant] if tenant else next(iter(self.tokens)))

    def wait_targets(self, want: dict[str, int], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}; logs in {self.log_dir}\n{self.logs(name)}")
            try:
                with self.client() as cl:
                    infos = cl.targets()
                have = {}
                for i in infos:
                    have[target_name(i.target)] = have.get(target_name(i.target), 0) + 1
                if all(have.get(t, 0) >= n for t, n in want.items()):
                    return
                last = have
            except KptError as e:  # the gateway may still be starting

                last = e
            time.sleep(0.3)
        raise TimeoutError(f"targets {want} not online after {timeout}s (last: {last}); logs in {self.log_dir}")

    def logs(self, name: str) -> str:
        path = os.path.join(self.log_dir, f"{name}.log")
        return open(path, errors="replace").read()[-4000:] if os.path.exists(path) else ""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.kill(self.procs[name].pid, sig)
        self.procs[name].wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.nats.stop()
