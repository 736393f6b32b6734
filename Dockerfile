# NexusML: one image for the nexus CLI, the model server and the batching proxy.
#
# CPU (default, no CUDA libraries):  docker build -t nexusml .
#   torch comes from PyTorch's CPU index (TORCH_CPU_INDEX); where that index cannot be
#   reached, put a CPU torch wheel in deploy/docker/wheels/ and it is installed from there.
# CUDA:  docker build --build-arg VARIANT=cuda -t nexusml:cuda .
#   torch from PyPI, which bundles its CUDA libraries; the base image brings the driver side.

ARG VARIANT=cpu

# ---- the two bases: Python 3.11, git (nexus store reads the repo) ----------------------
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
ARG VARIANT
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /opt/nexus
COPY deploy/docker/wheels/ /wheels/
# torch first, so that `.[all]` finds it installed and never pulls the CUDA build for CPU.
RUN set -e; \
    wheel=$(find /wheels -name 'torch-*.whl' | head -n 1); \
    if [ -n "$wheel" ]; then /opt/nexus/bin/pip install "$wheel"; \
    elif [ "$VARIANT" = cpu ]; then /opt/nexus/bin/pip install --index-url "$TORCH_CPU_INDEX" torch; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nexus_common ./nexus_common
COPY control_plane ./control_plane
COPY model_server ./model_server
COPY batch_proxy ./batch_proxy
RUN /opt/nexus/bin/pip install ".[all]" \
 && if [ "$VARIANT" = cpu ] && /opt/nexus/bin/pip list 2>/dev/null | grep -qi '^nvidia-'; then \
      echo "the CPU image must hold no CUDA libraries" >&2; exit 1; \
    fi

# ---- runtime: non-root; reads a workspace written by another uid --------------------
FROM ${VARIANT}-base
RUN git config --system safe.directory '*' \
 && useradd --create-home --uid 10001 nexus
COPY --from=build /opt/nexus /opt/nexus
COPY examples /app/examples
COPY deploy/compose/create_bucket.py /app/create_bucket.py
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
