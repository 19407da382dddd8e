"""The whole mesh as real processes (nats-server, gateway, cpu service replicas) for e2e tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from kpt import local, natsd
from kpt.client import Client
from kpt.contract import target_name

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}


@dataclass
class Mesh:
    nats: natsd.NatsServer
    gateway_addr: str
    env: dict
    log_dir: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def start(cls, tmp: str, targets: tuple[str, ...] = ("cpu",), replicas: int = 1, **env: str) -> "Mesh":
        server = natsd.start(os.path.join(tmp, "nats"))
        addr = f"127.0.0.1:{natsd.free_port()}"
        common = {
            "KPT_TOKENS": ",".join(f"{t}:{n}" for t, n in TOKENS.items()),
            "KPT_HEARTBEAT_S": "0.5",
            "KPT_CACHE_DIR": os.path.join(tmp, "cache"),
            "KPT_LOG_LEVEL": "INFO",
            **env,
        }
        mesh = cls(server, addr, common, os.path.join(tmp, "logs"))
        for p in local.plan(server.url, addr, list(targets), common=common, replicas=replicas):
            mesh.procs[p.name] = local.launch(p, mesh.log_dir)
        mesh.wait_targets({t: replicas for t in targets})
        return mesh

    def add_replica(self, name: str, target: str = "cpu") -> None:
        (proc,) = [p for p in local.plan(self.nats.url, self.gateway_addr, [target], common=self.env) if p.name != "gateway"]
        proc.name, proc.env["KPT_SERVICE_ID"] = name, name
        self.procs[name] = local.launch(proc, self.log_dir)

    def client(self, tenant: str = "alice") -> Client:
        token = {v: k for k, v in TOKENS.items()}[tenant]
        return Client(self.gateway_addr, token)

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
            except Exception as e:  # noqa: BLE001 - the gateway may still be starting
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
