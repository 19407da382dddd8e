"""TargetInfo (protobuf JSON dict) of a GPU service's worker: its device, or why it has none.

Reported by the job process before any job (kpt.worker.child), so it describes exactly what a
job of this worker would get. Without a usable GPU: available=false and unavailable_reason; the
worker then fails every job with UNAVAILABLE (kpt.worker.runtime) and jobs.run refuses as well.
"""

from __future__ import annotations

import logging

from kpt.gpu import device
from kpt.gpu import env as gpu_env
from kpt.gpu.vendor import Vendor
from kpt.optimize import env

log = logging.getLogger(__name__)

FORMATS = ("ARTIFACT_FORMAT_AOTI_PACKAGE", "ARTIFACT_FORMAT_EXPORTED_PROGRAM", "ARTIFACT_FORMAT_ONNX",
           "ARTIFACT_FORMAT_TORCHSCRIPT")


def report(vendor: Vendor) -> dict:
    info = device.probe(vendor.kind)
    toolchain = gpu_env.toolchain(None if isinstance(info, str) else info)
    base = {"target": vendor.target, "device_kind": vendor.kind, "formats": list(FORMATS)}
    if isinstance(info, str):
        log.warning("%s: no usable GPU: %s", vendor.name, info)
        return {**base, "device_name": "", "device_count": 0, "precisions": [], "toolchain": toolchain,
                "toolchain_fingerprint": env.fingerprint({**toolchain, "device": "none"}),
                "available": False, "unavailable_reason": info}
    table = vendor.table(info)
    extra = vendor.versions(info)
    toolchain.update({"arch": info.arch, "compute_capability": info.capability, "fp8_format": table.fp8_format,
                      **{k: extra[k] for k in ("driver", "vbios", "clocks_max_sm_mhz", "clocks_max_mem_mhz",
                                               "power_limit_w") if extra.get(k)}})
    if table.why:
        toolchain["precision_notes"] = "; ".join(table.why)
    # What a compiled artifact depends on: the toolchain, the device model and its architecture.
    fingerprint = env.fingerprint({**{k: v for k, v in toolchain.items() if k != "precision_notes"},
                                   "device": info.name})
    return {**base, "device_name": info.name, "device_count": info.count, "memory_bytes": str(info.memory_bytes),
            "precisions": table.contract(), "toolchain": toolchain, "toolchain_fingerprint": fingerprint,
            "available": True}
