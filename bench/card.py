"""Which card and host a bench/ run measured on: kpt.gpu.env's environment of the visible CUDA device (uuid, VBIOS,
clocks, temperature, driver, the host's CPU and load), written beside each run's numbers so runs on different
machines are told apart (two H100 runs of one decode step differed by 9% on cards of different VBIOS, 2026-12-06)."""

from __future__ import annotations

import argparse
import logging


def environment() -> dict[str, str]:
    """The environment of the device `cuda` (kpt.gpu.device.probe), or {"unavailable": why}."""
    from kpt.gpu import device, env

    try:
        from kpt_nvidia.vendor import VENDOR  # services/nvidia on PYTHONPATH, as scripts/gpu_run.sh sets it
    except ImportError as e:
        return {"unavailable": f"the nvidia service's package is not importable ({e})"}

    info = device.probe("cuda")
    if isinstance(info, str):
        return {"unavailable": info}
    return env.environment(VENDOR, info)


def gpu_args(ap: argparse.ArgumentParser, argv: list[str] | None, name: str) -> argparse.Namespace | None:
    """A GPU bench script's start: its arguments parsed and INFO logging set up; None, with the reason logged under
    bench.<name>, where no CUDA device is visible (the script then exits 2)."""
    import torch

    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not torch.cuda.is_available():
        logging.getLogger(f"bench.{name}").error("%s needs a CUDA device; none is visible", name)
        return None
    return args
