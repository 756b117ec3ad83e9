"""``nexa sweep`` and ``nexa worker``."""

from typing import Any, Dict, List, NamedTuple, Optional

from .common import PROJECT_HELP, echo, nexa_task, parse_float, show_value, table

SHOW_ROWS = 5


@nexa_task(
    help={
        "config": "Sweep file (TOML). Required.",
        "project": PROJECT_HELP,
        "out": "Run folder to write into (default: a new folder under the runs directory). One holding another plan's "
        "spec or a run's manifest, or that others may write, is refused; the same plan again is reused.",
        "submit": "Submit to Slurm as one job array (chunked above MaxArraySize); with [search], rung 0 and its promotion job.",
        "local": "Run the tasks on this machine instead, max_parallel at a time (each with its own GPUs when gpus_per_node > 0), "
        "with live progress; Ctrl-C stops and records them. With [search], rung after rung.",
        "max_cost": "Refuse to submit when the estimate is above this many USD (default: [cost] max_cost).",
        "dry_run": "Plan and check, print the sbatch commands (--submit) or each task's command (--local); write and run nothing.",
        "wait": "With --submit: wait until every task (with [search]: every rung) has ended, with progress (as `nexa wait`); "
        "exit 1 if any failed.",
        "json": "Print the plan or submission as one JSON document (run_id, run_dir, job_ids, tasks, estimate...); "
        "all other output goes to stderr.",
        "after": "With --submit: start only after run RUN[:ok|any|corr] (run id, folder or id prefix): ok = all its tasks "
        "succeeded (default), any = all ended, corr = task i after its task i succeeded. Repeatable.",
        "snapshot": "Run the tasks from a copy of the project taken now, in <run>/code (default: [project] snapshot).",
    },
    iterable=["after"],
)
def sweep(
    c,
    config=None,
    project=None,
    out=None,
    submit=False,
    local=False,
    max_cost=None,
    dry_run=False,
    wait=False,
    json=False,
    after=None,
    snapshot=False,
):
    """Plan a sweep; --submit runs it on Slurm, --local here.

    Writes spec.json and the sbatch script into the run folder.
    """
    import contextlib
    import json as _json
    import sys

    from .. import pipeline
    from ..config import load_config, load_sweep
    from ..errors import ConfigError

    if not config:
        raise ConfigError("--config FILE is required (the sweep file)")
    if submit and local:
        raise ConfigError("choose one of --submit and --local")
    if wait and not submit:
        raise ConfigError("--wait goes with --submit (--local always waits)")
    afters = pipeline.parse_afters(list(after or ()))
    if afters and not submit:
        raise ConfigError("--after goes with --submit: only Slurm can hold tasks until another run ends")
    cfg = load_config(project)
    defn = load_sweep(config)
    max_cost = parse_float(max_cost, "--max-cost", minimum=0)
    frozen = Frozen(pipeline.gather(afters, cfg), snapshot)
    if not json:
        _sweep(cfg, defn, out, submit, local, max_cost, dry_run, wait, frozen)
        return
    doc: Dict[str, Any] = {}
    failure: Optional[BaseException] = None
    with contextlib.redirect_stdout(sys.stderr):  # human text to stderr: stdout is the document
        try:
            _sweep(cfg, defn, out, submit, local, max_cost, dry_run, wait, frozen, doc)
        except Exception as exc:  # noqa: BLE001 - a run that ended badly still has its document
            if not doc:
                raise
            failure = exc
    print(_json.dumps(doc, indent=2, ensure_ascii=False, default=str), flush=True)
    if failure is not None:
        raise failure


class Frozen(NamedTuple):
    """What the run depends on: its upstream runs (--after) and whether to snapshot the code."""

    upstreams: List[Any]
    snapshot: bool


def _sweep(
    cfg: Any,
    defn: Any,
    out: Any,
    submit: bool,
    local: bool,
    max_cost: Optional[float],
    dry_run: bool,
    wait: bool,
    frozen: Frozen,
    doc: Any = None,
) -> None:
    """The command's work; ``doc`` (with --json) is filled in as soon as there is a plan, so
    that a run that fails or is interrupted is still described on stdout."""
    import sys

    from .. import runs
    from ..sweep.plan import plan_sweep
    from ..sweep.submit import run_sweep_locally, submit_sweep

    slots, gpu_warning = None, None
    if local:
        from ..sweep.local import gpu_slots  # threads, subprocess, nvidia-smi: --local only

        slots, gpu_warning = gpu_slots(defn.resources.gpus_per_node)
    snapshot = cfg.snapshot_wanted(frozen.snapshot or None)
    artifacts = plan_sweep(defn, cfg, out, upstreams=frozen.upstreams, snapshot=snapshot, dry_run=dry_run)
    if gpu_warning:
        artifacts.warnings.append(gpu_warning)
    for line in artifacts.warnings:
        warn(line)
    mode = "submit" if submit else "local" if local else "plan"
    if doc is not None:
        doc.update(_document(artifacts, mode, dry_run))
    _print_plan(artifacts, defn)
    if artifacts.schedule_cost is not None:
        echo(artifacts.schedule_cost.table())
    if artifacts.cost is not None:
        echo(artifacts.cost.table())
    if submit:
        submit_sweep(artifacts, defn, cfg, dry_run=dry_run, max_cost=max_cost)
        if doc is not None:
            doc.update(_document(artifacts, mode, dry_run))
        if dry_run:
            echo("Dry run: nothing written, nothing submitted.")
            return
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
        if dry_run:
            _print_local_plan(artifacts, defn, cfg, slots)
            return
        from .track import finish_halving, finish_local, local_progress

        run_sweep_locally(artifacts, defn, cfg, gpus=slots or [], progress=local_progress(sys.stderr))
        if doc is not None:
            doc.update(_document(artifacts, mode, dry_run))
        if artifacts.schedule is not None:
            finish_halving(artifacts.local_results, artifacts.decisions, artifacts.stopped_by, artifacts.run_dir, cfg)
        else:
            finish_local(artifacts.local_results, artifacts.stopped_by, artifacts.run_dir, cfg)
    elif dry_run:
        echo(f"Dry run: nothing written (a plan goes into {artifacts.run_dir}).")
    else:
        echo("Planned only: add --submit to send it to Slurm, or --local to run it here.")


def warn(line: str) -> None:
    import sys

    print(f"nexa: warning: {line}", file=sys.stderr, flush=True)


def _document(artifacts: Any, mode: str, dry_run: bool) -> Dict[str, Any]:
    """``sweep --json``: what was planned, submitted or run."""
    doc: Dict[str, Any] = {
        "run_id": artifacts.run_id,
        "run_dir": str(artifacts.run_dir),
        "name": artifacts.name,
        "mode": mode,
        "dry_run": dry_run,
        "written": artifacts.written,
        "spec": str(artifacts.spec_path),
        "script": str(artifacts.script_paths[0]),
        "tasks": artifacts.job_count,
        "job_ids": list(artifacts.job_ids),
        "chunks": [{"offset": c.offset, "count": c.count, "job_id": c.job_id} for c in artifacts.chunks],
        "estimate": artifacts.cost.as_json() if artifacts.cost is not None else None,
        "warnings": list(artifacts.warnings),
    }
    if dry_run and mode == "submit":
        doc["commands"] = [list(a) for a in artifacts.commands]
    if dry_run and mode == "local":
        doc["commands"] = [{"index": t.index, "argv": list(t.argv)} for t in artifacts.tasks]
    if mode == "local" and not dry_run:
        doc["stopped_by"] = artifacts.stopped_by
        doc["results"] = [
            {"index": r.index, "state": r.state, "exit_code": r.exit_code, "seconds": round(r.seconds, 3), "out": r.log, "err": r.err}
            for r in artifacts.local_results
        ]
    if artifacts.schedule_cost is not None:  # a halving sweep: its rungs, promotion jobs, decisions
        doc["halving"] = artifacts.schedule_cost.as_json()
        doc["promote_job_ids"] = list(artifacts.promote_job_ids)
        if mode == "local" and not dry_run:
            doc["decisions"] = [d.as_json() for d in artifacts.decisions]
    return doc


def _print_plan(artifacts: Any, defn: Any) -> None:
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
    rows = [["..."] * (len(keys) + 1) if t is None else [t.index] + [show_value(t.params[k]) if k in t.params else "" for k in keys]
            for t in shown]
    echo(table([label] + keys, rows, right=[0]))
    res = defn.resources
    items = [
        (k, getattr(res, k))
        for k in ("nodes", "gpus_per_node", "gpu_type", "cpus_per_task", "mem", "time", "partition", "account", "max_parallel")
    ]
    echo("Resources: " + ", ".join(f"{k}={v}" for k, v in items if v not in (None, 0)))
    if artifacts.written:
        echo(f"Spec: {artifacts.spec_path}")
        echo(f"Script: {artifacts.script_paths[0]}")
        if len(artifacts.script_paths) > 1:
            echo(f"Promotion script: {artifacts.script_paths[1]}")
    for up in artifacts.upstreams:
        echo(f"After: {up.run_id} ({up.kind}), {_upstream_state(up)}")
    if artifacts.snapshot is not None:
        snap = artifacts.snapshot
        linked = f", unchanged files linked from {snap.linked_from}" if snap.linked_from else ""
        echo(f"Snapshot: {snap.path} ({snap.seconds:.2f} s{linked}); tasks run in {snap.workdir}")
    if defn.env:
        carried = " ".join(artifacts.env_names) or f"(none of {', '.join(defn.env)} is set)"
        echo(f"Env (sweep.env, sourced by every task): {carried}")


def _upstream_state(up: Any) -> str:
    waiting = [t for t in up.tasks if t.bucket in ("pending", "running")]
    if waiting:
        return f"Slurm waits for its {len(waiting)} task(s) still pending or running"
    failed = up.indices("failed")
    tail = f" ({len(failed)} failed)" if failed else ""
    return f"all {up.count} task(s) over{tail}: no dependency needed"


def _print_local_plan(artifacts: Any, defn: Any, cfg: Any, slots: Optional[List[str]]) -> None:
    """``--local --dry-run``: what each task would run, where, how many at a time."""
    import os
    import shlex

    parallel = max(1, defn.resources.max_parallel or os.cpu_count() or 1)
    if slots:
        parallel = min(parallel, len(slots))
    echo(f"Would run {artifacts.job_count} task(s) here, {parallel} at a time, in {cfg.root}:")
    if slots:
        echo(f"each task with its own GPUs: CUDA_VISIBLE_DEVICES={' | '.join(slots)}")
    for task in artifacts.tasks:
        echo(f"  task {task.index}: {' '.join(shlex.quote(a) for a in task.argv)}")
    echo("Dry run: nothing run, nothing written.")


@nexa_task(
    help={
        "spec": "spec.json written by `nexa sweep`.",
        "task_id": "Task index (default: $SLURM_ARRAY_TASK_ID + --offset).",
        "offset": "Added to $SLURM_ARRAY_TASK_ID for chunked arrays (default 0).",
        "dry_run": "Print the task's argv as a JSON list instead of running it.",
    }
)
def worker(c, spec=None, task_id=None, offset="0", dry_run=False):  # offset as text: the worker checks it
    """Run one sweep task (on a compute node, for the job array).

    Execs the task's program with its arguments.
    """
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
