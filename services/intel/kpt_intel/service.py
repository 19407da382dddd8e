"""The intel optimizer service process: `python -m kpt_intel.service` (or `kpt-service-intel`)."""

from kpt.worker.serve import run


def main() -> None:
    run("intel", handler="kpt_intel.jobs:run", capability="kpt_intel.capability:capability")


if __name__ == "__main__":
    main()
