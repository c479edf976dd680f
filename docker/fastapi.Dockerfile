# The FastAPI adapter's server (adapters/fastapi.py) in a container.
#
# CPU (default): BASE is the local Debian image built by docker/base/build.sh (no registry
# needed; python3 from Debian). CUDA: --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04
# --build-arg PYTHON=python3.11 (python is installed from apt when the base lacks it).
# Torch only when asked: --build-arg TORCH=torch==2.13.0 (the eager/torchscript variants).
# Build from the repository root with the network reachable for pip:
#   docker build --network host -f docker/fastapi.Dockerfile -t servingbench/fastapi:cpu .
ARG BASE=servingbench/base:bookworm

FROM ${BASE} AS python
ARG PYTHON=python3
ENV DEBIAN_FRONTEND=noninteractive
RUN if ! ${PYTHON} -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends \
            ${PYTHON} ${PYTHON}-venv ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi && ln -sf "$(command -v ${PYTHON})" /usr/local/bin/sb-python

FROM python AS build
ARG TORCH=""
ARG ONNXRUNTIME=onnxruntime
RUN sb-python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# docker/build-ca.crt (optional): a CA bundle for pip behind a TLS-intercepting proxy; the
# launcher adds the host's ($PIP_CERT / $SSL_CERT_FILE). Used here only, not in the image.
COPY docker/ /tmp/ctx/
RUN if [ -s /tmp/ctx/build-ca.crt ]; then export PIP_CERT=/tmp/ctx/build-ca.crt; fi \
    && pip install "numpy>=1.26" "${ONNXRUNTIME}>=1.18" "fastapi>=0.110" "uvicorn>=0.29" \
        uvloop httptools "pydantic>=2" httpx rich pyyaml psutil \
    && if [ -n "${TORCH}" ]; then \
        pip install --index-url https://download.pytorch.org/whl/cpu "${TORCH}" \
        || pip install "${TORCH}"; fi

FROM python AS final
COPY --from=build /opt/venv /opt/venv
COPY harness /app/harness
COPY adapters /app/adapters
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app servingbench
USER 10001
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8000
CMD ["python", "-m", "adapters.fastapi", "--host", "0.0.0.0", "--port", "8000"]
