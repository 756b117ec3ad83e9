"""``nexa sweep`` and ``nexa worker``."""

from typing import Any, List, Optional

from .common import PROJECT_HELP, echo, nexa_task, parse_float

SHOW_ROWS = 5


@nexa_task(
    help={
        "config": "Sweep file (TOML). Required.",
        "project": PROJECT_HELP,
        "out": "Run folder to write into (default: a new folder under the runs directory).",
        "submit": "Submit to Slurm as one job array (chunked above MaxArraySize).",
        "local": "Run the tasks on this machine instead, max_parallel at a time.",
        "max_cost": "Refuse to submit when the estimate is above this many USD (default: [cost] max_cost).",
        "dry_run": "Plan and write the files, print the sbatch commands; submit nothing.",
        "wait": "With --submit: wait until every task has ended, with progress (as `nexa wait`); exit 1 if any failed.",
    }
)
def sweep(c, config=None, project=None, out=None, submit=False, local=False, max_cost=None, dry_run=False, wait=False):
    """Plan a sweep: write spec.json and the sbatch script; --submit or --local to run it."""
    from ..config import load_config, load_sweep
    from ..errors import ConfigError
    from ..sweep.plan import plan_sweep
    from ..sweep.submit import run_sweep_locally, submit_sweep

    if not config:
        raise ConfigError("--config FILE is required (the sweep file)")
    if submit and local:
        raise ConfigError("choose one of --submit and --local")
    if wait and not submit:
        raise ConfigError("--wait goes with --submit (--local always waits)")
    cfg = load_config(project)
    defn = load_sweep(config)
    max_cost = parse_float(max_cost, "--max-cost", minimum=0)
    artifacts = plan_sweep(defn, cfg, out)
    _print_plan(artifacts, defn)
    if artifacts.cost is not None:
        echo(artifacts.cost.table())
    if submit:
        submit_sweep(artifacts, defn, cfg, dry_run=dry_run, max_cost=max_cost)
        if not dry_run:
            ids = ", ".join(artifacts.job_ids)
            echo(f"Submitted job array {ids} ({artifacts.job_count} tasks); manifest: {artifacts.run_dir / 'manifest.json'}")
            if wait:
                from .track import wait_and_report

                wait_and_report(artifacts.run_dir, cfg)
    elif local:
        run_sweep_locally(artifacts, defn, cfg)
        failed = _print_local(artifacts)
        from .results import print_top

        print_top(artifacts.run_dir, cfg)
        if failed:
            from invoke import Exit

            raise Exit(f"nexa: {failed} of {artifacts.job_count} task(s) failed", code=1)
    else:
        echo("Planned only: add --submit to send it to Slurm, or --local to run it here.")


def _print_plan(artifacts: Any, defn: Any) -> None:
    from ..text import align  # not tabulate: importing it is a tenth of a submission's time

    tasks = artifacts.tasks
    keys: List[str] = defn.param_keys
    shown = tasks if len(tasks) <= 2 * SHOW_ROWS else tasks[:SHOW_ROWS] + [None] + tasks[-SHOW_ROWS:]
    rows = [["..."] * (len(keys) + 1) if t is None else [str(t.index)] + [str(t.params.get(k, "")) for k in keys] for t in shown]
    echo(f"Sweep {defn.name}: {len(tasks)} task(s)  ->  {artifacts.run_dir}")
    echo(align([["task"] + list(keys)] + rows))
    res = defn.resources
    items = [
        (k, getattr(res, k))
        for k in ("nodes", "gpus_per_node", "gpu_type", "cpus_per_task", "mem", "time", "partition", "account", "max_parallel")
    ]
    echo("Resources: " + ", ".join(f"{k}={v}" for k, v in items if v not in (None, 0)))
    echo(f"Spec: {artifacts.spec_path}")
    echo(f"Script: {artifacts.script_paths[0]}")


def _print_local(artifacts: Any) -> int:
    from tabulate import tabulate

    rows = [[r.index, "ok" if r.exit_code == 0 else "FAILED", r.exit_code, f"{r.seconds:.2f}", r.log] for r in artifacts.local_results]
    echo(tabulate(rows, headers=["task", "status", "exit", "seconds", "log"]))
    failed = sum(1 for r in artifacts.local_results if r.exit_code != 0)
    echo(f"{len(rows) - failed} succeeded, {failed} failed")
    return failed


@nexa_task(
    help={
        "spec": "spec.json written by `nexa sweep`.",
        "task_id": "Task index (default: $SLURM_ARRAY_TASK_ID + --offset).",
        "offset": "Added to $SLURM_ARRAY_TASK_ID for chunked arrays (default 0).",
        "dry_run": "Print the task's argv as a JSON list instead of running it.",
    }
)
def worker(c, spec=None, task_id=None, offset="0", dry_run=False):  # offset as text: the worker checks it
    """Run one sweep task (on a compute node): exec its program with its arguments."""
    import sys

    from .. import worker as w

    argv: List[str] = ["--spec", spec] if spec else []
    if task_id is not None:
        argv += ["--task-id", str(task_id)]
    argv += ["--offset", str(offset)]
    if dry_run:
        argv.append("--dry-run")
    code: Optional[int] = w.main(argv)
    sys.exit(code or 0)


TASKS = [sweep, worker]
