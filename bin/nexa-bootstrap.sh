#!/bin/sh
# nexa-bootstrap.sh: entrypoint of the nexa images.
#
# `nexa run-container` runs the container as the host uid:gid so that files written to shared
# volumes belong to the user. That uid usually has no entry in the image's /etc/passwd, so
# Docker leaves HOME=/ and libraries fail on `/.cache` (PermissionError). This script makes
# HOME, HF_HOME and the XDG cache writable for whatever uid it runs as, moves to the
# workspace, prints a short summary on stderr (NEXA_QUIET=1 silences it) and execs the command.
# POSIX sh on purpose: it must run in any image, busybox included.
set -eu

uid=$(id -u)
gid=$(id -g)

writable_dir() {
    [ -n "$1" ] && mkdir -p "$1" 2>/dev/null && [ -d "$1" ] && [ -w "$1" ]
}

# A folder of this uid that nobody else can enter: not a link, mode exactly drwx------
# ('.' = an SELinux context; '+' = an ACL, which could let others in: refused).
private_dir() {
    listing=$(ls -ldn -- "$1" 2>/dev/null) || return 1
    read -r mode _links owner _rest <<EOF
$listing
EOF
    [ "$owner" = "$uid" ] && { [ "$mode" = "drwx------" ] || [ "$mode" = "drwx------." ]; }
}

# A HOME the mapped user can write to: the image's one when it is ours, else a private one.
# The fallback's name is predictable, and anyone on the machine may have made it first (with
# a usercustomize.py or .bashrc in it): it is created 0700 here, or reused only when it is a
# private folder of this uid; anything else gets a fresh folder from mktemp -d.
if [ -z "${HOME:-}" ] || [ "${HOME}" = "/" ] || ! writable_dir "${HOME}"; then
    HOME="${TMPDIR:-/tmp}/nexa-home-${uid}"
    if ! mkdir -m 700 "$HOME" 2>/dev/null && ! private_dir "$HOME"; then
        echo "nexa-bootstrap: warning: $HOME exists and is not a private folder of uid $uid; not using it" >&2
        HOME=$(mktemp -d "${TMPDIR:-/tmp}/nexa-home-${uid}.XXXXXXXX") || {
            echo "nexa-bootstrap: error: cannot create a private HOME under ${TMPDIR:-/tmp}" >&2
            exit 1
        }
    fi
fi
export HOME

: "${XDG_CACHE_HOME:=$HOME/.cache}"
if ! writable_dir "$XDG_CACHE_HOME"; then
    XDG_CACHE_HOME="$HOME/.cache"
    mkdir -p "$XDG_CACHE_HOME"
fi
export XDG_CACHE_HOME

# The HuggingFace cache: the host's one when run-container mounted it, else under HOME.
: "${HF_HOME:=$XDG_CACHE_HOME/huggingface}"
if ! writable_dir "$HF_HOME"; then
    echo "nexa-bootstrap: warning: HF_HOME=$HF_HOME is not writable by uid $uid; using $XDG_CACHE_HOME/huggingface" >&2
    HF_HOME="$XDG_CACHE_HOME/huggingface"
    mkdir -p "$HF_HOME"
fi
export HF_HOME

workdir="${NEXA_WORKDIR:-/workspace}"
if [ -d "$workdir" ]; then
    cd "$workdir"
fi

export NEXA_BOOTSTRAPPED=1

if [ "${NEXA_QUIET:-0}" != "1" ]; then
    user=$(id -un 2>/dev/null) || user="?"
    gpus="none"
    if command -v nvidia-smi >/dev/null 2>&1; then
        count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
        gpus="${count:-0} (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all})"
    elif [ -n "${NVIDIA_VISIBLE_DEVICES:-}" ] && [ "${NVIDIA_VISIBLE_DEVICES}" != "void" ]; then
        gpus="requested ${NVIDIA_VISIBLE_DEVICES} (no nvidia-smi)"
    fi
    versions="nexa image ${NEXA_VERSION:-?}"
    python=""
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then
            python=$candidate
            break
        fi
    done
    if [ -n "$python" ]; then
        # Package metadata only: importing torch would cost seconds on every start.
        versions="$versions, $("$python" - <<'EOF' 2>/dev/null || echo "python ?"
import platform
try:
    from importlib import metadata
except ImportError:
    metadata = None
parts = ["python " + platform.python_version()]
for name in ("torch", "transformers", "trl", "deepspeed", "flash-attn", "axolotl", "vllm"):
    try:
        parts.append(name + " " + metadata.version(name))
    except Exception:
        pass
print(", ".join(parts))
EOF
)"
    fi
    echo "nexa-bootstrap: user=${user} uid=${uid} gid=${gid} home=${HOME} hf_home=${HF_HOME} cwd=$(pwd)" >&2
    echo "nexa-bootstrap: gpus=${gpus}; ${versions}" >&2
fi

if [ "$#" -eq 0 ]; then
    if command -v bash >/dev/null 2>&1; then
        set -- bash
    else
        set -- sh
    fi
fi
exec "$@"
