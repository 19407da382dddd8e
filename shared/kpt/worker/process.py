"""One child process per job: started ahead of time (warm: torch already imported), limited in
memory, killed with its parent (PR_SET_PDEATHSIG, armed by the child itself), with a wall-clock timeout.

No Python code runs between fork and exec (no preexec_fn): the service parent runs gRPC threads (the health
server), and a child forked from under them died with SIGABRT before its handler was imported (tpu service,
CI). The address-space limit is set on the started child from here (prlimit); the death signal is armed by
kpt.worker.child as its first step, which then checks that this process is still its parent."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
import sys

from kpt.errors import Cancelled, KptError, OutOfMemory, Timeout, WorkerCrashed, from_dict

log = logging.getLogger(__name__)

LINE_LIMIT = 256 << 20  # a result line carries latency samples; generous bound
# Only these variables reach a job: no NATS address, no tokens.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "KPT_LOG_LEVEL", "KPT_CACHE_DIR",
              "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "PJRT_DEVICE",
              "XLA_FLAGS", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CC", "CXX")


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader, transport) -> None:
        self.proc = proc
        self.reader = reader
        self._transport = transport
        self.capability: dict = {}
        self.cancelled = False

    @classmethod
    async def spawn(cls, handler: str, capability: str, *, python: str = sys.executable,
                    env: dict[str, str] | None = None, memory_bytes: int = 0) -> "Child":
        r, w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                python, "-m", "kpt.worker.child", "--handler", handler, "--capability", capability,
                "--proto-fd", str(w), "--parent-pid", str(os.getpid()),
                stdin=asyncio.subprocess.PIPE, pass_fds=(w,), env=child_env(env or {}), start_new_session=True,
            )
        finally:
            os.close(w)
        if memory_bytes > 0:
            try:  # the interpreter is still starting: far below any limit a job is given
                resource.prlimit(proc.pid, resource.RLIMIT_AS, (memory_bytes, memory_bytes))
            except ProcessLookupError:
                pass  # already gone: ready() reports how it ended
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r, "rb", buffering=0))
        child = cls(proc, reader, transport)
        return child

    async def ready(self, timeout: float = 300.0) -> dict:
        """Wait until the handler is imported; returns the capability the child reported."""
        msg = await asyncio.wait_for(self._next(), timeout)
        if msg is None or not msg.get("ready"):
            raise await self._crash("the child exited while importing the service handler")
        self.capability = msg["capability"]
        return self.capability

    async def _next(self) -> dict | None:
        line = await self.reader.readline()
        # A line cut short at EOF: the child was killed while writing it; it ended like one that wrote nothing.
        return json.loads(line) if line.endswith(b"\n") else None

    async def run(self, payload: dict, on_event, timeout: float) -> dict:
        """Give the child its job; relay events; return the result dict or raise the typed error."""
        try:
            self.proc.stdin.write((json.dumps(payload) + "\n").encode())
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):  # it died waiting for the job (killed, cancelled)
            self._transport.close()
            if self.cancelled:
                raise Cancelled("the job was cancelled") from None
            code = await self.proc.wait()
            raise WorkerCrashed(f"the job's process had ended before it got the job (exit code {code})",
                                exit_code=code) from None
        try:
            return await asyncio.wait_for(self._relay(on_event), timeout)
        except asyncio.TimeoutError:
            self.kill()
            raise Timeout(f"the job ran past its time limit of {timeout:.0f}s and was stopped") from None
        finally:
            self._transport.close()

    async def _relay(self, on_event) -> dict:
        while True:
            msg = await self._next()
            if msg is None:
                if self.cancelled:
                    raise Cancelled("the job was cancelled")
                raise await self._crash("the job's process ended without a result")
            if "event" in msg:
                await on_event(msg["event"])
            elif "result" in msg:
                await self.proc.wait()
                return msg["result"]
            elif "error" in msg:
                await self.proc.wait()
                raise from_dict(msg["error"])

    async def _crash(self, what: str) -> KptError:
        code = await self.proc.wait()
        if code == -signal.SIGKILL:
            return OutOfMemory(f"{what}: killed by SIGKILL, most likely out of memory", exit_code=code)
        return WorkerCrashed(f"{what} (exit code {code})", exit_code=code)

    def kill(self) -> None:
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cancel(self) -> None:
        self.cancelled = True
        self.kill()

    async def close(self) -> None:
        self.kill()
        await self.proc.wait()
        self._transport.close()
