"""Reconcile: turn what ran into actual GPU-hours and cost in each run's cost manifest.

From ``sacct`` where the cluster has accounting, else from the worker's task records (and
the attempts that requeues and resubmissions replaced). Slurm is asked at most once per
call, however many manifests are reconciled.
"""

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from .. import runs
from ..errors import ConfigError, NexaError
from ..structs import mutable
from ..tools import slurm
from ..tools.slurm import SacctRow
from .actual import actual_from_records, actual_from_sacct
from .book import PREFIX, TERMINAL, manifest_path, manifest_problem, manifests_dir, read_json, scan, update_manifest, warn


@mutable
class Reconciled:
    """One manifest after reconciling."""

    run_id: str
    status: str
    tasks: int
    done: int
    estimated_usd: Optional[float]
    actual_usd: Optional[float]
    actual_gpu_hours: Optional[float]
    source: Optional[str]
    path: Path


def _run_dir(doc: Dict[str, Any], runs_dir: Path) -> Path:
    recorded = doc.get("run_dir")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return Path(runs_dir) / str(doc.get("run_id"))  # the runs folder was moved or synced


class SlurmAnswers:
    """Lazy, once-per-call answers from Slurm shared by every manifest being reconciled."""

    def __init__(self, use_sacct: Optional[bool]):
        self.use_sacct = use_sacct  # None: try, and stop trying after the first "disabled"
        self._live: Optional[set] = None

    def sacct(self, job_ids: List[str]) -> Optional[List[SacctRow]]:
        if self.use_sacct is False or not job_ids:
            return None
        rows = slurm.sacct(job_ids)
        if rows is None:
            self.use_sacct = False
        return rows

    def gone(self, job_ids: List[str]) -> Optional[bool]:
        """True when none of the jobs is queued or running; None when Slurm cannot say."""
        if not job_ids:
            return None
        if self._live is None:
            try:
                self._live = slurm.queued_jobs()
            except NexaError:
                return None
        return not any(j in self._live for j in job_ids)


def reconcile_manifest(
    path: Path, runs_dir: Path, answers: Optional[SlurmAnswers] = None, *, dry_run: bool = False
) -> Tuple[Dict[str, Any], Reconciled]:
    """Actual figures for one manifest, written back under its lock (unless ``dry_run``)."""
    answers = answers or SlurmAnswers(None)

    def change(doc: Dict[str, Any]) -> Dict[str, Any]:
        problem = manifest_problem(doc)
        if problem:
            raise ConfigError(problem, str(path))
        return _reconciled(doc, runs_dir, answers)

    if dry_run:
        doc = change(read_json(path))
    else:
        doc = update_manifest(path, change)
    return doc, _summary(doc, path)


def _reconciled(doc: Dict[str, Any], runs_dir: Path, answers: SlurmAnswers) -> Dict[str, Any]:
    tasks = int(doc.get("tasks") or 0)
    gpus_per_task = int(doc.get("nodes") or 1) * int(doc.get("gpus_per_node") or 0)
    rate = doc.get("rate_usd_per_gpu_hour")
    job_ids = [str(j) for j in doc.get("job_ids") or []]
    actual = None
    if doc.get("backend") == "slurm" and job_ids:
        rows = answers.sacct(job_ids)
        if rows:
            actual, _ = actual_from_sacct(rows, runs.job_offsets(doc), gpus_per_task, rate or 0.0, array=doc.get("kind") != "launch")
    if actual is None or actual.done < tasks:
        run_dir = _run_dir(doc, runs_dir)
        records = runs.task_records(run_dir)
        if "earlier_attempts_gpu_hours" in doc:
            records = runs.current_task_records(records, doc)
        recorded = actual_from_records(records, gpus_per_task, rate or 0.0)
        # Attempts the new ones replaced: resubmitted (kept by resubmit) and requeued (kept by
        # the array script in tasks/attempts/). They ran, so they are billed.
        requeued = actual_from_records(dict(enumerate(runs.attempt_records(run_dir))), gpus_per_task, 0.0)
        extra = float(doc.get("earlier_attempts_gpu_hours") or 0.0) + requeued.gpu_hours
        if extra:
            recorded = replace(recorded, gpu_hours=recorded.gpu_hours + extra, usd=(recorded.gpu_hours + extra) * (rate or 0.0))
        if actual is None or recorded.done > actual.done:
            actual = recorded  # slurmdbd records asynchronously: it can lag behind the run's own records
    gone = answers.gone(job_ids) if doc.get("backend") == "slurm" else None  # None: Slurm cannot say
    if doc.get("backend") == "local" and _local_runner_gone(_run_dir(doc, runs_dir)):
        gone = True  # its runner died without recording every task: nothing more will come
    if tasks and actual.done >= tasks and gone is not False:  # a queued job may still rerun a task
        status = "finished" if actual.failed == 0 else "failed"
    elif gone:
        status = "incomplete"  # the jobs left the queue with tasks unrecorded (killed, lost)
    elif doc.get("backend") == "local" and doc.get("status") in TERMINAL:
        status = doc["status"]
    else:
        status = "running" if (actual.done or actual.running) else doc.get("status") or "submitted"
    doc.update(
        status=status,
        actual_gpu_hours=round(actual.gpu_hours, 6),
        actual_usd=round(actual.usd, 6) if rate is not None else None,
        actual_source=actual.source,
        tasks_ok=actual.ok,
        tasks_failed=actual.failed,
        reconciled_at=runs.now_iso(),
    )
    return doc


def _local_runner_gone(run_dir: Path) -> bool:
    """A local run whose recorded runner has ended (see ``runs.runner_state``)."""
    try:
        manifest = runs.read_manifest(run_dir)
    except (OSError, ValueError):
        return False
    return type(manifest) is dict and runs.runner_state(manifest) == runs.RUNNER_GONE


def _summary(doc: Dict[str, Any], path: Path) -> Reconciled:
    return Reconciled(
        run_id=str(doc.get("run_id")),
        status=str(doc.get("status")),
        tasks=int(doc.get("tasks") or 0),
        done=int(doc.get("tasks_ok") or 0) + int(doc.get("tasks_failed") or 0),
        estimated_usd=doc.get("estimated_usd"),
        actual_usd=doc.get("actual_usd"),
        actual_gpu_hours=doc.get("actual_gpu_hours"),
        source=doc.get("actual_source"),
        path=path,
    )


def reconcile(
    runs_dir: Path,
    run_ids: Optional[Sequence[str]] = None,
    *,
    force: bool = False,
    use_sacct: Optional[bool] = None,
    dry_run: bool = False,
    err: TextIO = sys.stderr,
) -> List[Reconciled]:
    """Reconcile the given runs, or every manifest not yet finished (``force``: all of them).

    Actual GPU-hours and cost come from ``sacct`` where the cluster has accounting, else from
    the worker's task records; each manifest is updated under its lock. Files in the folder
    that are not valid JSON or not nexa cost manifests are reported on ``err`` and skipped.

    Args:
        runs_dir: the runs folder whose ``manifests/`` holds the ``cost_<run_id>.json`` files.
        run_ids: only these runs, reconciled even when already finished (default None: every
            manifest in the folder).
        force: also re-reconcile manifests already ``finished``/``failed``/``incomplete`` (default False).
        use_sacct: True/False to use accounting or not; None (default) tries ``sacct`` and falls back
            to the worker's records when it is missing or disabled.
        dry_run: compute the figures without writing the manifests (default False).
        err: where warnings about skipped files go (default stderr).

    Returns:
        List[Reconciled]: one per manifest, with ``run_id``, ``status`` (``submitted``, ``running``,
        ``finished``, ``failed`` or ``incomplete``), ``tasks``, ``done``, ``estimated_usd``,
        ``actual_usd``, ``actual_gpu_hours``, ``source`` (``sacct`` or ``worker``) and ``path``.

    Raises:
        ConfigError: a run in ``run_ids`` has no cost manifest.
        NexaError: the manifests folder cannot be listed.
    """
    answers = SlurmAnswers(use_sacct)
    out = []
    if run_ids:
        paths = [manifest_path(runs_dir, r) for r in run_ids]
        for p in paths:
            if not p.is_file():
                raise ConfigError(f"no cost manifest for run {p.name[len(PREFIX) : -5]!r}", str(p))
    else:
        paths = [Path(p) for p, _ in scan(manifests_dir(runs_dir), err)]
    for path in paths:
        try:
            doc = read_json(path)
        except (OSError, ValueError) as exc:
            warn(err, path, f"skipped: {exc}")
            continue
        problem = manifest_problem(doc)
        if problem:
            warn(err, path, f"skipped: {problem}")
            continue
        if doc.get("status") in TERMINAL and not force and not run_ids:
            out.append(_summary(doc, path))
            continue
        out.append(reconcile_manifest(path, runs_dir, answers, dry_run=dry_run)[1])
    return out
