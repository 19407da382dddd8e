"""The tpu optimizer service process: `python -m kpt_tpu.service` (or `kpt-service-tpu`)."""

import os

from kpt.worker.serve import run


def main() -> None:
    # Like the GPU services: XLA's runtime reserves far more virtual address space than a job uses, and a job
    # process under the default 16 GiB RLIMIT_AS died with SIGABRT while importing the handler (once, in CI).
    # Job processes get no RLIMIT_AS unless KPT_JOB_MEMORY_BYTES is set explicitly.
    os.environ.setdefault("KPT_JOB_MEMORY_BYTES", "0")
    run("tpu", handler="kpt_tpu.jobs:run", capability="kpt_tpu.capability:capability")


if __name__ == "__main__":
    main()
