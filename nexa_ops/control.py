"""Act on a submitted run: cancel it, or submit its failed tasks again.

Both start from ``track.status`` (what each task is now) and change the run only through
Slurm and the run folder's one manifest writer, so ``status`` sees the result at once.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import runs, track
from .config import NexaConfig, load_config
from .cost.book import record_resubmission
from .errors import ConfigError, Refused
from .runs import RunRef
from .sweep.halving import cancel_schedule
from .tools import slurm


@dataclass
class CancelResult:
    run_id: str
    job_ids: List[str]  # what scancel was given
    finished: List[int] = field(default_factory=list)  # asked-for tasks that had already ended


def cancel(run: RunRef, task: Optional[int] = None, dry_run: bool = False, *, config: Optional[NexaConfig] = None) -> CancelResult:
    """``scancel`` every job of the run, or one task's array element. Finished is not an error.
    A halving run is marked cancelled first, then its current rung and pending promotion job
    are cancelled: no later rung starts (``nexa resume`` continues it).

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        task: the task index to cancel (None: the whole run).
        dry_run: print the scancel command instead of running it.
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).

    Returns:
        ``CancelResult`` with the job ids (``123`` or ``123_4``) that were cancelled.

    Raises:
        ConfigError: no such run or task. Refused: a local run (only Slurm runs can be
        cancelled). ToolError: scancel failed.
    """
    st = track.status(run, config=config)
    _need_slurm(st, "cancel")
    if task is None and st.schedule is not None:  # a halving run: stop the schedule too
        return CancelResult(st.run_id, cancel_schedule(st.run_dir, dry_run=dry_run))
    if task is None:
        ids = list(st.job_ids)
        slurm.scancel(ids, dry_run=dry_run)
        return CancelResult(st.run_id, ids)
    row = track.task_row(st, task)
    if row.bucket in ("done", "failed") or not row.job_id:
        return CancelResult(st.run_id, [], [row.index])
    slurm.scancel([row.job_id], dry_run=dry_run)
    return CancelResult(st.run_id, [row.job_id])


@dataclass
class ResubmitResult:
    run_id: str
    indices: List[int]
    chunks: List[Dict[str, Any]]
    job_ids: List[str]


def resubmit_failed(run: RunRef, dry_run: bool = False, *, config: Optional[NexaConfig] = None) -> ResubmitResult:
    """Submit the failed, timed-out and cancelled tasks again as one array (``--array=3,7,9``).

    Indices above MaxArraySize go in further submissions with an offset (task = offset +
    array index), exactly like the first submission's chunks. Each accepted submission is
    added to the same manifest (``chunks``, ``job_ids``, ``resubmits``) at once.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        dry_run: print the sbatch commands instead of submitting.
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).

    Returns:
        ``ResubmitResult`` with the indices resubmitted and the new job ids (all empty when
        no task failed).

    Raises:
        ConfigError: no such run, or its sbatch script is gone. Refused: a local run.
        ToolError: Slurm refused the submission.
    """
    cfg = config or load_config()
    st = track.status(run, config=cfg)
    _need_slurm(st, "resubmit")
    if st.schedule is not None:
        raise ConfigError(f"{st.run_id}: a halving run: its failed trials are never promoted; nexa resume continues the schedule")
    indices = st.failed
    if not indices:
        return ResubmitResult(st.run_id, [], [], [])
    path = st.run_dir
    run_obj = runs.load_run(path)
    script = run_obj.script
    if script is None or not script.exists():
        raise ConfigError(f"{path}: the run's sbatch script is missing ({script})")
    limit = slurm.array_limit(cfg.cluster.max_array_size, dry_run)
    throttle = (run_obj.directive("array") or "").partition("%")[2]
    max_parallel = int(throttle) if throttle.isdigit() else None
    manifest = run_obj.manifest
    serial = len(manifest.get("resubmits", [])) + 1
    records, where = runs.task_records(path), run_obj.slots()
    replaced = {i: {**start, **end} for i in indices for start, end in [runs.current_records(records.get(i, {}), where.get(i))]}
    chunks: List[Dict[str, Any]] = []
    job_ids: List[str] = []
    entry = {"at": runs.now_iso(), "indices": indices, "job_ids": job_ids}
    for offset, elements in slurm.group_below_limit(indices, limit):
        submitted_at = time.time()
        options = [f"--array={slurm.list_spec(elements, max_parallel)}"]
        job_id = slurm.sbatch(str(script), options=options, args=[str(offset)], dry_run=dry_run)
        chunk = {
            "offset": offset,
            "count": len(elements),
            "job_id": job_id,
            "array": slurm.list_spec(elements),
            "resubmit": serial,
            "submitted_at": submitted_at,
        }
        chunks.append(chunk)
        job_ids.append(job_id)
        if not dry_run:
            runs.add_submission(path, manifest, chunk, entry)
            _bill(cfg, path, st.run_id, chunk, {offset + e: replaced[offset + e] for e in elements})
    return ResubmitResult(st.run_id, indices, chunks, job_ids)


def _bill(cfg: NexaConfig, path: Path, run_id: str, chunk: Dict[str, Any], replaced: Dict[int, Dict[str, Any]]) -> None:
    """Add a resubmitted chunk to the run's cost manifest, in the runs folder of the project
    or, for a run planned with --out, beside the run folder."""
    for runs_dir in dict.fromkeys([cfg.runs_dir, path.parent]):
        if record_resubmission(runs_dir, run_id, [chunk], replaced) is not None:
            return


def _need_slurm(st: track.RunStatus, what: str) -> None:
    if st.backend != "slurm":
        kind = "ran locally" if st.backend == "local" else "was not submitted"
        raise Refused(f"{st.run_id}: {kind}; only Slurm runs can {what}")
