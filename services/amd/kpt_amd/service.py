"""The amd optimizer service process: `python -m kpt_amd.service` (or `kpt-service-amd`).

One worker per visible GPU (ROCR/HIP/CUDA_VISIBLE_DEVICES, else every GPU of the KFD topology),
each with its own job processes pinned to its GPU. This process never imports torch.
"""

import os

from kpt.gpu.slots import for_amd
from kpt.worker.serve import run
from kpt_amd.vendor import SLOT_ENV


def main() -> None:
    # ROCm, like CUDA, maps far more virtual address space than an RLIMIT_AS a job could be given.
    os.environ.setdefault("KPT_JOB_MEMORY_BYTES", "0")
    slots = [{**SLOT_ENV, **slot} for slot in for_amd()]
    run("amd", handler="kpt_amd.jobs:run", capability="kpt_amd.capability:capability", slots=slots)


if __name__ == "__main__":
    main()
