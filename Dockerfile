# NexusML: one image for the nexus CLI, the model server and the batching proxy.
#
# CPU (default):  docker build -t nexusml .
#   For a smaller CPU-only torch, point pip at PyTorch's CPU wheel index:
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<PyTorch CPU index> -t nexusml .
# CUDA:           docker build --build-arg VARIANT=cuda -t nexusml:cuda .
#   (torch from PyPI bundles its CUDA libraries; the base image brings the runtime.)

ARG VARIANT=cpu

# ---- the two bases: Python 3.11, git (nexus store reads the repo), a non-root user ----
FROM python:3.11-slim AS cpu-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*

FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04 AS cuda-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv git \
 && rm -rf /var/lib/apt/lists/*

# ---- build: install the project into a virtual environment -------------------------
FROM ${VARIANT}-base AS build
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
RUN python3.11 -m venv /opt/nexus
WORKDIR /src
COPY pyproject.toml README.md ./
COPY control_plane ./control_plane
COPY model_server ./model_server
COPY batch_proxy ./batch_proxy
RUN /opt/nexus/bin/pip install ".[all]"

# ---- runtime ----------------------------------------------------------------------------
FROM ${VARIANT}-base
RUN git config --system safe.directory '*' \
 && useradd --create-home --uid 10001 nexus
COPY --from=build /opt/nexus /opt/nexus
COPY examples /app/examples
ENV PATH=/opt/nexus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    NEXUS_CACHE_DIR=/home/nexus/.cache/nexus/models \
    NEXUS_HEALTH_PORT=8000
USER nexus
WORKDIR /workspace
EXPOSE 8000 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['NEXUS_HEALTH_PORT'] + '/health', timeout=2)"
CMD ["nexus-model-server", "--host", "0.0.0.0", "--port", "8000"]
