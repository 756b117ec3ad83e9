# nexa_light (alias train-light): the HF / TRL training stack for models up to ~20B on one node.
# Build with `nexa build-image nexa_light` (sets the tag and NEXA_VERSION); run with
# `nexa run-container nexa_light -- python train.py`.
#
# Base: the official PyTorch 2.5.1 runtime image (CUDA 12.4, cuDNN 9, Python 3.11). Every pip
# package is pinned, and torch is pinned again in the same install so no dependency can move it.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ARG NEXA_VERSION=dev
ARG NEXA_UID=1000
ARG NEXA_GID=1000

LABEL org.opencontainers.image.title="nexa_light" \
      org.opencontainers.image.description="nexa: HF / TRL training stack, single node" \
      org.opencontainers.image.version="${NEXA_VERSION}" \
      ai.nexa.service="nexa_light" \
      ai.nexa.version="${NEXA_VERSION}"

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TOKENIZERS_PARALLELISM=false \
    NEXA_VERSION=${NEXA_VERSION}

# git: pip installs from git refs and HF repos cloned in the container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN pip install \
        torch==2.5.1 \
        transformers==4.46.3 \
        tokenizers==0.20.3 \
        trl==0.12.1 \
        peft==0.13.2 \
        accelerate==1.1.1 \
        datasets==3.1.0 \
        huggingface_hub==0.26.2 \
        safetensors==0.4.5 \
        sentencepiece==0.2.0 \
        bitsandbytes==0.44.1 \
        wandb==0.18.7

# The non-root user; `nexa run-container` maps the host uid:gid over it at run time, and
# nexa-bootstrap.sh gives any other uid a writable HOME.
RUN groupadd --gid "${NEXA_GID}" nexa \
    && useradd --uid "${NEXA_UID}" --gid nexa --create-home --shell /bin/bash nexa \
    && mkdir -p /workspace \
    && chown nexa:nexa /workspace

COPY bin/nexa-bootstrap.sh /usr/local/bin/nexa-bootstrap.sh
RUN chmod 0755 /usr/local/bin/nexa-bootstrap.sh

USER nexa
ENV HOME=/home/nexa
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/nexa-bootstrap.sh"]
CMD ["bash"]
