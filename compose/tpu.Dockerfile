# syntax=docker/dockerfile:1
# The TPU optimizer service (torch_xla). Build from the repository root:
#   docker build -f compose/tpu.Dockerfile -t kpt-tpu .
# Run on a TPU VM (libtpu needs the TPU device nodes; Google's documented way is a privileged container
# on the host network):  docker run --privileged --net host -e KPT_NATS_URL=... kpt-tpu
# Without a TPU the same image runs the model on XLA's CPU device (PJRT_DEVICE=CPU).
# Health: grpc.health.v1 on KPT_HEALTH_ADDR (0.0.0.0:8081).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# torch_xla[tpu] adds libtpu; an image for XLA's CPU device only can pass --build-arg XLA_EXTRA=
ARG XLA_EXTRA=[tpu]

FROM ${PYTHON_IMAGE} AS build
ARG XLA_EXTRA
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY services/tpu/requirements.txt services/tpu/requirements.txt
# torch_xla pins its torch exactly; the CPU build of that torch (XLA, not CUDA, runs the model) is on the
# CPU index as "<version>+cpu", which the requirement's "==" accepts.
RUN pip wheel --wheel-dir /wheels --extra-index-url https://download.pytorch.org/whl/cpu \
        -r services/tpu/requirements.txt \
        "torch_xla${XLA_EXTRA}==$(sed -n 's/^torch_xla==//p' services/tpu/requirements.txt)"
COPY shared shared
COPY services/tpu services/tpu
RUN pip wheel --wheel-dir /wheels --find-links /wheels ./shared ./services/tpu

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/kpt kpt \
    && install -d -o kpt -g kpt /var/cache/kpt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl
ENV PYTHONUNBUFFERED=1 \
    KPT_CACHE_DIR=/var/cache/kpt \
    KPT_HEALTH_ADDR=0.0.0.0:8081
# XLA's compilation cache survives restarts when this is a volume.
VOLUME /var/cache/kpt
EXPOSE 8081
USER 10001:10001
WORKDIR /home/kpt
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import asyncio, sys; from kpt import health, settings; port = settings.get('KPT_HEALTH_ADDR').rsplit(':', 1)[1]; sys.exit(asyncio.run(health.check('127.0.0.1:' + port)) != 'SERVING')"]
CMD ["python", "-m", "kpt_tpu.service"]
