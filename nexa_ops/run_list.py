"""``nexa runs``: the runs under the runs folder, newest first, each summed up in one line.

Read-only and fast enough for hundreds of runs: each run is summed up from its own folder
(the manifest, the task records, a local run's runner) and its cost manifest as last
reconciled; nothing is reconciled. Slurm is asked at most once for the whole list, and only
when a Slurm run has tasks without an end record: whether their jobs are still queued (one
``squeue``). Without an answer (no Slurm here) such tasks count as pending or running from
their records. ``nexa status RUN`` asks Slurm everything about one run.
"""

import calendar
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, TextIO, Tuple

from . import runs
from .config import NexaConfig
from .cost.book import manifest_path, manifest_problem, read_json
from .errors import ConfigError, NexaError
from .runs import BUCKETS, bucket, current_records, record_state
from .structs import mutable
from .sweep import rungs
from .tools import slurm

#: What ``--state`` selects: a run's overall state.
RUN_STATES = ("planned", "pending", "running", "done", "failed")


@mutable
class RunSummary:
    run_id: str
    name: str
    campaign: Optional[str]
    backend: str  # slurm | local | launch... | planned
    state: str  # one of RUN_STATES
    tasks: int
    buckets: Dict[str, int]  # pending / running / done / failed task counts
    created: float  # when it was submitted (or planned), seconds since the epoch
    run_dir: Path
    actual_usd: Optional[float] = None  # from the cost manifest, as last reconciled
    estimated_usd: Optional[float] = None
    cost_status: Optional[str] = None

    def to_json(self, now: Optional[float] = None) -> Dict[str, Any]:
        now = time.time() if now is None else now
        return {
            "run_id": self.run_id,
            "name": self.name,
            "campaign": self.campaign,
            "backend": self.backend,
            "state": self.state,
            "tasks": self.tasks,
            "buckets": dict(self.buckets),
            "actual_usd": self.actual_usd,
            "estimated_usd": self.estimated_usd,
            "cost_status": self.cost_status,
            "created": runs.now_iso(self.created),
            "age_seconds": round(max(0.0, now - self.created), 1),
            "run_dir": str(self.run_dir),
        }


@mutable
class RunList:
    runs: List[RunSummary]
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (folder, why) of damaged run folders


def run_state(backend: str, buckets: Dict[str, int]) -> str:
    """A run's overall state from its tasks' buckets."""
    if backend == "planned":
        return "planned"
    if buckets["running"] or (buckets["pending"] and (buckets["done"] or buckets["failed"])):
        return "running"
    if buckets["pending"]:
        return "pending"
    return "failed" if buckets["failed"] else "done"


def task_buckets(run: runs.Run, records: Dict[int, Dict[str, Any]], queued: Optional[Set[str]]) -> Dict[str, int]:
    """Pending / running / done / failed counts of a run's tasks from its records (pure)."""
    return count_buckets(task_bucket_map(run, records, queued))


def count_buckets(per_task: Dict[int, str]) -> Dict[str, int]:
    """``task_bucket_map``'s buckets counted (pure)."""
    out = dict.fromkeys(BUCKETS, 0)
    for which in per_task.values():
        out[which] += 1
    return out


def task_bucket_map(run: runs.Run, records: Dict[int, Dict[str, Any]], queued: Optional[Set[str]]) -> Dict[int, str]:
    """Each task's bucket (pending / running / done / failed) from its records (pure).

    ``queued``: the array job ids Slurm has in its queue (None: unknown). A Slurm task
    without an end record whose job left the queue will never get one: failed (UNKNOWN),
    as ``status`` says. A local task without one whose runner is gone: failed (INTERRUPTED).
    """
    out: Dict[int, str] = {}
    where = run.slots()
    gone = run.backend == "local" and runs.runner_state(run.manifest) == runs.RUNNER_GONE
    for index in task_indices(run):
        slot = where.get(index)
        start, end = current_records(records.get(index, {}), slot)
        if end:
            out[index] = bucket(record_state(end, run.warn_signal))
        elif run.backend == "planned":
            out[index] = "pending"
        elif gone or (run.backend == "slurm" and queued is not None and (slot is None or slot.job_id not in queued)):
            out[index] = "failed"
        else:
            out[index] = "running" if start else "pending"
    return out


def halving_running(run: runs.Run, buckets: Dict[int, str], queued: Optional[Set[str]]) -> bool:
    """Whether a halving run whose submitted tasks have all ended still has rungs to come
    (its promotion job deciding, or the next rung being submitted): the run folder and, for
    the promotion jobs, the queue (``queued``; a job not in it has ended), no other call."""
    schedule = rungs.run_schedule(run)
    if schedule is None or run.backend == "planned":
        return False
    jobs = rungs.promotion_jobs(run.manifest, rungs.read_decisions(run.path))
    known = {job: ("RUNNING" if queued is not None and job in queued else None) for job in jobs}
    return not rungs.status(run.path, schedule, run.manifest, buckets, known=known).finished


def task_indices(run: runs.Run) -> Sequence[int]:
    """The run's tasks: a halving run's are those of its submitted rungs (as ``status`` shows)."""
    schedule = rungs.run_schedule(run)
    return rungs.task_indices(schedule, run.manifest) if schedule is not None else range(run.count)


def launch_buckets(manifest: Dict[str, Any], queued: Optional[Set[str]], cost_status: Optional[str]) -> Dict[str, int]:
    """A ``nexa launch`` run is one task: its outcome from the manifest (the exit code, or the
    Slurm state ``--wait`` recorded), else from the queue and the cost manifest (pure)."""
    out = dict.fromkeys(BUCKETS, 0)
    state, code = manifest.get("state"), manifest.get("exit_code")
    jobs = [str(j) for j in manifest.get("job_ids") or []]
    if isinstance(state, str) and state:
        which = bucket(state)
    elif type(code) is int:
        which = "done" if code == 0 else "failed"
    elif manifest.get("error"):
        which = "failed"
    elif manifest.get("backend") == "slurm" and jobs and queued is not None and not any(j in queued for j in jobs):
        which = "done" if cost_status == "finished" else "failed"  # left the queue, outcome unrecorded: as status says
    else:
        which = "running"
    out[which] = 1
    return out


def _created(run: runs.Run) -> float:
    text = run.manifest.get("submitted_at")
    if isinstance(text, str):
        try:
            return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            pass
    for path in (run.path / runs.SPEC, run.path / runs.MANIFEST, run.path):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _cost(runs_dir: Path, run_id: str) -> Dict[str, Any]:
    try:
        doc = read_json(manifest_path(runs_dir, run_id))
    except (OSError, ValueError):
        return {}
    return {} if manifest_problem(doc) else doc


def list_runs(
    config: NexaConfig,
    *,
    campaign: Optional[str] = None,
    state: Optional[str] = None,
    limit: Optional[int] = None,
    err: Optional[TextIO] = None,
) -> RunList:
    """The runs under ``config.runs_dir``, newest first.

    Args:
        config: the project's ``NexaConfig``.
        campaign: only runs of this campaign.
        state: only runs in this overall state (``planned``, ``pending``, ``running``, ``done``,
            ``failed``).
        limit: at most this many runs (the newest).
        err: where a damaged run folder is reported (it is skipped; default: stderr).

    Returns:
        ``RunList``: ``runs`` (``RunSummary`` each) and ``skipped`` folders.

    Raises:
        ConfigError: a ``state`` that is not one of ``RUN_STATES``.
    """
    if state is not None and state not in RUN_STATES:
        raise ConfigError(f"--state: expected one of {', '.join(RUN_STATES)}, got {state!r}")
    loaded: List[Tuple[float, runs.Run]] = []
    skipped: List[Tuple[str, str]] = []
    for path in runs.run_dirs(config.runs_dir):
        try:
            run = runs.load_run(path)
        except ConfigError as exc:
            skipped.append((str(path), str(exc)))
            print(f"nexa: warning: skipped: {exc}", file=err or sys.stderr)
            continue
        if campaign is not None and (run.manifest.get("campaign") or run.spec.get("campaign")) != campaign:
            continue
        loaded.append((_created(run), run))
    loaded.sort(key=lambda item: (item[0], item[1].path.name), reverse=True)
    queued: Optional[Set[str]] = None
    asked = False
    out: List[RunSummary] = []
    for created, run in loaded:
        if limit is not None and len(out) >= limit:
            break
        launch = run.manifest.get("kind") == "launch"
        records = {} if launch else runs.task_records(run.path)
        unended = launch and run.manifest.get("exit_code") is None or any("end" not in records.get(i, {}) for i in task_indices(run))
        if run.backend == "slurm" and not asked and (unended or run.halving):
            asked = True  # a task may lack an end record, a promotion job decide: one squeue for the whole list
            try:
                queued = slurm.queued_jobs()
            except NexaError:
                queued = None
        cost = _cost(config.runs_dir, run.run_id)
        if launch:
            counts = launch_buckets(run.manifest, queued, cost.get("status"))
            overall = run_state(run.backend, counts)
        else:
            per_task = task_bucket_map(run, records, queued)
            counts = count_buckets(per_task)
            overall = run_state(run.backend, counts)
            if run.halving and overall in ("done", "failed") and halving_running(run, per_task, queued):
                overall = "running"  # its tasks so far have ended, but rungs are still to come
        summary = RunSummary(
            run_id=run.run_id,
            name=run.name,
            campaign=run.manifest.get("campaign") or run.spec.get("campaign"),
            backend=run.backend,
            state=overall,
            tasks=sum(counts.values()),
            buckets=counts,
            created=created,
            run_dir=run.path,
        )
        if state is not None and summary.state != state:
            continue
        summary.actual_usd, summary.estimated_usd = cost.get("actual_usd"), cost.get("estimated_usd")
        summary.cost_status = cost.get("status")
        out.append(summary)
    return RunList(out, skipped)


def format_age(seconds: float) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``: how long ago, at a glance."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
