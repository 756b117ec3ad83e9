"""``nexa sweep`` and ``nexa worker``."""

from typing import Any, List, Optional

from .common import PROJECT_HELP, echo, nexa_task, parse_float

SHOW_ROWS = 5


@nexa_task(
    help={
        "config": "Sweep file (TOML). Required.",
        "project": PROJECT_HELP,
        "out": "Run folder to write into (default: a new folder under the runs directory).",
        "submit": "Submit to Slurm as one job array (chunked above MaxArraySize); with [search], rung 0 and its promotion job.",
        "local": "Run the tasks on this machine instead, max_parallel at a time (with [search], rung after rung).",
        "max_cost": "Refuse to submit when the estimate is above this many USD (default: [cost] max_cost).",
        "dry_run": "Plan and write the files, print the sbatch commands; submit nothing.",
        "wait": "With --submit: wait until every task (with [search]: every rung) has ended, as `nexa wait`; exit 1 if any failed.",
    }
)
def sweep(c, config=None, project=None, out=None, submit=False, local=False, max_cost=None, dry_run=False, wait=False):
    """Plan a sweep: write spec.json and the sbatch script; --submit or --local to run it."""
    from .. import runs
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
    if artifacts.schedule_cost is not None:
        echo(artifacts.schedule_cost.table())
    if artifacts.cost is not None:
        echo(artifacts.cost.table())
    if submit:
        submit_sweep(artifacts, defn, cfg, dry_run=dry_run, max_cost=max_cost)
        if not dry_run:
            ids = ", ".join(artifacts.job_ids)
            manifest = artifacts.run_dir / runs.MANIFEST
            if artifacts.schedule is not None:
                promoter = ", ".join(artifacts.promote_job_ids)
                echo(f"Submitted rung 0: job array {ids} ({artifacts.schedule.n} tasks) and promotion job {promoter}; manifest: {manifest}")
            else:
                echo(f"Submitted job array {ids} ({artifacts.job_count} tasks); manifest: {manifest}")
            if wait:
                from .track import wait_and_report

                wait_and_report(artifacts.run_dir, cfg)
    elif local:
        run_sweep_locally(artifacts, defn, cfg)
        failed = _print_local(artifacts)
        from .results import print_top

        print_top(artifacts.run_dir, cfg)
        if artifacts.schedule is not None:
            _end_of_halving(artifacts)
        elif failed:
            from invoke import Exit

            raise Exit(f"nexa: {failed} of {artifacts.job_count} task(s) failed", code=1)
    else:
        echo("Planned only: add --submit to send it to Slurm, or --local to run it here.")


def _end_of_halving(artifacts: Any) -> None:
    """A halving sweep ends well when it found a winner: failed trials are never promoted,
    and do not fail the sweep. Without a winner: exit 1."""
    last = artifacts.decisions[-1] if artifacts.decisions else None
    if last is not None and last.winner is not None:
        echo(f"{artifacts.run_id}: {last.summary()} at {artifacts.schedule.param}={last.budget}")
        return
    from invoke import Exit

    why = last.summary() if last is not None else "no rung was decided"
    raise Exit(f"nexa: {artifacts.run_id}: the schedule ended without a winner: {why}", code=1)


def _print_plan(artifacts: Any, defn: Any) -> None:
    from tabulate import tabulate

    tasks = artifacts.tasks
    keys: List[str] = defn.param_keys
    label = "task"
    if artifacts.schedule is not None:  # the configurations (trials); their rungs are in the schedule table
        schedule, label = artifacts.schedule, "trial"
        tasks = tasks[: schedule.n]
        echo(
            f"Sweep {defn.name}: {schedule.n} configuration(s), successive halving in {len(schedule.rungs)} rungs "
            f"({schedule.most_tasks} tasks at most)  ->  {artifacts.run_dir}"
        )
    else:
        echo(f"Sweep {defn.name}: {len(tasks)} task(s)  ->  {artifacts.run_dir}")
    shown = tasks if len(tasks) <= 2 * SHOW_ROWS else tasks[:SHOW_ROWS] + [None] + tasks[-SHOW_ROWS:]
    rows = [["..."] * (len(keys) + 1) if t is None else [t.index] + [t.params.get(k, "") for k in keys] for t in shown]
    echo(tabulate(rows, headers=[label] + keys, disable_numparse=True))
    res = defn.resources
    items = [
        (k, getattr(res, k))
        for k in ("nodes", "gpus_per_node", "gpu_type", "cpus_per_task", "mem", "time", "partition", "account", "max_parallel")
    ]
    echo("Resources: " + ", ".join(f"{k}={v}" for k, v in items if v not in (None, 0)))
    echo(f"Spec: {artifacts.spec_path}")
    echo(f"Script: {artifacts.script_paths[0]}")
    if len(artifacts.script_paths) > 1:
        echo(f"Promotion script: {artifacts.script_paths[1]}")


def _print_local(artifacts: Any) -> int:
    from tabulate import tabulate

    if artifacts.schedule is not None:
        place = artifacts.schedule.locate
        rows = [
            [*place(r.index), r.index, "ok" if r.exit_code == 0 else "FAILED", r.exit_code, f"{r.seconds:.2f}", r.log]
            for r in artifacts.local_results
        ]
        echo(tabulate(rows, headers=["rung", "trial", "task", "status", "exit", "seconds", "log"]))
        for decision in artifacts.decisions:
            echo(f"rung {decision.rung} ({artifacts.schedule.param}={decision.budget}): {decision.summary()}")
    else:
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
