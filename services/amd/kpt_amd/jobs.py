"""One job on this worker's AMD GPU (kpt.gpu.jobs with this service's Vendor)."""

from typing import Callable

from kpt.gpu import jobs
from kpt_amd.vendor import VENDOR


def run(job: dict, model_path: str | None, workdir: str, emit: Callable[[str, str, float], None]) -> dict:
    return jobs.run(VENDOR, job, model_path, workdir, emit)
