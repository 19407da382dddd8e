"""TargetInfo of an NVIDIA worker (kpt.gpu.capability with this service's Vendor)."""

from kpt.gpu.capability import report
from kpt_nvidia.vendor import VENDOR


def capability() -> dict:
    return report(VENDOR)
