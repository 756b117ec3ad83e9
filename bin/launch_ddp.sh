#!/usr/bin/env bash
# launch_ddp.sh: start this node's share of a multi-node PyTorch DDP job with torchrun.
#
# Run it once per node inside a Slurm allocation. nexa's generated sbatch script does
#   srun --ntasks-per-node=1 bash launch_ddp.sh --nproc-per-node 4 -- python train.py --lr 3e-4
# and the same line works by hand inside `salloc --nodes=2`.
#
# Every node starts torchrun with the same c10d rendezvous, hosted by the first host of
# `scontrol show hostnames` of the step's node list (the job's when run outside a step).
# torchrun then gives every process RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
#
# Options (all optional; the training command goes after --):
#   --nproc-per-node N  processes on this node (default: $SLURM_GPUS_ON_NODE, else the
#                       devices in $CUDA_VISIBLE_DEVICES, else 1)
#   --port P            rendezvous port on the first node (default: 20000 + job id % 12000,
#                       so two jobs that share a first node do not collide, and below
#                       Linux's ephemeral ports, 32768 up, that outgoing connections take)
#   --join-timeout S    seconds to wait for every node to join (torchrun's default: 600)
#   --max-restarts N    restarts of the whole worker group after a failure (default: 0)
#   --torchrun PATH     the torchrun to run (default: $NEXA_TORCHRUN, else torchrun on PATH)
#   --dry-run           print the torchrun command instead of running it
# A command whose first word ends in .py is started by torchrun's own Python; anything else
# (python -m pkg, a wrapper script) runs word for word (torchrun --no_python).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { printf 'launch_ddp.sh: error: %s\n' "$2" >&2; exit "$1"; }

nproc="" port="" join_timeout="" max_restarts=0 dry_run=0
torchrun=${NEXA_TORCHRUN:-torchrun}
while (($#)); do
  case $1 in
    --nproc-per-node) nproc=${2-}; shift 2 || die 2 "$1 needs a value" ;;
    --port) port=${2-}; shift 2 || die 2 "$1 needs a value" ;;
    --join-timeout) join_timeout=${2-}; shift 2 || die 2 "$1 needs a value" ;;
    --max-restarts) max_restarts=${2-}; shift 2 || die 2 "$1 needs a value" ;;
    --torchrun) torchrun=${2-}; shift 2 || die 2 "$1 needs a value" ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die 2 "unknown option '$1' (the training command goes after --)" ;;
  esac
done
(($#)) || die 2 "no training command after --"
[[ -n ${SLURM_JOB_ID:-} ]] || die 2 "not inside a Slurm allocation (SLURM_JOB_ID is unset)"
for value in "$nproc" "$port" "$join_timeout" "$max_restarts"; do
  [[ -z $value || $value =~ ^[0-9]+$ ]] || die 2 "expected a whole number, got '$value'"
done

nodelist=${SLURM_STEP_NODELIST:-${SLURM_JOB_NODELIST:?}}
nnodes=${SLURM_STEP_NUM_NODES:-${SLURM_JOB_NUM_NODES:-1}}
head=$(scontrol show hostnames "$nodelist" | head -n 1)
# Rendezvous at the address Slurm itself uses for that node (NodeAddr, usually its name).
head_addr=$(scontrol show node -o "$head" 2>/dev/null | tr ' ' '\n' | sed -n 's/^NodeAddr=//p')
head_addr=${head_addr:-$head}

if [[ -z $nproc ]]; then
  if [[ -n ${SLURM_GPUS_ON_NODE:-} ]]; then
    nproc=$SLURM_GPUS_ON_NODE
  elif [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    IFS=, read -ra devices <<<"$CUDA_VISIBLE_DEVICES"
    nproc=${#devices[@]}
  fi
  ((${nproc:-0} > 0)) || nproc=1
fi
port=${port:-$((20000 + SLURM_JOB_ID % 12000))}

# In an srun step, node 0 of the step is the first host: it serves the rendezvous store.
# Saying so (rather than letting torchrun guess from the host name) also keeps it right
# when several nodes share an address.
conf=""
if [[ -n ${SLURM_NODEID:-} && -n ${SLURM_STEP_ID:-} ]]; then
  if [[ $SLURM_NODEID == 0 ]]; then conf="is_host=true"; else conf="is_host=false"; fi
fi
if [[ -n $join_timeout ]]; then conf+="${conf:+,}join_timeout=$join_timeout"; fi

args=(
  --nnodes="$nnodes" --nproc_per_node="$nproc" --max_restarts="$max_restarts"
  --rdzv_backend=c10d --rdzv_endpoint="$head_addr:$port" --rdzv_id="$SLURM_JOB_ID"
)
[[ -z $conf ]] || args+=(--rdzv_conf="$conf")
[[ $1 == *.py ]] || args+=(--no_python)

if ((dry_run)); then
  printf '%q ' "$torchrun" "${args[@]}" "$@"
  printf '\n'
  exit 0
fi
command -v "$torchrun" >/dev/null \
  || die 127 "torchrun not found on $(hostname) (install PyTorch in the training environment, or pass --torchrun PATH)"
exec "$torchrun" "${args[@]}" "$@"
