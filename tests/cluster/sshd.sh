#!/usr/bin/env bash
# A throwaway sshd for the sync tests: listens on 127.0.0.1 only, accepts one fresh client
# key, no passwords, no PAM. Idempotent; the daemon is stopped by its PID.
#
#   tests/cluster/sshd.sh start DIR PORT   keys + config in DIR, start sshd (no-op when up)
#   tests/cluster/sshd.sh stop DIR         stop the sshd this script started in DIR
#   tests/cluster/sshd.sh status DIR       exit 0 when that sshd is alive
#
# DIR ends up with: host_ed25519(.pub), client_ed25519(.pub), authorized_keys, known_hosts
# (the host key for [127.0.0.1]:PORT), sshd_config, sshd.pid, sshd.log.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install() {
  command -v ssh >/dev/null && command -v ssh-keygen >/dev/null && [[ -x /usr/sbin/sshd ]] && command -v rsync >/dev/null && return
  apt_install openssh-server openssh-client rsync
}

start() {
  local dir=$1 port=$2
  [[ $port =~ ^[0-9]+$ ]] || { log "PORT must be a number, got '$port'"; exit 2; }
  if alive "$dir/sshd.pid"; then
    if grep -qx "Port $port" "$dir/sshd_config"; then return; fi
    stop "$dir"
  fi
  install
  mkdir -p "$dir" /run/sshd
  chmod 700 "$dir"
  [[ -s $dir/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C nexa-test-host -f "$dir/host_ed25519"
  [[ -s $dir/client_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C nexa-test-client -f "$dir/client_ed25519"
  cp "$dir/client_ed25519.pub" "$dir/authorized_keys"
  printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" >"$dir/known_hosts"
  cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_ed25519
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
PrintMotd no
LogLevel ERROR
MaxStartups 100:30:200
# Throwaway users made by the tests (tests/services/sshd.py, sshd_user) log in with the keys
# in their own home; root keeps using only the key above.
Match User nexa-test-*
    AuthorizedKeysFile .ssh/authorized_keys
CONF
  /usr/sbin/sshd -t -f "$dir/sshd_config"
  /usr/sbin/sshd -D -e -f "$dir/sshd_config" >>"$dir/sshd.log" 2>&1 &
  echo $! >"$dir/sshd.pid"
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
    alive "$dir/sshd.pid" || break
    sleep 0.05
  done
  log "sshd did not come up on 127.0.0.1:$port: $(tail -n 3 "$dir/sshd.log" 2>/dev/null)"
  exit 1
}

stop() {
  local dir=$1 pid
  alive "$dir/sshd.pid" || { rm -f "$dir/sshd.pid"; return; }
  pid=$(<"$dir/sshd.pid")
  kill "$pid"
  for _ in $(seq 50); do alive "$dir/sshd.pid" || break; sleep 0.1; done
  rm -f "$dir/sshd.pid"
}

case ${1:-} in
  start) start "${2:?DIR}" "${3:?PORT}" ;;
  stop) stop "${2:?DIR}" ;;
  status) alive "${2:?DIR}/sshd.pid" ;;
  *) log "usage: $0 start DIR PORT | stop DIR | status DIR"; exit 2 ;;
esac
