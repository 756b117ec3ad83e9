"""Act on a submitted run: cancel it, or submit its failed tasks again.

Both start from ``track.status`` (what each task is now) and change the run only through
Slurm and the run folder's one manifest writer, so ``status`` sees the result at once. A
local run is acted on through its runner: ``cancel`` asks it to stop tasks (it records them),
``resubmit --local`` runs the failed ones again here, this process being the new runner.
"""

import os
import shlex
import signal
import time
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from . import runs, track
from .config import NexaConfig, load_config
from .errors import ConfigError, Refused
from .runs import RunRef
from .structs import mutable
from .tools import slurm

# The local runner (sweep.local) and the cost book are imported by the paths that use them
# (a local run's cancel, resubmit): cancelling a Slurm run needs neither, and together they
# are a tenth of its start-up.

#: How long ``cancel`` of a local run waits for the runner to record the cancelled tasks,
#: beyond the runner's own grace period (``sweep.local.GRACE``).
CANCEL_WAIT_EXTRA = 5.0


@mutable
class CancelResult:
    run_id: str
    job_ids: List[str]  # what scancel was given
    finished: List[int] = field(default_factory=list)  # asked-for tasks that had already ended
    tasks: List[int] = field(default_factory=list)  # a local run: the tasks its runner was asked to cancel
    runner: Optional[int] = None  # a local run: the runner's pid that was signalled
    unrecorded: List[int] = field(default_factory=list)  # ... and those not yet recorded when it stopped waiting


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

    A local run's runner is asked instead (a request in the run folder and SIGUSR1): it stops
    the tasks and records them CANCELLED; this waits up to its grace period plus
    ``CANCEL_WAIT_EXTRA`` seconds for that.

    Raises:
        ConfigError: no such run or task. Refused: a run that was never submitted, or a local
        run whose runner is on another host or was never recorded. ToolError: scancel failed.
    """
    st = track.status(run, config=config)
    if st.backend == "local":
        return _cancel_local(st, task, dry_run)
    _need_slurm(st, "cancel")
    if task is None and st.schedule is not None:  # a halving run: stop the schedule too
        # Imported here: only a halving run needs it, and the halving modules are a tenth of
        # the start-up of every other cancel.
        from .sweep.halving import cancel_schedule

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


def _cancel_local(st: track.RunStatus, task: Optional[int], dry_run: bool) -> CancelResult:
    from .sweep import local as local_runner  # lazy: see the imports

    manifest = runs.load_run(st.run_dir).manifest
    if task is not None:
        row = track.task_row(st, task)
        if row.bucket in ("done", "failed"):
            return CancelResult(st.run_id, [], [row.index])
        targets = [row.index]
    else:
        targets = [t.index for t in st.tasks if t.bucket in ("pending", "running")]
        if not targets:
            return CancelResult(st.run_id, [])
    state = runs.runner_state(manifest)
    if state is None:
        raise Refused(f"{st.run_id}: ran locally without a recorded runner (an older nexa): nothing to signal")
    if state == runs.RUNNER_ELSEWHERE:
        raise Refused(f"{st.run_id}: its {runs.runner_text(manifest)} is not this host: run nexa cancel there")
    pid = int(manifest["runner"]["pid"])
    if state == runs.RUNNER_GONE:  # pragma: no cover - status shows its tasks INTERRUPTED: no target left
        return CancelResult(st.run_id, [])
    if dry_run:
        print(f"kill -{local_runner.CANCEL_SIGNAL} {pid}")
        return CancelResult(st.run_id, [], tasks=targets, runner=pid)
    request = local_runner.request_cancel(st.run_dir, task)
    try:
        os.kill(pid, getattr(signal, f"SIG{local_runner.CANCEL_SIGNAL}"))
    except ProcessLookupError:
        request.unlink()
        return CancelResult(st.run_id, [])  # it ended meanwhile, recording its tasks
    deadline = time.monotonic() + local_runner.GRACE + CANCEL_WAIT_EXTRA
    left = list(targets)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        now = {t.index: t for t in track.status(str(st.run_dir)).tasks}  # a halving run's indices skip
        left = [i for i in left if i in now and now[i].bucket in ("pending", "running")]
    return CancelResult(st.run_id, [], tasks=targets, runner=pid, unrecorded=left)


@mutable
class ResubmitResult:
    run_id: str
    indices: List[int]
    chunks: List[Dict[str, Any]]
    job_ids: List[str]
    local_results: List[Any] = field(default_factory=list)  # --local: how each task ended this time
    stopped_by: Optional[str] = None  # --local: the signal that stopped the rerun (or "cancel")
    warnings: List[str] = field(default_factory=list)


def resubmit_failed(
    run: RunRef,
    dry_run: bool = False,
    *,
    config: Optional[NexaConfig] = None,
    local: bool = False,
    progress: Optional[Callable[[Any], None]] = None,
) -> ResubmitResult:
    """Submit the failed, timed-out and cancelled tasks again as one array (``--array=3,7,9``).

    Indices above MaxArraySize go in further submissions with an offset (task = offset +
    array index), exactly like the first submission's chunks. Each accepted submission is
    added to the same manifest (``chunks``, ``job_ids``, ``resubmits``) at once.

    With ``local``, a local run's failed, interrupted and cancelled tasks run again here
    instead, in the foreground, with this process as the run's runner (see ``_rerun_here``).

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        dry_run: print the sbatch commands (``local``: each task's command) instead.
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).
        local: rerun a local run's failed tasks on this machine.
        progress: with ``local``, called with the runner's ``Progress`` after every change.

    Returns:
        ``ResubmitResult`` with the indices resubmitted and the new job ids (all empty when
        no task failed); with ``local``, how each rerun task ended.

    Raises:
        ConfigError: no such run, or its sbatch script is gone. Refused: a local run without
        ``local`` (or a Slurm run with it); a local run whose runner still runs.
        ToolError: Slurm refused the submission.
    """
    cfg = config or load_config()
    st = track.status(run, config=cfg)
    if st.schedule is not None:
        raise ConfigError(f"{st.run_id}: a halving run: its failed trials are never promoted; nexa resume continues the schedule")
    if local or st.backend == "local":
        if st.backend != "local":
            kind = "was submitted to Slurm" if st.backend == "slurm" else "was not submitted"
            raise Refused(f"{st.run_id}: {kind}; --local reruns the tasks of a run that ran locally")
        if not local:
            raise Refused(f"{st.run_id}: ran locally; run its failed tasks again here with --local")
        return _rerun_here(st, cfg, dry_run, progress)
    _need_slurm(st, "resubmit")
    indices = st.failed
    if not indices:
        return ResubmitResult(st.run_id, [], [], [])
    from .cost.book import check_writable, manifest_path  # lazy: see the imports
    path = st.run_dir
    run_obj = runs.load_run(path)
    script = run_obj.script
    if script is None or not script.exists():
        raise ConfigError(f"{path}: the run's sbatch script is missing ({script})")
    foreign = runs.foreign_problem(path)  # its tasks would refuse to run: refuse before sbatch
    if foreign:
        raise Refused(f"{st.run_id}: not resubmitted: {foreign}")
    if not dry_run:
        for runs_dir in dict.fromkeys([cfg.runs_dir, path.parent]):
            if manifest_path(runs_dir, st.run_id).is_file():
                check_writable(runs_dir, st.run_id)
                break
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


def _rerun_here(st: track.RunStatus, cfg: NexaConfig, dry_run: bool, progress: Optional[Callable[[Any], None]]) -> ResubmitResult:
    """``resubmit --failed --local``: the previous attempts' records move to
    ``tasks/attempts/<i>.local.<n>.*`` (kept, and billed by reconcile like a requeued
    attempt) and their logs to ``logs/local_<i>.attempt<n>.*``, the cost manifest is
    reopened, and the tasks run here with this process as the runner, as ``sweep --local``
    ran them (its ``max_parallel`` and GPUs per task)."""
    from .cost.book import record_resubmission  # lazy: see the imports
    from .sweep import local as local_runner

    path = st.run_dir
    run_obj = runs.load_run(path)
    manifest = run_obj.manifest
    state = runs.runner_state(manifest)
    if state == runs.RUNNER_ALIVE:
        raise Refused(f"{st.run_id}: still running ({runs.runner_text(manifest)}): wait for it, or nexa cancel it first")
    if state == runs.RUNNER_ELSEWHERE and any(t.bucket in ("pending", "running") for t in st.tasks):
        raise Refused(f"{st.run_id}: its {runs.runner_text(manifest)} may still be running it: rerun it there")
    indices = st.failed
    if not indices:
        return ResubmitResult(st.run_id, [], [], [])
    max_parallel = manifest.get("max_parallel") if type(manifest.get("max_parallel")) is int else None
    per_task = manifest.get("gpus_per_task") if type(manifest.get("gpus_per_task")) is int else 0
    slots, warning = local_runner.gpu_slots(per_task)
    result = ResubmitResult(st.run_id, indices, [], [], warnings=[warning] if warning else [])
    if dry_run:
        argv = {int(t["index"]): t.get("argv") or [] for t in run_obj.spec.get("tasks", []) if "index" in t}
        for i in indices:
            print(f"task {i}: {' '.join(shlex.quote(str(a)) for a in argv.get(i, []))}")
        return result
    manifest.setdefault("resubmits", []).append({"at": runs.now_iso(), "indices": indices, "job_ids": [], "backend": "local"})

    def book() -> Optional[Path]:
        """Keep the attempts being replaced, reopen the cost manifest (under the runner's
        signal handlers: a Ctrl-C here still ends with every task recorded)."""
        runs.keep_local_attempts(path, indices)
        for runs_dir in dict.fromkeys([cfg.runs_dir, path.parent]):
            found = record_resubmission(runs_dir, st.run_id, [], {})
            if found is not None:
                return found
        return None

    outcome = local_runner.run_tasks_here(path, manifest, indices, max_parallel, slots or [], cfg, book, progress)
    result.local_results, result.stopped_by = outcome.results, outcome.stopped_by
    return result


def _bill(cfg: NexaConfig, path: Path, run_id: str, chunk: Dict[str, Any], replaced: Dict[int, Dict[str, Any]]) -> None:
    """Add a resubmitted chunk to the run's cost manifest, in the runs folder of the project
    or, for a run planned with --out, beside the run folder."""
    from .cost.book import record_resubmission  # lazy: see the imports

    for runs_dir in dict.fromkeys([cfg.runs_dir, path.parent]):
        if record_resubmission(runs_dir, run_id, [chunk], replaced) is not None:
            return


def _need_slurm(st: track.RunStatus, what: str) -> None:
    if st.backend != "slurm":
        kind = "ran locally" if st.backend == "local" else "was not submitted"
        raise Refused(f"{st.run_id}: {kind}; only Slurm runs can {what}")
