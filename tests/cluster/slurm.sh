#!/usr/bin/env bash
# A real Slurm for the tests: munge + slurmctld + two slurmd (n1, n2) on 127.0.0.1, with
# two fake GPUs per node declared as GRES. Idempotent; daemons are stopped by PID.
#
#   tests/cluster/slurm.sh start    install if missing, configure, start (no-op when up)
#   tests/cluster/slurm.sh stop     stop the daemons this script started
#   tests/cluster/slurm.sh status   exit 0 when both nodes answer
#
# NEXA_SLURM_MAX_ARRAY (default 25) sets MaxArraySize; a running cluster with another value
# is restarted. State lives in $NEXA_SLURM_DIR (default /tmp/nexa-slurm).
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir=${NEXA_SLURM_DIR:-/tmp/nexa-slurm}
max_array=${NEXA_SLURM_MAX_ARRAY:-25}
conf=/etc/slurm/slurm.conf
gres=/etc/slurm/gres.conf
marker="# managed by nexa-ops tests/cluster/slurm.sh"
host=$(hostname -s)

install() {
  command -v slurmctld >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null && return
  apt_install slurmctld slurmd slurm-client munge
}

start_munge() {
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
  fi
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
  log "munge does not answer"; exit 1
}

write_config() {
  if [[ -e $conf ]] && ! grep -qF "$marker" "$conf"; then
    log "$conf exists and was not written by this script: refusing to overwrite it"; exit 1
  fi
  mkdir -p "$dir"/{state,spool,log} /etc/slurm
  for i in 0 1; do [[ -c $dir/gpu$i ]] || mknod -m 666 "$dir/gpu$i" c 1 3; done
  local tmp
  tmp=$(mktemp "$conf.XXXX")
  cat >"$tmp" <<CONF
$marker
ClusterName=nexa
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CommunicationParameters=NoInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
MaxArraySize=$max_array
MinJobAge=300
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.%n.log
GresTypes=gpu
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=6818 CPUs=8 RealMemory=8000 Gres=gpu:fake:2 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=6819 CPUs=8 RealMemory=8000 Gres=gpu:fake:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  mv -f "$tmp" "$conf"
  chmod 644 "$conf"
  printf '%s\nNodeName=n[1-2] Name=gpu Type=fake File=%s/gpu[0-1]\n' "$marker" "$dir" >"$gres.tmp"
  mv -f "$gres.tmp" "$gres"
}

ready() {
  local states
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u) || return 1
  [[ $(grep -cE '^n[12] (idle|mixed|allocated)' <<<"$states") -eq 2 ]]
}

stop() {
  local f pid
  for f in "$dir"/slurmd.n1.pid "$dir"/slurmd.n2.pid "$dir"/slurmctld.pid; do
    if alive "$f"; then pid=$(<"$f"); kill "$pid" 2>/dev/null || true; fi
  done
  for _ in $(seq 50); do
    alive "$dir/slurmctld.pid" || alive "$dir/slurmd.n1.pid" || alive "$dir/slurmd.n2.pid" || return 0
    sleep 0.1
  done
  for f in "$dir"/slurmd.n1.pid "$dir"/slurmd.n2.pid "$dir"/slurmctld.pid; do
    if alive "$f"; then kill -9 "$(<"$f")" 2>/dev/null || true; fi
  done
}

start() {
  install
  start_munge
  if alive "$dir/slurmctld.pid" && grep -qx "MaxArraySize=$max_array" "$conf" 2>/dev/null && ready; then
    return 0
  fi
  stop
  rm -rf "$dir/state" "$dir/spool"
  write_config
  mkdir -p "$dir/state" "$dir/spool/n1" "$dir/spool/n2"
  slurmctld -c -i
  for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
  slurmd -N n1
  slurmd -N n2
  for _ in $(seq 150); do ready && { log "up: nodes n1 n2, MaxArraySize=$max_array"; return 0; }; sleep 0.2; done
  log "nodes did not become idle:"; sinfo -N -l >&2 || true; tail -n 20 "$dir"/log/*.log >&2 || true
  exit 1
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) ready ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
