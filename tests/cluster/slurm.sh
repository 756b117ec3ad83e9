#!/usr/bin/env bash
# A real Slurm for the tests: munge + slurmctld + two slurmd (n1, n2) on 127.0.0.1, with
# two fake GPUs per node declared as GRES. Idempotent; daemons are stopped by PID.
#
#   tests/cluster/slurm.sh start    install if missing, configure, start (no-op when up)
#   tests/cluster/slurm.sh stop     stop the daemons this script started
#   tests/cluster/slurm.sh status   exit 0 when both nodes answer
#
# NEXA_SLURM_MAX_ARRAY (default 25) sets MaxArraySize. NEXA_SLURM_ACCOUNTING=1 adds job
# accounting: MariaDB on 127.0.0.1:3307 and slurmdbd, so sacct answers, with MinJobAge=2 so
# slurmctld forgets finished jobs as a busy cluster does. A running cluster set up otherwise
# is restarted (with an empty queue and accounting database). State lives in $NEXA_SLURM_DIR
# (default /tmp/nexa-slurm).
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir=${NEXA_SLURM_DIR:-/tmp/nexa-slurm}
max_array=${NEXA_SLURM_MAX_ARRAY:-25}
accounting=${NEXA_SLURM_ACCOUNTING:-0}
conf=/etc/slurm/slurm.conf
gres=/etc/slurm/gres.conf
dbd_conf=/etc/slurm/slurmdbd.conf
db_port=3307
dbd_port=6829  # slurmd n2 has 6819, slurmdbd's default
db_run=$dir/mysql-run  # owned by mysql: its socket, PID file and log
marker="# managed by nexa-ops tests/cluster/slurm.sh"
host=$(hostname -s)

install() {
  if ! command -v slurmctld >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    apt_install slurmctld slurmd slurm-client munge
  fi
  if [[ $accounting == 1 ]] && { ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; }; then
    apt_install slurmdbd mariadb-server
  fi
}

managed() {  # managed FILE: absent, or written by this script (never overwrite a real config)
  [[ ! -e $1 ]] || grep -qF "$marker" "$1" || { log "$1 exists and was not written by this script: refusing to overwrite it"; exit 1; }
}

sql() { mariadb --no-defaults --socket="$db_run/mysqld.sock" -uroot -e "$1"; }

start_db() {  # MariaDB for slurmdbd, its files under $dir; the accounting database starts empty
  if ! alive "$db_run/mysqld.pid"; then
    rm -rf "$dir/mysql" "$db_run"
    mkdir -p "$dir/mysql" "$db_run"
    chown mysql:mysql "$dir/mysql" "$db_run"
    mariadb-install-db --no-defaults --user=mysql --datadir="$dir/mysql" --skip-test-db >/dev/null
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$dir/mysql" --socket="$db_run/mysqld.sock" \
      --pid-file="$db_run/mysqld.pid" --log-error="$db_run/mysqld.log" --bind-address=127.0.0.1 \
      --port="$db_port" --skip-name-resolve --innodb-buffer-pool-size=32M </dev/null >/dev/null 2>&1 &
  fi
  for _ in $(seq 100); do sql 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
  sql "DROP DATABASE IF EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'nexa-test';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || { log "MariaDB does not answer"; tail -n 20 "$db_run/mysqld.log" >&2; exit 1; }
}

start_dbd() {  # slurmdbd, then the cluster registered in it (slurmctld needs both)
  managed "$dbd_conf"
  local tmp
  tmp=$(mktemp "$dbd_conf.XXXX")
  cat >"$tmp" <<CONF
$marker
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=nexa-test
StorageLoc=slurm_acct_db
PidFile=$dir/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
CONF
  chmod 600 "$tmp"
  mv -f "$tmp" "$dbd_conf"
  slurmdbd
  for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
  sacctmgr -i add cluster nexa >/dev/null || { log "slurmdbd does not answer"; tail -n 20 "$dir/log/slurmdbd.log" >&2; exit 1; }
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

storage() {  # the accounting lines of slurm.conf
  if [[ $accounting == 1 ]]; then
    # jobacct_gather/linux: sacct then has each step's CPU time and peak RSS (nexa efficiency)
    printf 'JobAcctGatherType=jobacct_gather/linux\nJobAcctGatherFrequency=task=1\n'
    printf 'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\nAccountingStoragePort=%s\nAccountingStorageTRES=gres/gpu\nMinJobAge=2\n' "$dbd_port"
  else
    printf 'JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\nMinJobAge=300\n'
  fi
}

write_config() {
  managed "$conf"
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
$(storage)
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
  local daemons=("$dir"/slurmd.n1.pid "$dir"/slurmd.n2.pid "$dir"/slurmctld.pid "$dir"/slurmdbd.pid "$db_run"/mysqld.pid)
  for f in "${daemons[@]}"; do
    if alive "$f"; then pid=$(<"$f"); kill "$pid" 2>/dev/null || true; fi
  done
  local up
  for _ in $(seq 100); do
    up=0
    for f in "${daemons[@]}"; do alive "$f" && up=1; done
    ((up)) || return 0
    sleep 0.1
  done
  for f in "${daemons[@]}"; do
    if alive "$f"; then kill -9 "$(<"$f")" 2>/dev/null || true; fi
  done
}

start() {
  install
  start_munge
  if alive "$dir/slurmctld.pid" && grep -qx "MaxArraySize=$max_array" "$conf" 2>/dev/null \
    && [[ $(grep '^JobAcctGatherType=\|^AccountingStorageType=\|^MinJobAge=' "$conf") == "$(storage | grep '^JobAcctGatherType=\|^AccountingStorageType=\|^MinJobAge=')" ]] && ready; then
    return 0
  fi
  stop
  rm -rf "$dir/state" "$dir/spool"
  write_config
  mkdir -p "$dir/state" "$dir/spool/n1" "$dir/spool/n2"
  if [[ $accounting == 1 ]]; then
    start_db
    start_dbd
  fi
  slurmctld -c -i
  for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
  slurmd -N n1
  slurmd -N n2
  for _ in $(seq 150); do
    ready && { log "up: nodes n1 n2, MaxArraySize=$max_array, accounting=$accounting"; return 0; }
    sleep 0.2
  done
  log "nodes did not become idle:"; sinfo -N -l >&2 || true; tail -n 20 "$dir"/log/*.log >&2 || true
  exit 1
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) ready ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
