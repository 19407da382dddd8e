"""The cpu optimizer service process: `python -m kpt_cpu.service` (or `kpt-service-cpu`)."""

from kpt.worker.serve import run


def main() -> None:
    run("cpu", handler="kpt_cpu.jobs:run", capability="kpt_cpu.capability:capability")


if __name__ == "__main__":
    main()
