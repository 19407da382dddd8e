"""The nvidia optimizer service process: `python -m kpt_nvidia.service` (or `kpt-service-nvidia`).

One worker per visible GPU (CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists), each with its own
job processes pinned to its GPU. This process never imports torch.
"""

import os

from kpt.gpu.slots import for_nvidia
from kpt.worker.serve import run


def main() -> None:
    # The CUDA driver maps far more virtual address space than any RLIMIT_AS a job could be given
    # (cuInit fails under a 16 GiB limit), so GPU job processes run without one unless set explicitly.
    os.environ.setdefault("KPT_JOB_MEMORY_BYTES", "0")
    run("nvidia", handler="kpt_nvidia.jobs:run", capability="kpt_nvidia.capability:capability", slots=for_nvidia())


if __name__ == "__main__":
    main()
