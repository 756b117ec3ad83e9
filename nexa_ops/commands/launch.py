"""``nexa launch``: run one training command locally, under torchrun, or on Slurm nodes."""

import sys

from .common import PROJECT_HELP, echo, nexa_task, parse_float, parse_int, remainder


@nexa_task(
    usage="-- COMMAND...",
    help={
        "mode": "local (a subprocess here), ddp (torchrun on this node) or slurm (one multi-node job). "
        "Default: the launch file's mode, else local.",
        "nproc_per_node": "Processes per node (ddp default: visible GPUs, else 1; slurm default: gpus_per_node, else 1).",
        "nodes": "Slurm nodes (overrides [resources] nodes of the launch file).",
        "config": "Launch file (TOML): mode, command, name, env, nproc_per_node, [resources], ...",
        "project": PROJECT_HELP,
        "name": "Run name (default: the launch file's, else the script's name).",
        "rdzv_port": "Rendezvous port (ddp default: a free port; slurm default: 20000 + job id % 12000).",
        "join_timeout": "Seconds torchrun waits for every rank/node to join (torchrun's default: 600).",
        "env": "slurm: a variable (or glob like 'WANDB_*') to carry to every rank; repeatable. PATH always is.",
        "wait": "slurm: follow the job until it ends; exit with its exit code, naming a failed rank.",
        "max_cost": "slurm: refuse to submit when the estimate is above this many USD (default: [cost] max_cost).",
        "dry_run": "Print the command, the torchrun command or the sbatch script; run, submit and write nothing.",
        "after": "slurm: start only after run RUN[:ok|any|corr] (run id, folder or id prefix): ok = all its tasks "
        "succeeded (default), any = all ended, corr = its one task succeeded. Repeatable.",
        "snapshot": "Run from a copy of the project taken now, in <run>/code (default: [project] snapshot).",
    },
    iterable=["env", "after"],
)
def launch(
    c,
    mode=None,
    nproc_per_node=None,
    nodes=None,
    config=None,
    project=None,
    name=None,
    rdzv_port=None,
    join_timeout=None,
    env=None,
    wait=False,
    max_cost=None,
    dry_run=False,
    after=None,
    snapshot=False,
):
    """Run one training command: here, under torchrun, or on Slurm.

    A subprocess here (local), torchrun on this node (ddp), or one multi-node Slurm job;
    the command and its arguments go after --, word for word.
    """
    from ..errors import LaunchFailed
    from ..launcher.run import launch as run_launch

    result = run_launch(
        remainder(),
        mode=mode,
        nproc_per_node=parse_int(nproc_per_node, "--nproc-per-node"),
        nodes=parse_int(nodes, "--nodes"),
        config=config,
        project=project,
        name=name,
        rdzv_port=parse_int(rdzv_port, "--rdzv-port"),
        join_timeout=parse_int(join_timeout, "--join-timeout"),
        env=list(env or ()),
        wait=wait,
        max_cost=parse_float(max_cost, "--max-cost"),
        dry_run=dry_run,
        after=list(after or ()),
        snapshot=snapshot or None,
    )
    if dry_run:
        return
    if result.mode == "slurm":
        echo(
            f"Submitted job {result.job_id}: {result.nodes} node(s) x {result.nproc_per_node} process(es)"
            f"; log: {result.log_path}; script: {result.script_path}"
        )
        held = f": Slurm holds the job ({result.dependency})" if result.dependency else ": nothing left to wait for"
        for up in result.upstreams:
            echo(f"After: {up.run_id} ({up.kind}){held}")
    if result.snapshot is not None:
        echo(f"Snapshot: {result.snapshot.path}; running in {result.snapshot.workdir}")
    if not result.ok:
        raise LaunchFailed(result.failure_message(), result.exit_code, result)
    if result.exit_code is not None:
        print(f"nexa: {result.name} finished in {result.seconds:.1f} s; log: {result.log_path}", file=sys.stderr, flush=True)


TASKS = [launch]
