#!/usr/bin/env bash
# A real Prometheus server for the tests, on 127.0.0.1 only. Idempotent; stopped by PID.
#
#   tests/cluster/prometheus.sh start DIR PORT CONFIG   install if missing, start (a running
#                                                       server in DIR reloads CONFIG instead)
#   tests/cluster/prometheus.sh stop DIR                stop the server this script started
#   tests/cluster/prometheus.sh status DIR              exit 0 when it answers /-/ready
#
# DIR holds the pid file, the log and the TSDB.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return
  apt_install prometheus
}

ready() {  # ready PORT
  local out
  for _ in $(seq 100); do
    out=$(exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3) 2>/dev/null || out=
    [[ $out == *" 200 "* ]] && return 0
    sleep 0.1
  done
  return 1
}

start() {
  local dir=$1 port=$2 config=$3
  [[ -f $config ]] || { log "no config file $config"; exit 2; }
  install
  mkdir -p "$dir/data"
  if alive "$dir/prometheus.pid"; then
    if [[ $(<"$dir/port") == "$port" && $(<"$dir/config") == "$config" ]]; then
      kill -HUP "$(<"$dir/prometheus.pid")"   # same server, same file: reread it
      ready "$port" && exit 0
    fi
    stop "$dir"
  fi
  nohup prometheus \
    --config.file="$config" \
    --web.listen-address="127.0.0.1:$port" \
    --storage.tsdb.path="$dir/data" \
    --web.enable-lifecycle \
    >"$dir/prometheus.log" 2>&1 </dev/null &
  echo $! >"$dir/prometheus.pid"
  echo "$port" >"$dir/port"
  echo "$config" >"$dir/config"
  if ! ready "$port"; then
    log "not ready on 127.0.0.1:$port; last log lines:"
    tail -n 20 "$dir/prometheus.log" >&2 || true
    exit 1
  fi
}

stop() {
  local dir=$1 pid
  alive "$dir/prometheus.pid" || { rm -f "$dir/prometheus.pid"; return 0; }
  pid=$(<"$dir/prometheus.pid")
  kill -TERM "$pid"
  for _ in $(seq 100); do alive "$dir/prometheus.pid" || break; sleep 0.1; done
  alive "$dir/prometheus.pid" && kill -KILL "$pid"
  rm -f "$dir/prometheus.pid"
}

case ${1:-} in
  start) [[ $# -eq 4 ]] || { log "usage: $0 start DIR PORT CONFIG"; exit 2; }; start "$2" "$3" "$4" ;;
  stop) [[ $# -eq 2 ]] || { log "usage: $0 stop DIR"; exit 2; }; stop "$2" ;;
  status) [[ $# -eq 2 ]] || exit 2; alive "$2/prometheus.pid" && ready "$(<"$2/port")" ;;
  *) log "usage: $0 start DIR PORT CONFIG | stop DIR | status DIR"; exit 2 ;;
esac
