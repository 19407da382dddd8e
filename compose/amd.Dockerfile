# syntax=docker/dockerfile:1
# The AMD (ROCm) optimizer service. Build from the repository root:
#   docker build -f compose/amd.Dockerfile -t kpt-amd .
# Run with the GPUs it should serve (one worker per visible GPU; the groups own /dev/kfd and /dev/dri):
#   docker run --device /dev/kfd --device /dev/dri --group-add video --group-add render \
#       -e KPT_NATS_URL=nats://nats:4222 kpt-amd
# The ROCm PyTorch image carries torch for ROCm, its Triton, hipcc/clang and the ROCm headers AOTInductor
# needs, so the runtime stage starts from it too. Health: grpc.health.v1 on KPT_HEALTH_ADDR (0.0.0.0:8081).
ARG BASE=rocm/pytorch:rocm7.1_ubuntu24.04_py3.12_pytorch_release_2.11.0

# -- build: the wheels of everything but torch ----------------------------------------------------------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY services/amd/requirements.txt services/amd/requirements.txt
# torch (ROCm) is the base image's; build the rest without letting pip swap it for a CUDA build.
# onnxruntime: AMD's build with the MIGraphX provider when its wheel index has one for this image, else
# PyPI's (CPU provider only); both install the module "onnxruntime", so exactly one is built.
RUN grep -v -E '^(torch==|onnxruntime==|--extra-index-url)' services/amd/requirements.txt > /tmp/req.txt \
    && pip wheel --wheel-dir /wheels -r /tmp/req.txt \
    && (pip wheel --wheel-dir /wheels --no-deps onnxruntime-migraphx \
            -f https://repo.radeon.com/rocm/manylinux/rocm-rel-7.1/ \
        || pip wheel --wheel-dir /wheels --no-deps "$(grep '^onnxruntime==' services/amd/requirements.txt)")
COPY shared shared
COPY services/amd services/amd
# No torch wheel may reach the runtime stage: installing one would replace the base image's ROCm build.
RUN pip wheel --wheel-dir /wheels --find-links /wheels ./shared ./services/amd \
    && rm -f /wheels/torch-*.whl

# -- runtime ---------------------------------------------------------------------------------------
FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/kpt kpt \
    && install -d -o kpt -g kpt /var/cache/kpt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl
# KPT_JOB_MEMORY_BYTES is deliberately not set: the service defaults it to 0 (no RLIMIT_AS), because
# ROCm maps more address space than any limit a job could be given.
ENV PYTHONUNBUFFERED=1 \
    KPT_CACHE_DIR=/var/cache/kpt \
    KPT_HEALTH_ADDR=0.0.0.0:8081
VOLUME /var/cache/kpt
EXPOSE 8081
USER 10001:10001
WORKDIR /home/kpt
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import asyncio, sys; from kpt import health, settings; port = settings.get('KPT_HEALTH_ADDR').rsplit(':', 1)[1]; sys.exit(asyncio.run(health.check('127.0.0.1:' + port)) != 'SERVING')"]
CMD ["python", "-m", "kpt_amd.service"]
