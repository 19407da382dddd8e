"""Every environment variable a kpt process reads, declared once (type, default, one comment).

Read through `get(name)`; a malformed value fails fast with a hint. Nothing else in the
codebase reads os.environ for KPT_* settings.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Callable

from kpt.errors import InvalidSetting


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], object]
    default: str
    help: str


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected one of 1/0/true/false/yes/no/on/off")


def _number(kind: type, minimum: float, inclusive: bool = False) -> Callable[[str], object]:
    """kind (int or float), finite, above minimum (or at least minimum when inclusive)."""

    def parse(v: str):
        n = kind(v)
        if not math.isfinite(n) or n < minimum or (n == minimum and not inclusive):
            raise ValueError(f"expected a finite number {'>=' if inclusive else '>'} {minimum}")
        return n

    return parse


def _log_level(v: str) -> str:
    # as given, not normalized: job child processes read the raw variable (kpt/worker/child.py)
    if not isinstance(logging.getLevelName(v), int):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL (upper case)")
    return v


_POS_INT, _POS_FLOAT = _number(int, 0), _number(float, 0)
_NONNEG_INT, _NONNEG_FLOAT = _number(int, 0, inclusive=True), _number(float, 0, inclusive=True)

SETTINGS = {
    s.name: s
    for s in [
        Setting("KPT_NATS_URL", str, "nats://127.0.0.1:4222", "NATS server(s) to connect to"),
        Setting("KPT_GATEWAY_ADDR", str, "127.0.0.1:50051", "gateway gRPC address (clients dial it, the gateway binds it)"),
        Setting("KPT_HTTP_ADDR", str, "127.0.0.1:8080", "gateway HTTP API and web page address (empty: no HTTP)"),
        Setting("KPT_TOKEN", str, "", "bearer token a client sends"),
        Setting("KPT_TOKENS_FILE", str, "", "gateway: file of 'token tenant' lines"),
        Setting("KPT_TOKENS", str, "", "gateway: 'token:tenant,token:tenant' (added to the file's)"),
        Setting("KPT_OPEN_ACCESS", _bool, "false", "gateway: accept calls without a token as tenant 'local' (printed loudly)"),
        Setting("KPT_MAX_UPLOAD_BYTES", _POS_INT, str(8 << 30), "gateway: largest model upload accepted"),
        Setting("KPT_REQUIRE_LIVE_TARGET", _bool, "true", "gateway: refuse jobs for targets with no live service (false: queue them, e.g. for scale-from-zero)"),
        Setting("KPT_STREAM_REPLICAS", _POS_INT, "1", "JetStream replicas for streams and buckets (3 in a cluster)"),
        Setting("KPT_ACK_WAIT_S", _POS_FLOAT, "30", "seconds without in_progress before a job is redelivered"),
        Setting("KPT_MAX_ATTEMPTS", _POS_INT, "3", "deliveries of one job before it ends FAILED"),
        Setting("KPT_JOB_TIMEOUT_S", _POS_FLOAT, "3600", "service: default wall-clock limit of one job"),
        Setting("KPT_JOB_MEMORY_BYTES", _NONNEG_INT, str(16 << 30), "service: address-space limit of a job's child process (0: none; the nvidia, amd and tpu services default to 0)"),
        Setting("KPT_SERVICE_ID", str, "", "service: replica id (default: target-host-pid)"),
        Setting("KPT_HEALTH_ADDR", str, "127.0.0.1:0", "service: grpc.health.v1 address (port 0 picks one)"),
        Setting("KPT_DRAIN_S", _NONNEG_FLOAT, "90", "service: on SIGTERM, seconds the running job may go on before it is handed to another replica (keep below the grace period: 120 s in compose and Kubernetes)"),
        Setting("KPT_RESULT_CACHE_TTL_S", _NONNEG_FLOAT, str(30 * 86400), "seconds a job's result answers the same job again (0: for ever); the result cache bucket's TTL when it is created"),
        Setting("KPT_GRPC_KEEPALIVE_S", _POS_FLOAT, "20", "gateway and clients: seconds of silence on a connection before a keepalive ping; a ping unanswered as long fails its calls UNAVAILABLE"),
        Setting("KPT_HEARTBEAT_S", _POS_FLOAT, "2", "service: seconds between target heartbeats"),
        Setting("KPT_TARGET_TTL_S", _POS_FLOAT, "10", "seconds a target stays listed after its last heartbeat"),
        Setting("KPT_CACHE_DIR", str, os.path.expanduser("~/.cache/kpt"), "service: compiler caches kept between jobs"),
        Setting("KPT_COMPILER_CACHE_MAX_BYTES", _NONNEG_INT, str(16 << 30), "service: cap on KPT_CACHE_DIR's compiler caches (Inductor, Triton, XLA, ...; not the GPU package cache, capped at 64 GiB); least recently used files beyond it are dropped after each job (0: no cap)"),
        Setting("KPT_GPU_PERSISTENT_TMA", _bool, "false", "nvidia service: max-autotune also times Inductor's persistent TMA matmul templates (sm90+); off until measured to win"),
        Setting("KPT_GPU_UNFUSED_BIAS", _bool, "false", "nvidia/amd services: Inductor may split a bf16/fp16 linear's bias into its elementwise users, so max-autotune can pick a plain cuBLAS GEMM; off until measured to win"),
        Setting("KPT_HOME", str, ".kpt", "kpt up: folder for JetStream data, logs and pids"),
        Setting("KPT_LOG_LEVEL", _log_level, "INFO", "logging level of every process: DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ]
}


def exit_on_invalid(main: Callable[[], object]) -> Callable[[], object]:
    """A process's entry point: an invalid setting ends it with the message (exit status 1), not a traceback."""

    def run() -> object:
        try:
            return main()
        except InvalidSetting as e:
            raise SystemExit(e.message) from None

    return run


def get(name: str):
    s = SETTINGS[name]
    raw = os.environ.get(name, s.default)
    try:
        return s.parse(raw)
    except ValueError as e:
        raise InvalidSetting(f"{name}={raw!r} is invalid ({e}); {s.help}", setting=name) from None
