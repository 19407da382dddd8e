"""The XLA runtime of one job process: which PJRT device, the persistent compilation cache, and
the compile counters read from torch_xla's metrics.

PJRT_DEVICE picks the device: TPU in production; without one the service runs on XLA's CPU
device (PJRT_DEVICE=CPU), the same compiler and runtime, and reports device kind "xla:cpu".
Left unset, it is TPU where a TPU device node exists and CPU otherwise (decided once, logged).

The persistent cache (KPT_CACHE_DIR/xla) must be set up before the runtime starts, so every
entry point calls setup() before touching a device. On TPU a later job with the same HLO loads
the executable instead of compiling it; XLA's CPU client writes entries but cannot deserialize
executables (PJRT says UNIMPLEMENTED), so on xla:cpu every process compiles afresh.
"""

from __future__ import annotations

import glob
import logging
import os

import torch

from kpt import settings

log = logging.getLogger(__name__)

RECOMPILE_LIMIT = 64  # dynamo graphs kept per function: one per bucket (buckets.MAX_BUCKETS)
_state: dict[str, str] = {}


def tpu_present() -> bool:
    """A TPU VM exposes its chips as /dev/accel* (v4+) or VFIO groups (v5e+)."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def setup() -> str:
    """Idempotent: PJRT device chosen, persistent cache initialized. Returns the cache folder."""
    if "cache" in _state:
        return _state["cache"]
    if not os.environ.get("PJRT_DEVICE"):
        os.environ["PJRT_DEVICE"] = "TPU" if tpu_present() else "CPU"
        log.info("PJRT_DEVICE unset: using %s", os.environ["PJRT_DEVICE"])
    import torch._dynamo
    import torch_xla.runtime as xr

    cache = os.path.join(settings.get("KPT_CACHE_DIR"), "xla")
    os.makedirs(cache, exist_ok=True)
    xr.initialize_cache(cache, readonly=False)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    _state["cache"] = cache
    return cache


def device() -> torch.device:
    setup()
    import torch_xla

    return torch_xla.device()


def device_type() -> str:
    """PJRT's device type: "TPU", "CPU", ..."""
    setup()
    import torch_xla.runtime as xr

    return xr.device_type()


def device_kind() -> str:
    return "xla:" + device_type().lower()


def sync() -> None:
    """Cut the lazy graph, dispatch it, and wait until the device finished every op."""
    import torch_xla
    import torch_xla.core.xla_model as xm

    torch_xla.sync()
    xm.wait_device_ops()


def compilations() -> int:
    """XLA compilations of this process so far (torch_xla's CompileTime metric: one sample each)."""
    import torch_xla.debug.metrics as met

    data = met.metric_data("CompileTime")
    return int(data[0]) if data else 0


def compile_seconds() -> float:
    import torch_xla.debug.metrics as met

    data = met.metric_data("CompileTime")
    return float(data[1]) / 1e9 if data else 0.0
