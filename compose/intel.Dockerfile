# syntax=docker/dockerfile:1
# The Intel optimizer service (IPEX on Xeon CPUs, native XPU where a GPU is present; OpenVINO export).
# Build from the repository root:
#   docker build -f compose/intel.Dockerfile -t kpt-intel .
# For Intel GPUs build on an image with the Level Zero/compute runtime and use the XPU torch index:
#   docker build -f compose/intel.Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/xpu \
#       --build-arg PYTHON_IMAGE=<an image with the Intel GPU runtime and python3.11> -t kpt-intel-xpu .
# and run it with /dev/dri (docker run --device /dev/dri --group-add render ...).
# Health: grpc.health.v1 on KPT_HEALTH_ADDR (0.0.0.0:8081).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY services/intel/requirements.txt services/intel/requirements.txt
# IPEX pins its torch exactly; the torch index has that version without PyPI's CUDA libraries.
RUN pip wheel --wheel-dir /wheels --extra-index-url "${TORCH_INDEX}" -r services/intel/requirements.txt
COPY shared shared
COPY services/intel services/intel
RUN pip wheel --wheel-dir /wheels --find-links /wheels ./shared ./services/intel

FROM ${PYTHON_IMAGE}
# IPEX and Inductor compile C++ at run time: g++ (with libgomp) must be in the image.
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
VOLUME /var/cache/kpt
EXPOSE 8081
USER 10001:10001
WORKDIR /home/kpt
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import asyncio, sys; from kpt import health, settings; port = settings.get('KPT_HEALTH_ADDR').rsplit(':', 1)[1]; sys.exit(asyncio.run(health.check('127.0.0.1:' + port)) != 'SERVING')"]
CMD ["python", "-m", "kpt_intel.service"]
