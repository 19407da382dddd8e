"""One job on this worker's NVIDIA GPU (kpt.gpu.jobs with this service's Vendor)."""

from typing import Callable

from kpt.gpu import jobs
from kpt_nvidia.vendor import VENDOR


def run(job: dict, model_path: str | None, workdir: str, emit: Callable[[str, str, float], None]) -> dict:
    return jobs.run(VENDOR, job, model_path, workdir, emit)
