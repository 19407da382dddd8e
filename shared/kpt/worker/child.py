"""A job's child process: imports the service's handler (warm, before any job), reports the
service capability, then runs exactly one job read from stdin and exits.

Protocol: one JSON object per line on the file descriptor given by --proto-fd (stdout and
stderr stay free for library noise and logs):
  {"ready": true, "capability": {...}}      once the handler is imported
  {"event": {"phase", "message", "progress"}}  any number
  {"result": {...}} or {"error": {"code", "message", "metadata"}}  exactly one, last
The child holds no credentials: it never sees NATS or tokens; the parent moves all bytes.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import logging
import os
import signal
import sys

from kpt.errors import Internal, KptError, OutOfMemory

log = logging.getLogger("kpt.child")


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the service process dies (armed here, not between fork and exec: see kpt.worker.process).
    A parent that died before this ran leaves us re-parented: exit at once."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def _resolve(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--handler", required=True, help="module:function running one job")
    ap.add_argument("--capability", required=True, help="module:function returning TargetInfo as a dict")
    ap.add_argument("--proto-fd", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, default=0, help="the service process (0: no death signal)")
    args = ap.parse_args(argv)
    if args.parent_pid:
        die_with_parent(args.parent_pid)
    logging.basicConfig(level=os.environ.get("KPT_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s child %(name)s %(levelname)s %(message)s")
    out = os.fdopen(args.proto_fd, "w", buffering=1)

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    run = _resolve(args.handler)
    send({"ready": True, "capability": _resolve(args.capability)()})
    line = sys.stdin.readline()
    if not line:
        return 0  # the parent shut down before giving us a job
    payload = json.loads(line)

    def emit(phase: str, message: str = "", progress: float = 0.0) -> None:
        send({"event": {"phase": phase, "message": message, "progress": float(progress)}})

    try:
        result = run(payload["job"], payload.get("model_path"), payload["workdir"], emit)
        send({"result": result})
    except KptError as e:
        log.info("job failed: %s", e)
        send({"error": e.to_dict()})
    except MemoryError:
        send({"error": OutOfMemory("the job ran out of memory (limit KPT_JOB_MEMORY_BYTES)").to_dict()})
    except Exception as e:  # noqa: BLE001 - the boundary: anything untyped becomes Internal, logged in full
        log.exception("job raised an untyped error")
        send({"error": Internal(f"{type(e).__name__}: {e}").to_dict()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
