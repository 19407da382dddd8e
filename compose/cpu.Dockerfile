# syntax=docker/dockerfile:1
# The CPU optimizer service. Build from the repository root:
#   docker build -f compose/cpu.Dockerfile -t kpt-cpu .
# Health: grpc.health.v1 on KPT_HEALTH_ADDR (0.0.0.0:8081).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# -- build: every wheel the service needs, resolved once ------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY services/cpu/requirements.txt services/cpu/requirements.txt
# PyPI's Linux torch wheel is the CUDA build (gigabytes of unused libraries); the CPU index has the
# same version as "+cpu", which the requirement's "==" accepts and pip prefers.
RUN pip wheel --wheel-dir /wheels --extra-index-url https://download.pytorch.org/whl/cpu \
        -r services/cpu/requirements.txt
COPY shared shared
COPY services/cpu services/cpu
RUN pip wheel --wheel-dir /wheels --find-links /wheels ./shared ./services/cpu

# -- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# AOTInductor and Inductor compile C++ at run time: g++ (with libgomp for OpenMP) must be in the image.
# Not version-pinned (DL3008): the base image tag is pinned, and Debian point releases delete the
# superseded package versions, so a pin would break the build at the next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/kpt kpt \
    && install -d -o kpt -g kpt /var/cache/kpt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl
ENV PYTHONUNBUFFERED=1 \
    KPT_CACHE_DIR=/var/cache/kpt \
    KPT_HEALTH_ADDR=0.0.0.0:8081
# Compiler caches (Inductor, AOTInductor packages) survive restarts when this is a volume.
VOLUME /var/cache/kpt
EXPOSE 8081
USER 10001:10001
WORKDIR /home/kpt
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import asyncio, sys; from kpt import health, settings; port = settings.get('KPT_HEALTH_ADDR').rsplit(':', 1)[1]; sys.exit(asyncio.run(health.check('127.0.0.1:' + port)) != 'SERVING')"]
CMD ["python", "-m", "kpt_cpu.service"]
