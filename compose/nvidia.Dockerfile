# syntax=docker/dockerfile:1
# The NVIDIA optimizer service. Build from the repository root:
#   docker build -f compose/nvidia.Dockerfile -t kpt-nvidia .
# Run with the GPUs it should serve (one worker per visible GPU):
#   docker run --gpus all -e KPT_NATS_URL=nats://nats:4222 kpt-nvidia
# The -devel image carries the CUDA headers and g++ that AOTInductor compiles its C++ wrapper with,
# so the runtime stage starts from it too. Health: grpc.health.v1 on KPT_HEALTH_ADDR (0.0.0.0:8081).
ARG BASE=pytorch/pytorch:2.11.0-cuda13.0-cudnn9-devel

# -- build: the wheels of everything but torch (torch comes with the base image at the pinned version) --
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY services/nvidia/requirements.txt services/nvidia/requirements.txt
# "torch==2.11.0" is already satisfied by the base image's 2.11.0+cu130: pip builds no torch wheel.
RUN grep -v -E '^torch==' services/nvidia/requirements.txt > /tmp/req.txt \
    && pip wheel --wheel-dir /wheels -r /tmp/req.txt
COPY shared shared
COPY services/nvidia services/nvidia
# No torch wheel may reach the runtime stage: the base image's build is the one its CUDA libraries match.
RUN pip wheel --wheel-dir /wheels --find-links /wheels ./shared ./services/nvidia \
    && rm -f /wheels/torch-*.whl

# -- runtime ---------------------------------------------------------------------------------------
FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/kpt kpt \
    && install -d -o kpt -g kpt /var/cache/kpt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl
# KPT_JOB_MEMORY_BYTES is deliberately not set: the service defaults it to 0 (no RLIMIT_AS), because
# the CUDA driver maps more address space than any limit a job could be given.
ENV PYTHONUNBUFFERED=1 \
    KPT_CACHE_DIR=/var/cache/kpt \
    KPT_HEALTH_ADDR=0.0.0.0:8081
# Compiler caches (Inductor, Triton, AOTInductor packages) survive restarts when this is a volume.
VOLUME /var/cache/kpt
EXPOSE 8081
USER 10001:10001
WORKDIR /home/kpt
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import asyncio, sys; from kpt import health, settings; port = settings.get('KPT_HEALTH_ADDR').rsplit(':', 1)[1]; sys.exit(asyncio.run(health.check('127.0.0.1:' + port)) != 'SERVING')"]
CMD ["python", "-m", "kpt_nvidia.service"]
