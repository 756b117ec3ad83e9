#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian 12 machine (as root) and run them all:
# Debian packages (Slurm + munge, slurmdbd + MariaDB, Docker engine, Prometheus, sshd, rsync, shellcheck,
# headless Chromium for the `nexa results --plot` pictures, strace to count file-system calls), the venv
# with nexa and its dev tools, PyTorch CPU, then lint, shellcheck and pytest. The real services (Slurm, dockerd,
# sshd, Prometheus) are started by the tests' session fixtures.
#
#   bash tests/run.sh [pytest args...]
#
# NEXA_REQUIRE_TOOLS=1 (the default here) turns every "tool missing" skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server docker.io busybox-static prometheus openssh-server rsync shellcheck chromium-headless-shell strace)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

py=${NEXA_PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "== venv"
  "$py" -m venv .venv
fi
echo "== pip install"
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' vermin torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import nexa_ops, invoke, tabulate, torch' >/dev/null

echo "== ruff"
.venv/bin/ruff check .
echo "== shellcheck"
shellcheck bin/*.sh tests/cluster/*.sh tests/run.sh

echo "== pytest"
export NEXA_REQUIRE_TOOLS=${NEXA_REQUIRE_TOOLS:-1}
exec .venv/bin/python -m pytest "$@"
