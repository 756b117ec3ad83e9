"""Follow a run: status, wait, logs. Read-only: acting on a run is ``control``.

A task's truth comes from several places, none complete on its own:

- ``squeue``: what is queued or running now (forgets a job the moment it ends);
- ``scontrol show job``: also finished jobs, for MinJobAge seconds; restart counts;
- ``sacct``: everything, but only where the cluster has accounting (slurmdbd);
- the run folder's records: ``tasks/<i>.start.json`` (worker) and ``tasks/<i>.end.json``
  (sbatch script: the program's exit code and the signals it was sent). They never expire.

``merge_task`` combines them (pure, see tests/test_track.py): a live Slurm state wins, then
Slurm's verdict on a finished job, then accounting, then the records alone.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import runs
from .config import NexaConfig
from .errors import ConfigError, WaitTimeout
from .runs import BUCKETS, RunRef, Slot, bucket, current_records, load_run, record_state, resolve_run
from .style import format_seconds  # noqa: F401 - part of this module's API (status tables)
from .sweep import rungs
from .sweep.search import ScheduleStatus
from .tools import slurm
from .tools.slurm import SlurmInfo


@dataclass
class TaskRow:
    index: int
    state: str
    exit_code: Optional[int] = None
    elapsed: Optional[float] = None
    node: Optional[str] = None
    log: Optional[str] = None
    restarts: int = 0
    job_id: Optional[str] = None  # the array element, ``<array job>_<array index>``
    reason: str = ""
    source: str = ""  # squeue | scontrol | sacct | record | none
    params: Dict[str, Any] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return bucket(self.state)


@dataclass
class RunStatus:
    run_id: str
    run_dir: Path
    name: str
    backend: str  # slurm | local | planned
    job_ids: List[str]
    keys: List[str]  # the parameters that vary between tasks
    tasks: List[TaskRow]
    after: List[Dict[str, Any]] = field(default_factory=list)  # the runs it waits on (--after), from the manifest
    commit: Optional[str] = None  # the git commit it was submitted from
    dirty: bool = False  # ... with uncommitted changes (code.diff)
    schedule: Optional[ScheduleStatus] = None  # a halving sweep: its rungs (tasks: those submitted)

    @property
    def counts(self) -> Dict[str, int]:
        """Tasks per state, e.g. ``{"COMPLETED": 8, "FAILED": 1, "RUNNING": 2}``."""
        out: Dict[str, int] = {}
        for task in self.tasks:
            out[task.state] = out.get(task.state, 0) + 1
        return dict(sorted(out.items()))

    @property
    def buckets(self) -> Dict[str, int]:
        out = dict.fromkeys(BUCKETS, 0)
        for task in self.tasks:
            out[task.bucket] += 1
        return out

    @property
    def finished(self) -> bool:
        """Every task has ended, and for a halving sweep no rung is still to come."""
        return all(t.bucket in ("done", "failed") for t in self.tasks) and (self.schedule is None or self.schedule.finished)

    @property
    def failed(self) -> List[int]:
        return [t.index for t in self.tasks if t.bucket == "failed"]

    def summary(self) -> str:
        b = self.buckets
        text = f"{b['pending']} pending, {b['running']} running, {b['done']} done, {b['failed']} failed ({len(self.tasks)} tasks)"
        return f"{text}; {self.schedule.summary()}" if self.schedule is not None else text

    def to_json(self) -> Dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "name": self.name,
            "backend": self.backend,
            "job_ids": self.job_ids,
            "keys": self.keys,
            "counts": self.counts,
            "buckets": self.buckets,
            "finished": self.finished,
            "after": self.after,
            "commit": self.commit,
            "dirty": self.dirty,
            "tasks": [asdict(t) for t in self.tasks],
            **({"schedule": self.schedule.as_json()} if self.schedule is not None else {}),
        }


# --- pure: Slurm's answers and the records -> rows ------------------------------------------


def merge_task(
    index: int,
    slot: Optional[Slot],
    live: Optional[SlurmInfo],
    known: Optional[SlurmInfo],
    accounted: Optional[SlurmInfo],
    record: Dict[str, Any],
    *,
    backend: str = "slurm",
    warn_signal: str = "USR1",
    now: Optional[float] = None,
    runner_gone: str = "",
) -> TaskRow:
    """One task's row: live squeue state > scontrol > sacct > the run folder's records.

    ``runner_gone`` (a local run whose runner process has ended, as a reason text): a task it
    left without an end record will never get one, so it is INTERRUPTED, not RUNNING."""
    now = time.time() if now is None else now
    start, end = current_records(record, slot)
    info = live or known or accounted
    row = TaskRow(index=index, state="UNKNOWN", job_id=slot.element if slot else None, source="none")
    if info is not None:
        row.state, row.source, row.reason = info.state, info.source, info.reason
        row.exit_code = info.exit_code if runs.is_final(info.state) else None
        row.node, row.elapsed = info.node, info.elapsed
        row.restarts = max(info.restarts, known.restarts if known else 0)
        if row.bucket == "failed" and end:
            row.exit_code = end.get("exit_code", row.exit_code)  # the program's own code
            if row.state == "FAILED" and record_state(end, warn_signal) == "TIMEOUT":
                row.state, row.reason = "TIMEOUT", f"stopped by the {warn_signal} time-limit warning"
    elif end:
        row.state, row.source = record_state(end, warn_signal), "record"
        row.exit_code = end.get("exit_code")
        row.reason = _record_reason(row.state, end, start)
    elif backend == "local" and runner_gone:
        row.state, row.source = "INTERRUPTED", "record"
        row.reason = runner_gone + ("" if start else "; never started")
    elif start:
        # Started, never ended, and Slurm no longer knows it: killed hard (node lost, SIGKILL).
        row.state, row.source = ("RUNNING" if backend == "local" else "UNKNOWN"), "record"
        if backend != "local":
            row.reason = "started, never ended: killed hard (SIGKILL, node lost)?"
    elif backend == "local":
        row.state = "PENDING"
    elif backend == "planned" or slot is None:
        row.state = "PLANNED"
    else:
        # Submitted, never started, and no trace left: Slurm drops an array element
        # cancelled while pending, from the queue and from accounting alike.
        row.reason = "never started: cancelled while pending?"
    row.restarts = max(row.restarts, int(start.get("restart_count") or 0), int(end.get("restart_count") or 0))
    if start.get("start"):
        stop = end.get("end") if end else None
        if stop is not None:
            row.elapsed = max(0.0, float(stop) - float(start["start"]))
        elif row.bucket == "running":
            row.elapsed = max(0.0, now - float(start["start"]))
    if not row.node:
        row.node = end.get("node") or start.get("host") or None
    return row


def _record_reason(state: str, end: Dict[str, Any], start: Dict[str, Any]) -> str:
    signals = str(end.get("signals") or "")
    if end.get("state") == state == "INTERRUPTED":
        reason = f"interrupted by SIG{signals}" if signals else "interrupted"
    elif end.get("state") == state == "CANCELLED":
        reason = "cancelled by nexa cancel"
    else:
        return f"signals: {signals}" if signals else ""
    return reason if start else reason + "; never started"


def varying_keys(tasks: Sequence[Dict[str, Any]]) -> List[str]:
    """Parameters whose value differs between tasks (all of them when none does)."""
    keys: List[str] = []
    for task in tasks:
        for key in task.get("params", {}):
            if key not in keys:
                keys.append(key)
    varying = [k for k in keys if len({json.dumps(t.get("params", {}).get(k), sort_keys=True) for t in tasks}) > 1]
    return varying or keys


def dependency_reason(row: TaskRow, after: Sequence[Dict[str, Any]], failures: Callable[[], Dict[str, List[int]]]) -> str:
    """A downstream task's reason in words: which upstream run it waits on, or why Slurm
    cancelled it (``failures()``: each upstream run id -> its failed task indices, asked
    only when needed)."""
    if row.reason == slurm.WAITING_REASON:
        names = [_upstream_name(e, row.index) for e in after]
        return "waiting for " + ", ".join(names)
    never = row.reason == slurm.NEVER_SATISFIED_REASON
    vanished = row.state == "UNKNOWN" and row.source == "none" and row.job_id is not None
    if not (never or vanished):
        return row.reason
    found = failures()
    why = []
    for entry in after:
        failed = found.get(str(entry.get("run_id")), [])
        if entry.get("kind") == "corr" and row.index in failed:
            why.append(f"{entry.get('run_id')} task {row.index} failed")
        elif entry.get("kind") == "ok" and failed:
            shown = ", ".join(str(i) for i in failed[:10]) + (", ..." if len(failed) > 10 else "")
            why.append(f"{entry.get('run_id')} task(s) {shown} failed")
    if never:
        return "cancelled by Slurm: dependency never satisfied" + (f" ({'; '.join(why)})" if why else "")
    if why:
        return f"never started: Slurm cancelled it as {'; '.join(why)} (dependency never satisfied)"
    return row.reason


def _upstream_name(entry: Dict[str, Any], index: int) -> str:
    """``train-... (ok)``, or for ``corr`` the one task waited on: ``train-... task 3``."""
    if entry.get("kind") == "corr":
        return f"{entry.get('run_id')} task {index}"
    return f"{entry.get('run_id')} ({entry.get('kind')})"


class _Sources:
    """Slurm queries for one run; remembers across polls whether accounting exists."""

    def __init__(self) -> None:
        self.accounting: Optional[bool] = None

    def scheduler(self, job_ids: List[str]) -> Tuple[Dict[str, SlurmInfo], Dict[str, SlurmInfo]]:
        """(squeue, scontrol) information keyed by array element."""
        live = slurm.from_squeue(slurm.squeue(job_ids, fmt=slurm.SQUEUE_FORMAT))
        records: List[Dict[str, str]] = []
        for job in job_ids:
            records.extend(slurm.show_job(job))
        return live, slurm.from_scontrol(records)

    def accounted(self, job_ids: List[str]) -> Dict[str, SlurmInfo]:
        """sacct information, or nothing (and never asked again) without accounting."""
        if self.accounting is False:
            return {}
        rows = slurm.sacct(job_ids)
        self.accounting = rows is not None
        return slurm.from_sacct(rows or [])


def _status(path: Path, sources: _Sources, explain: bool = True) -> RunStatus:
    run = load_run(path)
    spec_tasks = run.spec.get("tasks", [])
    params = run.params()
    where = run.slots()
    records = runs.task_records(path)
    live: Dict[str, SlurmInfo] = {}
    known: Dict[str, SlurmInfo] = {}
    accounted: Dict[str, SlurmInfo] = {}
    job_ids = list(dict.fromkeys(s.job_id for s in where.values()))
    if job_ids:
        live, known = sources.scheduler(job_ids)
        # Accounting only for what neither the queue, scontrol nor an end record explains.
        if any(
            s.element not in live and s.element not in known and not current_records(records.get(i, {}), s)[1] for i, s in where.items()
        ):
            accounted = sources.accounted(job_ids)
    pattern = run.directive("output")
    rows = []
    now = time.time()
    runner_gone = ""
    if run.backend == "local" and runs.runner_state(run.manifest) == runs.RUNNER_GONE:
        runner_gone = f"its {runs.runner_text(run.manifest)} is gone"
    schedule = rungs.schedule_of(run.spec) or rungs.schedule_of(run.manifest)
    indices = rungs.task_indices(schedule, run.manifest) if schedule is not None else range(run.count)
    for index in indices:
        slot = where.get(index)
        element = slot.element if slot else ""
        row = merge_task(
            index,
            slot,
            live.get(element),
            known.get(element),
            accounted.get(element),
            records.get(index, {}),
            backend=run.backend,
            warn_signal=run.warn_signal,
            now=now,
            runner_gone=runner_gone,
        )
        row.params = params.get(index, {})
        if run.backend == "local":
            row.log = str(path / runs.LOGS / f"local_{index}.out")
        elif slot is not None:
            row.log = slurm.log_path(pattern, slot.job_id, slot.array_task_id, run.name)
        rows.append(row)
    after = [e for e in run.manifest.get("after") or [] if isinstance(e, dict)]
    if after and explain:
        cache: List[Dict[str, List[int]]] = []

        def failures() -> Dict[str, List[int]]:  # the upstream runs are read once, if ever
            if not cache:
                cache.append(_upstream_failures(after, sources))
            return cache[0]

        # held: the jobs submitted with a dependency; Slurm says Reason=None until its
        # scheduler has looked at a new job
        held = {str(c.get("job_id")) for c in run.manifest.get("chunks") or [] if isinstance(c, dict) and c.get("dependency")}
        for row in rows:
            if row.state == "PENDING" and not row.reason and (row.job_id or "").partition("_")[0] in held:
                row.reason = slurm.WAITING_REASON
            row.reason = dependency_reason(row, after, failures)
    git = (run.manifest.get("provenance") or {}).get("git") if isinstance(run.manifest.get("provenance"), dict) else None
    commit = git.get("commit") if isinstance(git, dict) and isinstance(git.get("commit"), str) else None
    plan = None
    if schedule is not None and run.manifest:
        plan = rungs.status(path, schedule, run.manifest, {row.index: row.bucket for row in rows})
    return RunStatus(
        run_id=run.run_id,
        run_dir=path,
        name=run.name,
        backend=run.backend,
        job_ids=[str(j) for j in run.manifest.get("job_ids", [])],
        keys=varying_keys(spec_tasks),
        tasks=rows,
        after=after,
        commit=commit,
        dirty=bool(commit and git.get("dirty")),  # type: ignore[union-attr]
        schedule=plan,
    )


def _upstream_failures(after: Sequence[Dict[str, Any]], sources: _Sources) -> Dict[str, List[int]]:
    """Each ``ok``/``corr`` upstream run id -> its failed tasks now (a run folder that is
    gone or damaged tells nothing)."""
    out: Dict[str, List[int]] = {}
    for entry in after:
        if entry.get("kind") == "any" or not isinstance(entry.get("run_dir"), str):
            continue
        try:
            out[str(entry.get("run_id"))] = _status(Path(entry["run_dir"]), sources, explain=False).failed
        except ConfigError:
            continue
    return out


def status(run: RunRef = None, *, config: Optional[NexaConfig] = None) -> RunStatus:
    """Every task of a run with its state, exit code, elapsed time, node, log and restarts.

    States come from squeue, ``scontrol show job`` and sacct (where accounting exists), merged
    with the worker's records, so finished tasks stay known after Slurm forgets them.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).

    Returns:
        ``RunStatus``: ``tasks`` (``TaskRow``: index, params, state, exit_code, elapsed, node,
        log, restarts) and the counts by state.

    Raises:
        ConfigError: no such run, or no run at all.
    """
    return _status(resolve_run(run, config), _Sources())


def wait(
    run: RunRef = None,
    *,
    poll: float = 5.0,
    progress: Optional[Callable[[RunStatus], None]] = None,
    timeout: Optional[float] = None,
    config: Optional[NexaConfig] = None,
) -> RunStatus:
    """Poll until no task is pending or running; ``progress(status)`` after every poll.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        poll: the longest pause between polls in seconds (polls start at 0.5 s and back off).
        progress: called with the ``RunStatus`` after every poll (the CLI's progress line).
        timeout: give up after this many seconds (None: wait for ever).
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).

    Returns:
        The final ``RunStatus`` (check ``.failed``).

    Raises:
        WaitTimeout: ``timeout`` passed first (exit code 124). ConfigError: no such run.
    """
    path = resolve_run(run, config)
    sources = _Sources()
    st = _status(path, sources)
    if st.backend == "planned":
        raise ConfigError(f"{path}: this run was planned but not submitted (nexa sweep --submit)")
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = 0.5
    while True:
        if progress:
            progress(st)
        if st.finished:
            return st
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"{st.run_id}: still {st.summary()} after {timeout:g} s")
        pause = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
        time.sleep(pause)
        interval = min(max(poll, 0.1), interval * 1.5)
        st = _status(path, sources)


def task_row(st: RunStatus, task: int) -> TaskRow:
    """The row of task index ``task``, or a ConfigError naming the valid range (a halving
    run's rows are the tasks of its submitted rungs)."""
    found = next((t for t in st.tasks if t.index == task), None)
    if found is None:
        if st.schedule is not None:
            shown = ", ".join(str(t.index) for t in st.tasks[:20]) + (", ..." if len(st.tasks) > 20 else "")
            raise ConfigError(f"--task: expected a task of a submitted rung ({shown}), got {task}")
        raise ConfigError(f"--task: expected 0..{len(st.tasks) - 1}, got {task}")
    return found


# --- logs ------------------------------------------------------------------------------------


@dataclass
class TaskLogs:
    index: int
    state: str
    out: Optional[Path]
    err: Optional[Path]


def logs(run: RunRef, task: Optional[int] = None, *, config: Optional[NexaConfig] = None) -> TaskLogs:
    """Where a task's output is.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        task: the task index (default: the first failed task, else the first running, else 0).
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).

    Returns:
        ``TaskLogs``: index, state and the ``out``/``err`` paths (None when not written yet).

    Raises:
        ConfigError: no such run or task.
    """
    st = status(run, config=config)
    if task is None:
        row = next((t for t in st.tasks if t.bucket == "failed"), None) or next(
            (t for t in st.tasks if t.bucket == "running"), st.tasks[0] if st.tasks else None
        )
        if row is None:
            raise ConfigError(f"{st.run_id}: the run has no tasks")
    else:
        row = task_row(st, task)
    out = Path(row.log) if row.log else None
    err: Optional[Path] = None
    if st.backend == "local":
        err = st.run_dir / runs.LOGS / f"local_{row.index}.err"
    else:
        run_obj = load_run(st.run_dir)
        slot = run_obj.slots().get(row.index)
        err_text = slurm.log_path(run_obj.directive("error"), slot.job_id, slot.array_task_id, st.name) if slot else None
        err = Path(err_text) if err_text else None
    if err == out:
        err = None
    return TaskLogs(row.index, row.state, out, err)


def follow(
    paths: Sequence[Optional[Path]],
    *,
    done: Callable[[], bool],
    poll: float = 0.5,
    idle_checks: int = 4,
) -> Iterator[Tuple[int, str]]:
    """Yield ``(stream number, text)`` as the files grow, like ``tail -f`` from the start.

    Stops once ``done()`` is true and nothing new arrived (asked every ``idle_checks`` idle
    polls), so following a finished task prints it all and returns.
    """
    offsets = [0] * len(paths)
    idle = 0
    while True:
        grew = False
        for i, path in enumerate(paths):
            if path is None:
                continue
            try:
                with open(path, "rb") as fh:
                    fh.seek(offsets[i])
                    data = fh.read()
            except FileNotFoundError:
                continue
            if data:
                offsets[i] += len(data)
                grew = True
                yield i, data.decode("utf-8", "replace")
        if grew:
            idle = 0
            continue
        idle += 1
        if idle % idle_checks == 0 and done():
            return
        time.sleep(poll)


def task_finished(run: RunRef, index: int, *, config: Optional[NexaConfig] = None) -> Callable[[], bool]:
    """A ``done`` callable for ``follow``: true once the task is done or failed."""
    path = resolve_run(run, config)
    sources = _Sources()

    def done() -> bool:
        st = _status(path, sources)
        row = next((t for t in st.tasks if t.index == index), None)
        return row.bucket in ("done", "failed") if row is not None else True

    return done
