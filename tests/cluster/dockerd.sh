#!/usr/bin/env bash
# A private Docker engine for the container tests: Debian's dockerd started by hand with its
# own data-root, exec-root, pidfile and socket (nothing shared with a system dockerd), no
# bridge and no iptables changes (containers only have loopback). Idempotent; the daemon is
# stopped by its PID. No registry is needed: images are made from busybox-static.
#
#   tests/cluster/dockerd.sh start DIR    start dockerd under DIR (no-op when up); prints DOCKER_HOST
#   tests/cluster/dockerd.sh images DIR   import local/nexa-base:1 from a busybox rootfs and build
#                                          local/nexa-test:1 on it with bin/nexa-bootstrap.sh
#   tests/cluster/dockerd.sh stop DIR     stop the dockerd this script started under DIR
#   tests/cluster/dockerd.sh status DIR   exit 0 when that dockerd is alive
#
# DIR holds: data/ (data-root), x/ (exec-root, kept short for socket paths), dockerd.pid,
# docker.sock, dockerd.log.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_IMAGE=local/nexa-base:1
TEST_IMAGE=local/nexa-test:1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

install() {
  command -v dockerd >/dev/null && command -v docker >/dev/null && command -v busybox >/dev/null && return
  apt_install docker.io busybox-static
}

host() { printf 'unix://%s/docker.sock\n' "$1"; }

start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if alive "$dir/dockerd.pid" && DOCKER_HOST=$(host "$dir") docker info >/dev/null 2>&1; then
    host "$dir"
    return
  fi
  install
  mkdir -p "$dir/data" "$dir/x"
  rm -f "$dir/docker.sock"
  # setsid: the daemon must not die with the shell (or the pytest process group) that started it.
  setsid dockerd \
    --data-root "$dir/data" --exec-root "$dir/x" --pidfile "$dir/dockerd.pid" \
    -H "$(host "$dir")" --bridge=none --iptables=false --ip-masq=false \
    >"$dir/dockerd.log" 2>&1 </dev/null &
  local _
  for _ in $(seq 1 150); do
    if DOCKER_HOST=$(host "$dir") docker info >/dev/null 2>&1; then
      host "$dir"
      return
    fi
    sleep 0.1
  done
  log "dockerd did not become ready in 15 s; last lines of $dir/dockerd.log:"
  tail -n 20 "$dir/dockerd.log" >&2 || true
  exit 1
}

images() {
  local dir=$1 tmp
  dir=$(cd "$dir" && pwd)
  export DOCKER_HOST
  DOCKER_HOST=$(host "$dir")
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    local root=$tmp/rootfs applet
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/home/nexa" "$root/workspace" "$root/usr/local/bin"
    cp "$(command -v busybox)" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
      [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
    done
    chmod 1777 "$root/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnexa:x:1000:1000:nexa:/home/nexa:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnexa:x:1000:\n' >"$root/etc/group"
    chown 1000:1000 "$root/home/nexa" "$root/workspace"
    tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
  fi
  # The test image mirrors the real ones: labels from NEXA_VERSION, non-root user, the real
  # bootstrap script as entrypoint.
  mkdir -p "$tmp/ctx/bin"
  cp "$REPO/bin/nexa-bootstrap.sh" "$tmp/ctx/bin/nexa-bootstrap.sh"
  cat >"$tmp/ctx/Dockerfile" <<DOCKERFILE
FROM $BASE_IMAGE
ARG NEXA_VERSION=dev
LABEL ai.nexa.service="nexa_test" ai.nexa.version="\${NEXA_VERSION}"
ENV NEXA_VERSION=\${NEXA_VERSION}
COPY bin/nexa-bootstrap.sh /usr/local/bin/nexa-bootstrap.sh
RUN chmod 0755 /usr/local/bin/nexa-bootstrap.sh
USER nexa
ENV HOME=/home/nexa
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/nexa-bootstrap.sh"]
CMD ["sh"]
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q -t "$TEST_IMAGE" --build-arg NEXA_VERSION=test "$tmp/ctx" >/dev/null 2>"$tmp/build.err" \
    || { cat "$tmp/build.err" >&2; exit 1; }
  printf '%s %s\n' "$BASE_IMAGE" "$TEST_IMAGE"
}

stop() {
  local dir=$1 pid _
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd)
  if alive "$dir/dockerd.pid"; then
    pid=$(<"$dir/dockerd.pid")
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
      alive "$dir/dockerd.pid" || break
      sleep 0.1
    done
    if alive "$dir/dockerd.pid"; then
      log "dockerd $pid ignored SIGTERM for 10 s; killing it"
      kill -KILL "$pid" || true
    fi
  fi
  if mountpoint -q "$dir/x/netns/default" 2>/dev/null; then
    umount "$dir/x/netns/default" || true
  fi
}

cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || { log "usage: $0 start|images|stop|status DIR"; exit 2; }
case $cmd in
  start) start "$dir" ;;
  images) images "$dir" ;;
  stop) stop "$dir" ;;
  status) alive "$dir/dockerd.pid" ;;
  *) log "unknown command '$cmd'"; exit 2 ;;
esac
