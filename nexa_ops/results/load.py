"""The results of a run or a campaign: states from ``track.status`` (the same source as
``nexa status``), metrics from the run folder's ``metrics/`` files. The library behind
``nexa results``; ``nexa sweep`` uses it for the top 5 at the end of a run."""

import os
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import runs, track
from ..config import NexaConfig, load_config
from ..errors import ConfigError
from ..runs import States, parse_states  # noqa: F401 - parse_states: part of this module's API
from ..structs import mutable
from . import metrics as metrics_files
from .table import BestConfig, Results, TaskResult, best_of, check_options, choose_metric, rank


@mutable
class RunData:
    """One run as read for its results: its status and its tasks' metrics."""

    status: track.RunStatus
    metrics: Dict[int, metrics_files.TaskMetrics] = field(default_factory=dict)


def load_results(
    run: runs.RunRef = None,
    *,
    metric: Optional[str] = None,
    mode: Optional[str] = None,
    reduce: str = "last",
    state: States = None,
    top: Optional[int] = None,
    campaign: Optional[str] = None,
    config: Optional[NexaConfig] = None,
) -> Results:
    """A run's tasks ranked by a metric its tasks reported in ``$NEXA_METRICS_FILE``.

    Works while the run is going (tasks without the metric yet sort last), for local and
    Slurm runs and launch runs, and across every run of a campaign. A halving run has one
    row per trial: its task at the highest rung it reached (``TaskResult.rung``), ranked by
    rung first, so the best row is the winner of the last rung.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        metric: the metric to rank by (default: a halving run's ``[search] metric``, else the
            first metric name seen).
        mode: ``min`` (smaller is better) or ``max`` (default: a halving run's ``[search]
            mode``, else ``min``).
        reduce: ``last`` (default: the value at the highest step) or ``best`` (the best
            value over all steps, by ``mode``).
        state: keep only tasks in this state or these states: Slurm states (``COMPLETED``,
            ``FAILED``...) or the buckets ``pending``, ``running``, ``done``, ``failed``;
            a list or a comma-separated string.
        top: keep only the first ``top`` rows of the ranking.
        campaign: rank every run of this campaign in the runs directory together (then
            ``run`` must be None; rows carry their run id).
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).

    Returns:
        ``Results``: ``rows`` (``TaskResult``: index, state, params, value, metrics, steps,
        elapsed, run) ranked best first, ``best`` (``BestConfig`` or None), ``metric``,
        ``metric_names``, ``keys`` (varying parameters) and ``skipped_lines``.

    Raises:
        ConfigError: no such run or campaign, an unknown metric (the message lists the names
            seen), a bad ``mode``, ``reduce``, ``state`` or ``top``.
    """
    check_options(mode or "min", reduce, top)
    wanted = parse_states(state)
    cfg = config or load_config()
    if campaign is not None:
        if run is not None:
            raise ConfigError("give RUN or --campaign, not both")
        data = [read_run(track.status(path, config=cfg)) for path in campaign_runs(cfg.runs_dir, campaign)]
    else:
        data = [read_run(track.status(run, config=cfg))]
        metric, mode = search_defaults(data[0].status, metric, mode)
    return combine(data, metric=metric, mode=mode or "min", reduce=reduce, states=wanted, top=top, campaign=campaign)


def search_defaults(st: track.RunStatus, metric: Optional[str], mode: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """A halving run's ``[search]`` metric and mode where none was asked for: the winner of
    ``nexa results`` is then the schedule's own."""
    if st.schedule is None:
        return metric, mode
    plan = st.schedule.schedule
    if metric is None or metric == plan.metric:
        return plan.metric, mode or plan.mode
    return metric, mode


def best_config(
    run: runs.RunRef = None,
    metric: Optional[str] = None,
    mode: Optional[str] = None,
    *,
    reduce: str = "last",
    campaign: Optional[str] = None,
    config: Optional[NexaConfig] = None,
) -> Optional[BestConfig]:
    """The winning configuration of a run (or campaign): the task with the best metric.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        metric: the metric to rank by (default: a halving run's, else the first name seen).
        mode: ``min`` or ``max`` (default: a halving run's, else ``min``).
        reduce: ``last`` (default) or ``best`` over the steps, as in ``load_results``.
        campaign: look over every run of this campaign instead (``run`` must be None).
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).

    Returns:
        ``BestConfig`` (index, params, value, state, run, metric), or None when no task has
        reported the metric yet.

    Raises:
        ConfigError: no such run or campaign, an unknown metric, a bad ``mode`` or ``reduce``.
    """
    return load_results(run, metric=metric, mode=mode, reduce=reduce, campaign=campaign, config=config).best


def read_run(st: track.RunStatus) -> RunData:
    """A run's status with its metrics files read (one scan of ``metrics/``). A launch run
    (no task list in its status) is one task, index 0."""
    if not st.tasks and _is_launch(st.run_dir):
        st.tasks = [launch_row(st.run_dir)]
    return RunData(st, metrics_files.read_run(st.run_dir))


def combine(
    data: Sequence[RunData],
    *,
    metric: Optional[str] = None,
    mode: str = "min",
    reduce: str = "last",
    states: Optional[frozenset] = None,
    top: Optional[int] = None,
    campaign: Optional[str] = None,
) -> Results:
    """Rank the tasks of one run (or of a campaign's runs) by ``metric`` (pure)."""
    check_options(mode, reduce, top)
    names: Dict[str, None] = {}
    skipped = 0
    for run in data:
        for index in sorted(run.metrics):
            names.update(dict.fromkeys(run.metrics[index].last))
            skipped += run.metrics[index].skipped
    chosen = choose_metric(list(names), metric)
    table = "low" if mode == "min" else "high"
    rows: List[TaskResult] = []
    for run in data:
        label = run.status.run_id if campaign is not None else ""
        for task, trial, rung in _rows_of(run.status):
            if states is not None and task.state not in states and task.bucket not in states:
                continue
            found = run.metrics.get(task.index)
            index = task.index if trial is None else trial
            row = TaskResult(index, task.state, dict(task.params), elapsed=task.elapsed, run=label, rung=rung)
            if found is not None:
                row.steps, row.text = found.steps, dict(found.text)
                if chosen in found.last:
                    row.value = found.last[chosen] if reduce == "last" else getattr(found, table)[chosen]
                    row.metrics[chosen] = row.value
                row.metrics.update((k, v) for k, v in found.last.items() if k != chosen)
            rows.append(row)
    ranked = rank(rows, mode)
    if top is not None:
        ranked = ranked[:top]
    statuses = [run.status for run in data]
    return Results(
        run=None if campaign is not None else statuses[0].run_id,
        metric=chosen,
        mode=mode,
        reduce=reduce,
        keys=track.varying_keys([{"params": t.params} for st in statuses for t in st.tasks]),
        metric_names=list(names),
        rows=ranked,
        best=best_of(ranked, chosen),
        skipped_lines=skipped,
        campaign=campaign,
        run_dirs={st.run_id: st.run_dir for st in statuses},
    )


def _rows_of(st: track.RunStatus) -> List[Tuple[track.TaskRow, Optional[int], Optional[int]]]:
    """``(task row, trial, rung)`` per result row: every task; for a halving run, each
    trial's task at the highest rung it was submitted to."""
    if st.schedule is None:
        return [(task, None, None) for task in st.tasks]
    plan = st.schedule.schedule
    latest: Dict[int, Tuple[track.TaskRow, Optional[int], Optional[int]]] = {}
    for task in st.tasks:
        rung, trial = plan.locate(task.index)
        if trial not in latest or (latest[trial][2] or 0) <= rung:
            latest[trial] = (task, trial, rung)
    return [latest[trial] for trial in sorted(latest)]


def campaign_runs(runs_dir: Path, campaign: str) -> List[Path]:
    """The run folders under ``runs_dir`` whose manifest names ``campaign``, oldest
    submission first (then by run id). Planned-only runs (no manifest) have no results."""
    found: List[Tuple[str, str, Path]] = []
    try:
        entries = list(os.scandir(str(runs_dir)))
    except OSError:
        entries = []
    for entry in entries:
        path = Path(entry.path)
        try:
            manifest = runs.read_manifest(path)
        except (OSError, ValueError):
            continue
        if type(manifest) is dict and manifest.get("campaign") == campaign:
            found.append((str(manifest.get("submitted_at") or ""), entry.name, path.resolve()))
    if not found:
        raise ConfigError(f"--campaign: no run of campaign {campaign!r} in {runs_dir}")
    return [path for _, _, path in sorted(found)]


def _is_launch(run_dir: Path) -> bool:
    try:
        return runs.read_manifest(run_dir).get("kind") == "launch"
    except (OSError, ValueError, AttributeError):
        return False


def launch_row(run_dir: Path) -> track.TaskRow:
    """A launch run as task 0: its state from the manifest (exit code, or the Slurm state
    ``--wait`` saw), else from the job script's records (Slurm launches write them)."""
    manifest = runs.read_manifest(run_dir)
    record = runs.task_records(run_dir).get(0, {})
    row = track.TaskRow(index=0, state="RUNNING" if manifest.get("backend") != "slurm" else "PENDING", source="record")
    if isinstance(manifest.get("state"), str):
        row.state = manifest["state"]
    elif manifest.get("error"):  # Slurm refused the job: it never ran
        row.state = "FAILED"
    elif type(manifest.get("exit_code")) is int:
        row.state = "COMPLETED" if manifest["exit_code"] == 0 else "FAILED"
    elif "exit_code" in record:
        row.state = runs.record_state(record)
    elif "start" in record:
        row.state = "RUNNING"
    row.exit_code = manifest.get("exit_code") if type(manifest.get("exit_code")) is int else record.get("exit_code")
    if isinstance(manifest.get("seconds"), (int, float)):
        row.elapsed = float(manifest["seconds"])
    elif "start" in record and "end" in record:
        row.elapsed = max(0.0, float(record["end"]) - float(record["start"]))
    return row


# --- the plot's data ------------------------------------------------------------------------


@mutable
class Curve:
    """One task's chosen metric over its steps."""

    row: TaskResult
    points: List[Tuple[float, float]]


def curves(results: Results, k: int = 5) -> List[Curve]:
    """The metric's curve over steps of the first ``k`` ranked tasks that reported it (their
    files are read again, whole: only these few)."""
    out: List[Curve] = []
    if results.metric is None:
        return out
    for row in results.rows:
        if len(out) >= k:
            break
        if row.value is None:
            continue
        run_dir = results.run_dirs.get(row.run) if row.run else next(iter(results.run_dirs.values()), None)
        if run_dir is None:
            continue
        parsed = metrics_files.read(metrics_files.metrics_path(run_dir, row.index))
        out.append(Curve(row, metrics_files.series(parsed, results.metric)))
    return out


def any_metrics(run_dir: Path) -> bool:
    """Whether some task of the run wrote a metrics file with something in it."""
    try:
        return any(
            e.name.endswith(metrics_files.SUFFIX) and e.stat().st_size > 0 for e in os.scandir(str(Path(run_dir) / metrics_files.FOLDER))
        )
    except OSError:
        return False


def results_of(st: track.RunStatus, **options: Any) -> Results:
    """``combine`` for a status already in hand (``nexa sweep`` and ``wait`` have one)."""
    metric, mode = search_defaults(st, options.pop("metric", None), options.pop("mode", None))
    return combine([read_run(st)], metric=metric, mode=mode or "min", **options)
