"""The tpu optimizer service process: `python -m kpt_tpu.service` (or `kpt-service-tpu`)."""

from kpt.worker.serve import run


def main() -> None:
    run("tpu", handler="kpt_tpu.jobs:run", capability="kpt_tpu.capability:capability")


if __name__ == "__main__":
    main()
