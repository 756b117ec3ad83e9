# nexa_heavy (alias train-heavy): Axolotl, DeepSpeed, FlashAttention-2 and the compilers that
# FSDP / DeepSpeed JIT kernels need. Build with `nexa build-image nexa_heavy`.
#
# Base: the PyTorch 2.5.1 *devel* image (CUDA 12.4 toolkit with nvcc, cuDNN 9, Python 3.11):
# DeepSpeed compiles ops at run time and flash-attn needs the toolkit at install time.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel

ARG NEXA_VERSION=dev
ARG NEXA_UID=1000
ARG NEXA_GID=1000
# GPU architectures compiled for: A100 (8.0), A10/A40/RTX 30xx (8.6), L4/L40/RTX 40xx (8.9), H100 (9.0).
ARG TORCH_CUDA_ARCH_LIST="8.0 8.6 8.9 9.0"
ARG MAX_JOBS=8

LABEL org.opencontainers.image.title="nexa_heavy" \
      org.opencontainers.image.description="nexa: Axolotl, DeepSpeed, FlashAttention-2, FSDP toolchain" \
      org.opencontainers.image.version="${NEXA_VERSION}" \
      ai.nexa.service="nexa_heavy" \
      ai.nexa.version="${NEXA_VERSION}"

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TOKENIZERS_PARALLELISM=false \
    CUDA_HOME=/usr/local/cuda \
    TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" \
    NEXA_VERSION=${NEXA_VERSION}

# Compilers and headers for DeepSpeed ops (libaio for async I/O offload) and Triton kernels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential git ca-certificates libaio-dev pdsh openssh-client \
    && rm -rf /var/lib/apt/lists/*

# flash-attn builds against the installed torch, so it goes first and without build isolation
# (its setup fetches the matching prebuilt wheel when one exists, else compiles with MAX_JOBS).
RUN pip install torch==2.5.1 ninja==1.11.1.1 packaging==24.2 wheel==0.45.1 \
    && MAX_JOBS="${MAX_JOBS}" pip install --no-build-isolation flash-attn==2.7.0.post2

RUN pip install \
        torch==2.5.1 \
        flash-attn==2.7.0.post2 \
        deepspeed==0.15.4 \
        axolotl==0.5.2 \
        transformers==4.46.3 \
        trl==0.12.1 \
        peft==0.13.2 \
        datasets==3.1.0 \
        bitsandbytes==0.44.1 \
        wandb==0.18.7

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
