"""Successive halving over a sweep's grid, on Slurm with no server, or here (``docs/halving.md``).

``nexa sweep --submit`` of a sweep file with ``[search]`` submits rung 0 (every configuration
at the smallest budget) as one job array and a promotion job that waits for it
(``--dependency=afterany``); each promotion job decides its rung and submits the next one and
its own successor (``promote.py``). ``--local`` runs the same rungs one after another here.
``cancel`` stops the schedule (no later rung starts) and ``resume`` continues it from the last
complete rung without running a finished task again.
"""

from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .. import pipeline, runs, track
from ..config import NexaConfig, SweepDefinition, load_config
from ..cost.book import check_writable, manifest_document, record_resubmission, write_cost_manifest
from ..cost.reconcile import reconcile_manifest
from ..errors import ConfigError, NexaError
from ..structs import mutable
from ..tools import slurm
from . import promote, rungs
from .local import Progress, TaskResult, gpu_slots, run_tasks_here
from .plan import Chunk, SweepArtifacts, log_dir_of
from .search import Decision, Schedule


def search_fields(artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig, limit: Optional[int]) -> Dict[str, Any]:
    """What a halving run's manifest adds to a sweep's: the schedule and everything the
    promotion job needs (it reads no nexa.toml): the promotion script, MaxArraySize, the
    array throttle, the log folder and the runs folder holding the cost manifest; and its
    ``rungs`` (none submitted yet)."""
    assert artifacts.schedule is not None
    search = {
        "schedule": artifacts.schedule.as_json(),
        "promote_script": str(artifacts.script_paths[1]),
        "array_limit": limit,
        "max_parallel": defn.resources.max_parallel,
        "log_dir": str(log_dir_of(config, artifacts.run_dir)),
        "runs_dir": str(config.runs_dir),
    }
    return {"search": search, "rungs": []}


def _cost_document(
    artifacts: SweepArtifacts, defn: SweepDefinition, backend: str, status: str, chunks: List[Dict[str, Any]]
) -> Dict[str, Any]:
    assert artifacts.cost is not None, "plan_sweep estimates every plan"
    return manifest_document(
        artifacts.cost,
        run_id=artifacts.run_id,
        name=defn.name,
        kind="sweep",
        campaign=defn.campaign,
        run_dir=artifacts.run_dir,
        job_ids=[c["job_id"] for c in chunks],
        chunks=chunks,
        backend=backend,
        status=status,
    )


# --- on Slurm -----------------------------------------------------------------------------------


def check_promotion(artifacts: SweepArtifacts) -> None:
    """``sbatch --test-only`` of the promotion script: a promotion job Slurm would refuse
    (say, a bad ``promote_partition``) stops the sweep before rung 0 is submitted."""
    slurm.sbatch_test_only(str(artifacts.script_paths[1]))


def submit_halving(
    artifacts: SweepArtifacts,
    defn: SweepDefinition,
    config: NexaConfig,
    manifest: Dict[str, Any],
    limit: int,
    *,
    dry_run: bool = False,
) -> SweepArtifacts:
    """Submit rung 0 (chunked below MaxArraySize, or cut at a ``corr`` upstream's chunks, each
    waiting on the ``--after`` runs as ``pipeline.plan`` says) and its promotion job.

    ``submit.submit_sweep`` has done a sweep's checks (a dry run's plan, ``--out`` reuse,
    ``max_cost`` over the whole schedule, the cost book) and made ``manifest``. The run
    manifest and the cost manifest are written after every accepted array, as for any
    sweep; a refused first array leaves neither. A dry run prints (and keeps in
    ``artifacts.commands``) the sbatch commands and writes nothing.
    """
    schedule = artifacts.schedule
    assert schedule is not None and artifacts.cost is not None
    manifest.update(search_fields(artifacts, defn, config, limit))
    groups = [(s.offset, list(s.indices), list(s.parts)) for s in pipeline.plan(schedule.n, artifacts.upstreams, limit)]
    billed: List[Dict[str, Any]] = []

    def book(chunk: Dict[str, Any], replaced: Dict[int, Dict[str, Any]]) -> None:
        billed.append({k: chunk[k] for k in ("offset", "count", "job_id", "array", "submitted_at") if k in chunk})
        write_cost_manifest(config.runs_dir, _cost_document(artifacts, defn, "slurm", "submitted", billed))

    commands = artifacts.commands if dry_run else None
    entry = promote.submit_rung(
        artifacts.run_dir, manifest, 0, range(schedule.n), by="nexa sweep", dry_run=dry_run, on_chunk=book, groups=groups, commands=commands
    )
    artifacts.job_ids = list(entry["job_ids"])
    if dry_run:
        artifacts.chunks = [Chunk(o, len(e), dependency=",".join(p) or None) for o, e, p in groups]
        promote.submit_promotion(artifacts.run_dir, manifest, entry, artifacts.job_ids, dry_run=True, commands=commands)
        return artifacts
    chunks = manifest.get("chunks") or []
    artifacts.chunks = [Chunk(c["offset"], c["count"], c["job_id"], c.get("array"), c.get("dependency")) for c in chunks]
    try:
        artifacts.promote_job_ids = [promote.submit_promotion(artifacts.run_dir, manifest, entry, artifacts.job_ids)]
    except NexaError as exc:  # rung 0 runs: say so, and let status and resume see it at once
        entry.pop("submitting_since", None)
        runs.set_rung(artifacts.run_dir, manifest, entry)
        first = str(exc).splitlines()[0]
        raise NexaError(
            f"rung 0 is submitted (job {', '.join(artifacts.job_ids)}) but its promotion job was refused: {first}; "
            f"nexa resume {artifacts.run_dir} submits it"
        ) from None
    artifacts.submitted = True
    return artifacts


# --- here -----------------------------------------------------------------------------------------


def trial_env(run_dir: Path, schedule: Schedule) -> Callable[[int], Dict[str, str]]:
    """What the array script sets for a halving task, for local runs: rung, trial, folder."""

    def env(index: int) -> Dict[str, str]:
        rung, trial = schedule.locate(index)
        folder = Path(run_dir) / runs.TRIALS / str(trial)
        folder.mkdir(parents=True, exist_ok=True, mode=runs.RUN_DIR_MODE)
        return {"NEXA_RUNG": str(rung), "NEXA_TRIAL_ID": str(trial), "NEXA_TRIAL_DIR": str(folder)}

    return env


@mutable
class LocalRungs:
    """What the local rungs did: every task run, each rung's decision, and the signal (or
    ``cancel``) that stopped them."""

    results: List[TaskResult] = field(default_factory=list)
    decisions: List[Decision] = field(default_factory=list)
    stopped_by: Optional[str] = None


def run_halving_locally(
    artifacts: SweepArtifacts,
    defn: SweepDefinition,
    config: NexaConfig,
    manifest: Dict[str, Any],
    gpus: Optional[List[str]],
    book: Callable[[], Optional[Path]],
    progress: Optional[Callable[[Progress], None]] = None,
) -> SweepArtifacts:
    """Run the rungs one after another here, through the same worker, runner and decision
    as any local run (``submit.run_sweep_locally`` made ``manifest`` and ``book``); then
    reconcile the run's cost."""
    assert artifacts.schedule is not None
    manifest.update(search_fields(artifacts, defn, config, None))
    done = _local_rungs(artifacts.run_dir, manifest, 0, list(range(artifacts.schedule.n)), config, gpus, book, progress)
    artifacts.local_results, artifacts.decisions, artifacts.stopped_by = done.results, done.decisions, done.stopped_by
    return artifacts


def _local_rungs(
    run_dir: Path,
    manifest: Dict[str, Any],
    rung: int,
    trials: List[int],
    config: NexaConfig,
    gpus: Optional[List[str]],
    book: Callable[[], Optional[Path]],
    progress: Optional[Callable[[Progress], None]] = None,
    skip: Optional[set] = None,
) -> LocalRungs:
    """Run ``rung`` with ``trials`` (but the task indices in ``skip``, already done), decide
    it, and go on until a decision is final. Each rung runs with this process as the run's
    runner (``local.run_tasks_here``: every task recorded, Ctrl-C, SIGTERM and ``nexa cancel``
    included); a rung stopped so marks the run cancelled (``resume`` continues it)."""
    schedule = promote.schedule_in(manifest)
    search = manifest["search"]
    env = trial_env(run_dir, schedule)
    out = LocalRungs()
    cost: List[Optional[Path]] = []

    def booked() -> Optional[Path]:
        cost[:] = [book()]
        return cost[0]

    try:
        while True:
            entry = promote.entry_of(manifest, rung)
            if entry is None:
                entry = {
                    "rung": rung,
                    "budget": schedule.rungs[rung].budget,
                    "trials": sorted(trials),
                    "submitted_at": runs.now_iso(),
                    "by": "nexa sweep --local",
                }
                manifest.setdefault("rungs", []).append(entry)  # written with the runner, next
            indices = [schedule.index(rung, t) for t in entry["trials"] if schedule.index(rung, t) not in (skip or ())]
            ran = run_tasks_here(run_dir, manifest, indices, search.get("max_parallel"), gpus, config, booked, progress, env_of=env)
            out.results.extend(ran.results)
            if ran.stopped_by is not None:
                out.stopped_by = ran.stopped_by
                how = {"cancel": "nexa cancel", "INT": "interrupted (Ctrl-C)"}.get(ran.stopped_by, f"interrupted (SIG{ran.stopped_by})")
                _mark_cancelled(run_dir, how)
                return out
            step = promote.advance(run_dir, rung, by="nexa sweep --local", submit=False)
            assert step.decision is not None
            out.decisions.append(step.decision)
            if step.decision.final:
                if cost and cost[0] is not None:  # the schedule's real task count is settled now
                    reconcile_manifest(cost[0], config.runs_dir)
                return out
            rung, trials, skip = rung + 1, step.decision.promoted, None
            manifest = runs.read_manifest(run_dir)
    except KeyboardInterrupt:  # between rungs, outside the runner's signal handlers
        _mark_cancelled(run_dir, "interrupted (Ctrl-C)")
        raise


def _mark_cancelled(run_dir: Path, how: str) -> None:
    with rungs.locked(run_dir):
        current = runs.read_manifest(run_dir)
        current["cancelled"] = {"at": runs.now_iso(), "user": runs.user(), "by": how}
        runs.write_manifest(run_dir, current)


# --- cancel -------------------------------------------------------------------------------------


def cancel_schedule(run_dir: Path, *, dry_run: bool = False) -> List[str]:
    """Stop a halving run: mark it cancelled in the manifest (a promotion job that is already
    running sees it under the lock and stops), then ``scancel`` the arrays and the promotion
    job of every undecided rung. Returns the job ids given to scancel (none when the schedule
    has already ended)."""
    with rungs.locked(run_dir):
        manifest = runs.read_manifest(run_dir)
        decisions = rungs.read_decisions(run_dir)
        if any(d.final for d in decisions.values()):
            return []
        ids: List[str] = []
        for entry in manifest.get("rungs") or []:
            if entry.get("rung") in decisions:
                continue
            ids.extend(str(j) for j in entry.get("job_ids") or [])
            if entry.get("promote_job_id"):
                ids.append(str(entry["promote_job_id"]))
        # A promotion job that decided its rung has submitted the next one before releasing the
        # lock, or has failed: holding the lock, the manifest above is the whole truth.
        ids = [i for i in dict.fromkeys(ids) if i]
        if not dry_run:
            manifest["cancelled"] = {"at": runs.now_iso(), "user": runs.user()}
            runs.write_manifest(run_dir, manifest)
        slurm.scancel(ids, dry_run=dry_run)
        return ids


# --- resume -------------------------------------------------------------------------------------


@mutable
class ResumeResult:
    """What ``resume`` did: ``action`` is ``nothing`` (the schedule is running or has ended),
    ``resubmitted`` (tasks of the current rung again, and its promotion job), ``promotion``
    (a new promotion job for the current rung), ``decided`` (the rung decided here, the next
    one submitted) or ``local`` (the rest run here)."""

    run_id: str
    rung: Optional[int]
    action: str
    message: str
    indices: List[int] = field(default_factory=list)
    job_ids: List[str] = field(default_factory=list)
    promote_job_id: Optional[str] = None
    decision: Optional[Decision] = None
    stopped_by: Optional[str] = None  # local: the signal (or "cancel") that stopped the rungs again
    results: List[TaskResult] = field(default_factory=list)  # local: how each task run here ended
    run_dir: Optional[Path] = None

    def to_json(self) -> Dict[str, Any]:
        return {
            "run_id": self.run_id,
            "rung": self.rung,
            "action": self.action,
            "message": self.message,
            "indices": self.indices,
            "job_ids": self.job_ids,
            "promote_job_id": self.promote_job_id,
            "decision": self.decision.as_json() if self.decision else None,
            "stopped_by": self.stopped_by,
        }


def resume(
    run: runs.RunRef = None,
    *,
    dry_run: bool = False,
    config: Optional[NexaConfig] = None,
    progress: Optional[Callable[[Progress], None]] = None,
) -> ResumeResult:
    """Continue a halving run from its last complete rung: after ``cancel``, a failed
    promotion job, or an interrupted ``--local`` run.

    The current rung's tasks that completed are kept; the others (failed, cancelled, never
    started) run again, then the rung is decided and the schedule goes on. A rung already
    decided is not decided again: its next rung is submitted if it never was.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        dry_run: print the sbatch commands; submit, decide and write nothing.
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).
        progress: a local run's rungs: called with the runner's ``Progress`` after every change.

    Returns:
        ``ResumeResult`` (a local run stopped again by a signal or ``nexa cancel``: its
        ``stopped_by``).

    Raises:
        ConfigError: no such run, or not a halving run. ToolError: Slurm refused a job.
    """
    cfg = config or load_config()
    st = track.status(run, config=cfg)
    sched = st.schedule
    if sched is None:
        raise ConfigError(f"{st.run_id}: not a halving run (its sweep file has no [search]); for a plain sweep use nexa resubmit --failed")
    current = sched.current
    if sched.state == "finished" or (
        sched.state == "failed" and current is not None and current.decision is not None and current.decision.final
    ):
        return ResumeResult(st.run_id, current.rung if current else None, "nothing", f"the schedule has ended: {sched.message}")
    if sched.state == "running":
        where = (
            f"rung {current.rung}: {current.state}" + (f" ({current.note})" if current and current.note else "") if current else "rung 0"
        )
        return ResumeResult(
            st.run_id, current.rung if current else None, "nothing", f"the schedule is running ({where}): nothing to resume"
        )
    if st.backend == "local":
        return _resume_local(st, cfg, dry_run, progress)
    return _resume_slurm(st, dry_run)


def _clear_cancel(manifest: Dict[str, Any], rung: int) -> None:
    entry = {"at": runs.now_iso(), "user": runs.user(), "rung": rung}
    if manifest.get("cancelled"):
        entry["after"] = manifest["cancelled"]
    manifest["cancelled"] = None
    manifest.setdefault("resumes", []).append(entry)


def _resume_slurm(st: track.RunStatus, dry_run: bool) -> ResumeResult:
    path = st.run_dir
    buckets = {t.index: t for t in st.tasks}
    with rungs.locked(path):
        manifest = runs.read_manifest(path)
        schedule = promote.schedule_in(manifest)
        entries = [e for e in manifest.get("rungs") or [] if isinstance(e, dict)]
        if not entries:
            raise ConfigError(f"{st.run_id}: no rung was ever submitted: submit it again with nexa sweep --submit")
        entry = max(entries, key=lambda e: int(e["rung"]))
        rung = int(entry["rung"])
        decision = rungs.read_decision(path, rung)
        if decision is not None:  # decided; its next rung (or that rung's promotion job) is missing
            if dry_run:
                return ResumeResult(
                    st.run_id,
                    rung,
                    "nothing",
                    f"would submit rung {rung + 1} ({', '.join(map(str, decision.promoted))}) and its promotion job",
                )
            _clear_cancel(manifest, rung)
            runs.write_manifest(path, manifest)
            step = promote.step(path, manifest, rung, by="nexa resume")
            nxt = promote.entry_of(manifest, rung + 1) or {}
            return ResumeResult(
                st.run_id,
                rung + 1,
                "decided",
                step.text(),
                job_ids=list(nxt.get("job_ids") or []),
                promote_job_id=nxt.get("promote_job_id"),
                decision=decision,
            )
        rows = [buckets.get(schedule.index(rung, t)) for t in entry.get("trials") or []]
        again = [r.index for r in rows if r is not None and r.bucket == "failed"]
        active = sorted({(r.job_id or "").split("_")[0] for r in rows if r is not None and r.bucket in ("pending", "running")} - {""})
        if not dry_run:
            _clear_cancel(manifest, rung)
            runs.write_manifest(path, manifest)
        if not again and not active:
            if dry_run:
                return ResumeResult(st.run_id, rung, "nothing", f"would decide rung {rung} here and submit the next rung")
            step = promote.step(path, manifest, rung, by="nexa resume")
            nxt = promote.entry_of(manifest, rung + 1) or {}
            return ResumeResult(
                st.run_id,
                rung,
                "decided",
                step.text(),
                job_ids=list(nxt.get("job_ids") or []),
                promote_job_id=nxt.get("promote_job_id"),
                decision=step.decision,
            )
        serial = len(manifest.get("resumes") or []) or 1
        job_ids = promote.submit_indices(path, manifest, again, dry_run=dry_run, entry=entry, resubmit=serial) if again else []
        promote_id = promote.submit_promotion(path, manifest, entry, job_ids + active, dry_run=dry_run)
        action = "resubmitted" if again else "promotion"
        message = (
            f"rung {rung}: "
            + (f"{len(again)} task(s) submitted again (job {', '.join(job_ids)}); " if again else "")
            + f"promotion job {promote_id}"
        )
        return ResumeResult(st.run_id, rung, action, message, indices=again, job_ids=job_ids, promote_job_id=promote_id)


def _resume_local(st: track.RunStatus, cfg: NexaConfig, dry_run: bool, progress: Optional[Callable[[Progress], None]]) -> ResumeResult:
    """The rest of a local halving run, here, with this process as its new runner (refused
    while its runner still runs); its ``max_parallel`` and GPUs per task as before."""
    path = st.run_dir
    manifest = runs.read_manifest(path)
    state = runs.runner_state(manifest)
    if state == runs.RUNNER_ALIVE:
        raise ConfigError(f"{st.run_id}: still running ({runs.runner_text(manifest)}): wait for it, or nexa cancel it first")
    if state == runs.RUNNER_ELSEWHERE:
        raise ConfigError(f"{st.run_id}: its {runs.runner_text(manifest)} is not this host: resume it there")
    schedule = promote.schedule_in(manifest)
    entries = [e for e in manifest.get("rungs") or [] if isinstance(e, dict)]
    entry = max(entries, key=lambda e: int(e["rung"])) if entries else None
    rung = int(entry["rung"]) if entry else 0
    decision = rungs.read_decision(path, rung)
    done = {t.index for t in st.tasks if t.state == "COMPLETED"}
    if decision is not None:
        rung, trials, skip = rung + 1, decision.promoted, set()
    else:
        trials = [int(t) for t in entry["trials"]] if entry else list(range(schedule.n))
        skip = {schedule.index(rung, t) for t in trials} & done
    if dry_run:
        return ResumeResult(
            st.run_id, rung, "nothing", f"would run rung {rung} here ({len(trials) - len(skip)} task(s)) and the rungs after it"
        )
    runs_dir = Path(manifest["search"].get("runs_dir") or cfg.runs_dir)
    check_writable(runs_dir, st.run_id)
    with rungs.locked(path):
        manifest = runs.read_manifest(path)
        _clear_cancel(manifest, rung)
        runs.write_manifest(path, manifest)
    per_task = manifest.get("gpus_per_task") if type(manifest.get("gpus_per_task")) is int else 0
    slots, _ = gpu_slots(per_task)  # max_parallel: the manifest's search.max_parallel, as before

    again = [schedule.index(rung, t) for t in trials if schedule.index(rung, t) not in skip]

    def book() -> Optional[Path]:
        """Before the first rung here: keep the records of the tasks run again (an
        interrupted attempt is billed); then (each rung) reopen the cost manifest, under the
        runner's signal handlers."""
        if again:
            runs.keep_local_attempts(path, again)
            again.clear()
        return record_resubmission(runs_dir, st.run_id, [], {})

    ran = _local_rungs(path, manifest, rung, list(trials), cfg, slots or [], book, progress, skip)
    last = ran.decisions[-1] if ran.decisions else None
    message = f"ran {len(ran.results)} task(s) here; " + (f"rung {last.rung}: {last.summary()}" if last else "nothing decided")
    if ran.stopped_by is not None:
        how = "by nexa cancel" if ran.stopped_by == "cancel" else f"by SIG{ran.stopped_by}"
        message = f"ran {len(ran.results)} task(s) here; stopped {how}: nexa resume {st.run_id} continues it"
    return ResumeResult(
        st.run_id,
        rung,
        "local",
        message,
        indices=[r.index for r in ran.results],
        decision=last,
        stopped_by=ran.stopped_by,
        results=ran.results,
        run_dir=path,
    )
