"""What this service's XLA device offers (kpt.v1.TargetInfo as a protobuf JSON dict).

Reported by the job process before any job, after the runtime is set up exactly as a job gets it.
On a TPU: generation, topology and core count. Without one: XLA's CPU device, device_kind
"xla:cpu" (never "xla:tpu"). A device that cannot start: available=false with the reason.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os

from kpt.optimize import env
from kpt_tpu import runtime

log = logging.getLogger(__name__)

FORMATS = ("ARTIFACT_FORMAT_STABLEHLO", "ARTIFACT_FORMAT_EXPORTED_PROGRAM")
PRECISIONS = ("PRECISION_FP32", "PRECISION_BF16", "PRECISION_INT8")


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _toolchain() -> dict[str, str]:
    tc = env.toolchain()
    for pkg in ("torch_xla", "libtpu"):
        try:
            tc[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    tc["pjrt_device"] = os.environ.get("PJRT_DEVICE", "")
    return tc


def _tpu_details(dev) -> dict[str, str]:
    import torch_xla.runtime as xr
    from torch_xla._internal import tpu

    out = {"tpu_version": f"v{tpu.version()}"}
    for key, fn in (("accelerator_type", lambda: tpu.get_tpu_env().get("ACCELERATOR_TYPE", "")),
                    ("topology", lambda: tpu.get_tpu_env().get("TOPOLOGY", "")),
                    ("chips_per_host_bounds", lambda: tpu.get_tpu_env().get("CHIPS_PER_HOST_BOUNDS", ""))):
        try:
            out[key] = str(fn())
        except (RuntimeError, KeyError, OSError, ValueError) as e:  # metadata server absent off GCE
            log.info("tpu %s unknown: %s", key, e)
    out["cores_global"] = str(xr.global_runtime_device_count())
    return out


def capability() -> dict:
    toolchain = _toolchain()
    base = {"target": "TARGET_TPU", "formats": list(FORMATS)}
    try:
        runtime.setup()
        import torch_xla.core.xla_model as xm
        import torch_xla.runtime as xr

        dev = runtime.device()
        kind = runtime.device_kind()
        count = xr.addressable_device_count()
    except (RuntimeError, ImportError, OSError) as e:
        reason = f"the XLA runtime did not start (PJRT_DEVICE={os.environ.get('PJRT_DEVICE', '')}): " \
                 f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        log.warning("%s", reason)
        return {**base, "device_name": "", "device_kind": "xla", "device_count": 0, "precisions": [],
                "toolchain": toolchain, "toolchain_fingerprint": env.fingerprint({**toolchain, "device": "none"}),
                "available": False, "unavailable_reason": reason}
    toolchain["xla_device_kind"] = kind
    toolchain["xla_persistent_cache"] = runtime.setup()
    memory = 0
    if kind == "xla:tpu":
        details = _tpu_details(dev)
        toolchain.update(details)
        name = f"TPU {details['tpu_version']} {details.get('accelerator_type', '')}".strip()
        try:
            memory = int(xm.get_memory_info(dev)["bytes_limit"])
        except (RuntimeError, KeyError, TypeError) as e:
            log.info("TPU memory unknown: %s", e)
    else:
        name = f"XLA CPU device on {env.cpu_info().model}"
        toolchain["xla_persistent_cache_note"] = "xla:cpu writes cache entries but cannot load executables"
    memory = memory or _host_memory()
    return {**base, "device_name": name, "device_kind": kind, "device_count": count, "memory_bytes": str(memory),
            "precisions": list(PRECISIONS), "toolchain": toolchain,
            "toolchain_fingerprint": env.fingerprint({**{k: v for k, v in toolchain.items()
                                                          if k != "xla_persistent_cache"}, "device": name}),
            "available": True}
