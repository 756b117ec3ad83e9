# shellcheck shell=bash
# Shared by the service scripts in tests/cluster/ (sourced, not run): logging, liveness by
# PID file, and installing Debian packages only when missing.

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

alive() {  # alive PIDFILE: the process exists and is not a zombie (PID 1 reaps late here)
  local pid state
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat")
  [[ $state != Z ]]
}

apt_install() {  # apt_install PKG...: install, refreshing the package lists once if needed
  log "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >/dev/null; }
}
