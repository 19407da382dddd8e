# syntax=docker/dockerfile:1
# The gateway (gRPC API, HTTP API; imports no torch). Build from the repository root:
#   docker build -f compose/gateway.Dockerfile -t kpt-gateway .
# Health: grpc.health.v1 on its gRPC port (KPT_GATEWAY_ADDR, 0.0.0.0:50051).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY shared shared
COPY gateway gateway
RUN pip wheel --wheel-dir /wheels ./shared ./gateway

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/kpt kpt \
    && install -d -o kpt -g kpt /var/lib/kpt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl
ENV PYTHONUNBUFFERED=1 \
    KPT_GATEWAY_ADDR=0.0.0.0:50051 \
    KPT_HTTP_ADDR=0.0.0.0:8080
# /var/lib/kpt holds the tokens file in compose (KPT_TOKENS_FILE); Kubernetes mounts a Secret instead.
EXPOSE 50051 8080
USER 10001:10001
WORKDIR /home/kpt
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import asyncio, sys; from kpt import health, settings; port = settings.get('KPT_GATEWAY_ADDR').rsplit(':', 1)[1]; sys.exit(asyncio.run(health.check('127.0.0.1:' + port)) != 'SERVING')"]
CMD ["python", "-m", "kpt_gateway.server"]
