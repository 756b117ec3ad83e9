"""``nexa cost`` (= ``cost.estimate``), ``cost.reconcile`` and ``cost.report``."""

from invoke import Collection

from .common import PROJECT_HELP, echo, nexa_task, parse_float, parse_int, table

RUNS_HELP = "Runs folder holding manifests/ (default: [cluster] runs_dir of nexa.toml)."


def _idle_cost(project):
    """The ``idle_usd`` of a finished run from its GPUs' utilisation in Prometheus, when
    ``[monitor] prometheus_url`` says where that is; else None (no idle column)."""
    from pathlib import Path

    from ..config import load_config

    cfg = load_config(project)
    if not cfg.monitor.prometheus_url:
        return None

    def idle(doc):
        from ..efficiency import idle_gpu

        run_dir = doc.get("run_dir")
        if not run_dir or not Path(run_dir).is_dir():
            return None
        return idle_gpu(run_dir, config=cfg).idle_usd

    return idle


def _runs_dir(project, runs_dir):
    from pathlib import Path

    from ..config import load_config

    if runs_dir:
        return Path(runs_dir).expanduser().resolve()
    return load_config(project).runs_dir


@nexa_task(
    help={
        "config": "Sweep file (TOML), or any TOML file with a [resources] table (one task). Required.",
        "project": PROJECT_HELP,
        "provider": "Price this provider from the price table instead of [cost] provider.",
        "tasks": "Number of tasks (default: the sweep's expanded size, or 1; a halving sweep: its whole schedule).",
        "json": "Print the estimate as JSON (gpu_type, provider, rate_usd_per_gpu_hour, tasks, gpu_hours, total_usd...).",
        "dry_run": "Accepted for symmetry: an estimate never submits or writes anything.",
    },
)
def estimate(c, config=None, project=None, provider=None, tasks=None, json=False, dry_run=False):
    """Estimate a sweep's cost, without planning a run.

    tasks x nodes x GPUs x hours x rate, per provider; a halving sweep per rung.
    """
    import json as _json
    from pathlib import Path

    from ..config import load_config
    from ..cost.estimate import estimate_cost, halving_cost, load_target
    from ..errors import ConfigError

    if not config:
        raise ConfigError("--config FILE is required (the sweep file)")
    count = parse_int(tasks, "--tasks", minimum=1)
    cfg = load_config(project)
    target = load_target(Path(config))
    halving = halving_cost(target, cfg, provider=provider) if count is None and getattr(target, "search", None) else None
    est = estimate_cost(target, cfg, tasks=count, provider=provider, strict=True)
    if json:
        doc = est.as_json()
        if halving is not None:
            doc["halving"] = halving.as_json()
        echo(_json.dumps(doc, indent=2))
    else:
        if halving is not None:
            echo(halving.table())
        echo(est.table())


@nexa_task(
    iterable=["run"],
    help={
        "project": PROJECT_HELP,
        "runs_dir": RUNS_HELP,
        "run": "Run id to reconcile (repeatable; default: every run not yet finished).",
        "all": "Reconcile finished runs again too.",
        "no_sacct": "Use the worker's task records even when Slurm accounting (sacct) works.",
        "dry_run": "Compute and print the figures; write nothing.",
    },
)
def reconcile(c, project=None, runs_dir=None, run=None, all=False, no_sacct=False, dry_run=False):
    """Turn finished tasks into actual GPU-hours and cost.

    Written into each cost manifest.
    """
    from ..cost.reconcile import reconcile as do_reconcile

    folder = _runs_dir(project, runs_dir)
    results = do_reconcile(folder, run or None, force=all, use_sacct=False if no_sacct else None, dry_run=dry_run)
    rows = [[r.run_id, r.status, f"{r.done}/{r.tasks}", _money(r.estimated_usd), _money(r.actual_usd), r.source or "-"] for r in results]
    echo(table(["run", "status", "done", "est $", "actual $", "from"], rows, right=[2, 3, 4]))
    echo(f"{len(results)} run(s) in {folder}" + (" (dry run: nothing written)" if dry_run else ""))


def _money(value):
    return "-" if value is None else f"{value:,.2f}"


@nexa_task(
    help={
        "project": PROJECT_HELP,
        "runs_dir": RUNS_HELP,
        "campaign": "Only runs of this campaign.",
        "since": "Only runs submitted at or after: 2025-12-01, 2025-12-01T08:00 (UTC) or 7d (days ago).",
        "until": "Only runs submitted at or before (a bare date includes that whole day).",
        "by": "Group rows by campaign (default), user, gpu or run.",
        "format": "table (default), csv, json or markdown.",
        "output": "Write the report to this file atomically instead of stdout.",
        "budget": "Exit 3 (after writing the report) when the actual total is above this many USD, or when a file of the "
        "cost book was skipped (unreadable or invalid: the total cannot be vouched for).",
        "no_reconcile": "Sum the manifests as they are; do not reconcile unfinished runs first.",
        "no_sacct": "Reconcile from the worker's task records even when sacct works.",
        "dry_run": "Reconcile in memory only and print to stdout; write no manifest and no --output.",
        "allow_empty": "Report an empty table (exit 0) when the folder holds no cost manifest; without it that is an error (exit 2).",
    },
)
def report(
    c,
    project=None,
    runs_dir=None,
    campaign=None,
    since=None,
    until=None,
    by="campaign",
    format="table",
    output=None,
    budget=None,
    no_reconcile=False,
    no_sacct=False,
    dry_run=False,
    allow_empty=False,
):
    """Estimated and actual cost by campaign, user, GPU or run.

    Made for cron: --output writes atomically, --budget exits 3 when overspent.
    """
    from ..cost.report import FORMATS, check_budget, check_not_empty, cost_report, write_report
    from ..errors import ConfigError

    if format not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {format!r}")
    limit = parse_float(budget, "--budget", minimum=0)
    folder = _runs_dir(project, runs_dir)
    rep = cost_report(
        folder,
        idle=_idle_cost(project),
        campaign=campaign,
        since=since,
        until=until,
        by=by,
        reconcile_first=not no_reconcile,
        use_sacct=False if no_sacct else None,
        dry_run=dry_run,
    )
    if not allow_empty:
        check_not_empty(rep)
    if dry_run and output:
        echo(f"(dry run: would write {output})")
        output = None
    write_report(rep, format, output)
    check_budget(rep, limit)


collection = Collection("cost")
collection.add_task(estimate, default=True)
collection.add_task(reconcile)
collection.add_task(report)
COLLECTIONS = [collection]
