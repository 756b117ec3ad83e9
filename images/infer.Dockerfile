# nexa_infer (alias infer): lean vLLM serving that starts fast. Build with
# `nexa build-image nexa_infer`; serve with
# `nexa run-container infer -- vllm serve MODEL --host 0.0.0.0 --port 8000`.
#
# Two stages on the same pinned CUDA 12.4.1 runtime base: `build` creates a venv with pinned
# vLLM (which pins torch 2.5.1), `runtime` copies only that venv, so no pip caches, build
# tools or apt lists ship.
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04 AS build

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install \
        torch==2.5.1 \
        vllm==0.6.4.post1 \
        transformers==4.46.3 \
        huggingface_hub==0.26.2 \
        hf_transfer==0.1.8


FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04 AS runtime

ARG NEXA_VERSION=dev
ARG NEXA_UID=1000
ARG NEXA_GID=1000

LABEL org.opencontainers.image.title="nexa_infer" \
      org.opencontainers.image.description="nexa: lean vLLM serving" \
      org.opencontainers.image.version="${NEXA_VERSION}" \
      ai.nexa.service="nexa_infer" \
      ai.nexa.version="${NEXA_VERSION}"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_ENABLE_HF_TRANSFER=1 \
    PATH=/opt/venv/bin:${PATH} \
    NEXA_VERSION=${NEXA_VERSION}

# Triton JIT-compiles small launchers at run time: it needs a C compiler and Python headers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 gcc libc6-dev python3-dev \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv

RUN groupadd --gid "${NEXA_GID}" nexa \
    && useradd --uid "${NEXA_UID}" --gid nexa --create-home --shell /bin/bash nexa \
    && mkdir -p /workspace \
    && chown nexa:nexa /workspace

COPY bin/nexa-bootstrap.sh /usr/local/bin/nexa-bootstrap.sh
RUN chmod 0755 /usr/local/bin/nexa-bootstrap.sh

USER nexa
ENV HOME=/home/nexa
WORKDIR /workspace
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/nexa-bootstrap.sh"]
CMD ["bash"]
