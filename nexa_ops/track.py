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
from dataclasses import field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Container, Dict, Iterator, List, Optional, Sequence, Tuple

from . import runs
from .config import NexaConfig
from .errors import ConfigError, WaitTimeout
from .runs import BUCKETS, RunRef, Slot, bucket, current_records, load_run, record_state, resolve_run
from .structs import mutable
from .style import format_seconds  # noqa: F401 - part of this module's API (status tables)
from .tools import slurm
from .tools.slurm import SlurmInfo

if TYPE_CHECKING:  # the halving modules are imported only for a halving run: see _schedule_of
    from .sweep.search import Schedule, ScheduleStatus


@mutable
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


@mutable
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
    schedule: Optional["ScheduleStatus"] = None  # a halving sweep: its rungs (tasks: those submitted)

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
            "tasks": [{name: getattr(t, name) for name in _ROW_FIELDS} for t in self.tasks],  # asdict deep-copies: slow for 10,000
            **({"schedule": self.schedule.as_json()} if self.schedule is not None else {}),
        }


_ROW_FIELDS = [f.name for f in fields(TaskRow)]


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


# --- asking Slurm -----------------------------------------------------------------------------
#
# Every look at a run asks Slurm ONE question for all of its array jobs (chunks, resubmissions
# and rungs together): ``squeue -r -t all -j id1,id2,...`` names the state of every queued and
# running element, and of every ended one slurmctld still remembers (MinJobAge) with its exit
# status and restart count: all ``scontrol show job`` would add, without one call per job.
# sacct goes to slurmdbd (often a site's busiest daemon) and is asked only for what neither
# Slurm nor an end record explains; while following a run, only once none of it is queued.


@mutable
class _Answer:
    """What Slurm said at one look: elements it has queued or running, ended ones it still
    remembers, and accounting's word on the rest."""

    live: Dict[str, SlurmInfo] = field(default_factory=dict)
    known: Dict[str, SlurmInfo] = field(default_factory=dict)
    accounted: Dict[str, SlurmInfo] = field(default_factory=dict)
    jobs: Optional[Dict[str, Optional[str]]] = None  # a halving run's promotion jobs: state, None if forgotten


class _Sources:
    """Slurm queries for one run; remembers across polls whether accounting exists."""

    def __init__(self) -> None:
        self.accounting: Optional[bool] = None

    def scheduler(self, job_ids: List[str], plain: Sequence[str] = ()) -> Tuple[Dict[str, SlurmInfo], Dict[str, SlurmInfo], Dict[str, str]]:
        """(queued or running, ended) elements of these array jobs, and the states of the
        ``plain`` jobs (a halving run's promotion jobs): one squeue call for all."""
        rows = slurm.queue_rows(list(dict.fromkeys([*job_ids, *plain])))
        live: Dict[str, SlurmInfo] = {}
        known: Dict[str, SlurmInfo] = {}
        for element, info in slurm.from_squeue(rows).items():
            (known if runs.is_final(info.state) else live)[element] = info
        return live, known, slurm.job_states(rows)

    def accounted(self, job_ids: List[str]) -> Dict[str, SlurmInfo]:
        """sacct information, or nothing (and never asked again) without accounting."""
        if self.accounting is False:
            return {}
        rows = slurm.sacct(job_ids)
        self.accounting = rows is not None
        return slurm.from_sacct(rows or [])

    def ask(self, run: runs.Run, records: Dict[int, Dict[str, Any]], *, at_end_only: bool = False) -> _Answer:
        """One squeue call for every job of the run; sacct only for the tasks that neither
        Slurm nor an end record explains, and with ``at_end_only`` only when nothing of the
        run is queued or running any more."""
        where = run.slots()
        answer = _Answer()
        job_ids = list(dict.fromkeys(s.job_id for s in where.values()))
        promotions: List[str] = []
        if run.backend == "slurm" and _schedule_of(run) is not None:
            rungs = _rungs()
            promotions = rungs.promotion_jobs(run.manifest, rungs.read_decisions(run.path))
        if not job_ids and not promotions:
            return answer
        answer.live, answer.known, states = self.scheduler(job_ids, promotions)
        if promotions:
            answer.jobs = {job: states.get(job) for job in promotions}
        if at_end_only and answer.live:
            return answer
        if any(
            s.element not in answer.live and s.element not in answer.known and not current_records(records.get(i, {}), s)[1]
            for i, s in where.items()
        ):
            answer.accounted = self.accounted(job_ids)
        return answer


def _status(
    path: Path,
    sources: _Sources,
    explain: bool = True,
    *,
    run: Optional[runs.Run] = None,
    records: Optional[Dict[int, Dict[str, Any]]] = None,
    answer: Optional[_Answer] = None,
    fresh: Container[int] = (),
    ask: bool = True,
) -> RunStatus:
    """One look at a run: its folder (one scan of ``tasks/``, one read per record) and, unless
    an earlier ``answer`` is given, one squeue call (sacct only when needed). Tasks in
    ``fresh`` wrote records after that answer: their records alone say what they are now.
    ``ask`` false: no further Slurm call at all (a follower's look between its polls)."""
    run = load_run(path) if run is None else run
    spec_tasks = run.spec.get("tasks", [])
    params = run.params()
    where = run.slots()
    records = runs.task_records(path) if records is None else records
    if answer is None:
        answer = sources.ask(run, records)
    live, known, accounted = answer.live, answer.known, answer.accounted
    pattern = run.directive("output")
    rows = []
    now = time.time()
    runner_gone = ""
    if run.backend == "local" and runs.runner_state(run.manifest) == runs.RUNNER_GONE:
        runner_gone = f"its {runs.runner_text(run.manifest)} is gone"
    schedule = _schedule_of(run)
    indices = _rungs().task_indices(schedule, run.manifest) if schedule is not None else range(run.count)
    for index in indices:
        slot = where.get(index)
        element = slot.element if slot else ""
        fresh_row = index in fresh  # its start or end record is newer than Slurm's answer
        row = merge_task(
            index,
            slot,
            None if fresh_row else live.get(element),
            None if fresh_row else known.get(element),
            None if fresh_row else accounted.get(element),
            records.get(index, {}),
            backend="local" if fresh_row else run.backend,
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
                cache.append(_upstream_failures(after, sources) if ask else {})  # a look asks Slurm nothing
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
        plan = _rungs().status(path, schedule, run.manifest, {row.index: row.bucket for row in rows}, known=answer.jobs, ask=ask)
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


def _rungs() -> Any:
    """``sweep.rungs``, imported when a halving run needs it: it and ``sweep.search`` are a
    tenth of the start-up of every ``status`` and ``wait``, and most runs are not halving."""
    from .sweep import rungs

    return rungs


def _schedule_of(run: runs.Run) -> Optional["Schedule"]:
    """A halving run's schedule, from its spec or manifest; None (nothing imported) for others."""
    return _rungs().run_schedule(run) if run.halving else None


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


#: Following a run: the first pause between Slurm polls, the default longest one (``--poll``),
#: and how often the run folder is looked at in between (one stat of ``tasks/``).
FIRST_POLL = 2.0
DEFAULT_POLL = 300.0
FOLDER_EVERY = 1.0
#: States a task's own records show as soon as Slurm does: Slurm saying so first is no news.
_FOLDER_SHOWS = frozenset({"RUNNING", "COMPLETING", "COMPLETED"})


def next_pause(pause: Optional[float], news: bool, ceiling: float = DEFAULT_POLL) -> float:
    """The pause before the next Slurm poll (pure): ``FIRST_POLL`` at first and after news,
    doubling while there is none, never above ``ceiling`` nor below 0.1 s."""
    ceiling = max(ceiling, 0.1)
    if pause is None or news:
        return min(FIRST_POLL, ceiling)
    return min(pause * 2, ceiling)


def slurm_news(before: RunStatus, after: RunStatus) -> bool:
    """Whether a poll told what the run folder did not and will not show (pure): a task that
    ended without its end record (cancelled, lost with its node), vanished or was requeued;
    or a run over by its records that Slurm does not call over yet (ask again soon).
    ``before``: the status just before the poll, with the folder's news in it."""
    if before.finished and not after.finished:
        return True
    was = {t.index: t for t in before.tasks}
    for task in after.tasks:
        old = was.get(task.index)
        if old is None:
            continue
        if task.restarts != old.restarts or (task.state != old.state and task.state not in _FOLDER_SHOWS):
            return True
    return False


class _Follower:
    """Follows one run asking Slurm as little as it can.

    Slurm is polled (one squeue call) at the start, then after pauses that double from
    ``FIRST_POLL`` to ``ceiling`` while its answers bring no news (``slurm_news``) and start
    again at ``FIRST_POLL`` when they do. In between, ``tasks/`` is stat-ed once a second and
    scanned only when its mtime changed, reading only the records that appeared: tasks that
    start and end are seen there at no cost to the scheduler, and the moment every task has
    its end record Slurm is asked at once to confirm. sacct is asked only once nothing of
    the run is queued (``_Sources.ask(at_end_only=True)``)."""

    def __init__(self, path: Path, ceiling: float = DEFAULT_POLL) -> None:
        self.path = path
        self.ceiling = ceiling
        self.pause: Optional[float] = None
        self.sources = _Sources()
        self.polls = 0  # Slurm polls so far
        self.next_poll = 0.0  # monotonic time of the next one
        self.run: Optional[runs.Run] = None
        self.answer: Optional[_Answer] = None
        self.records: Dict[int, Dict[str, Any]] = {}
        self.names: set = set()  # the file names in tasks/ at the last scan
        self.answered: Dict[int, Dict[str, Any]] = {}  # the records as they were at the last poll
        self.stamp: Optional[int] = None
        self.manifest_stamp: Optional[int] = None
        self.status: Optional[RunStatus] = None
        self.confirmed = False  # the status is the last poll's, not the folder's since

    def _scan(self) -> None:
        """Bring ``records`` up to date: one scan of ``tasks/``; reads only the records of
        tasks whose files appeared or went (an attempt that starts again removes its end)."""
        self.stamp = runs.mtime_ns(self.path / runs.TASKS)
        names = set(runs.task_names(self.path))
        changed = {_record_index(n) for n in names.symmetric_difference(self.names)} - {None}
        if not self.names:  # the first scan reads everything
            self.records = runs.task_records(self.path, sorted(names))
        elif changed:
            again = runs.task_records(self.path, [n for n in names if _record_index(n) in changed])
            for index in changed:
                if index in again:
                    self.records[index] = again[index]
                else:
                    self.records.pop(index, None)
        self.names = names

    def poll(self) -> RunStatus:
        """Ask Slurm now (one squeue call), with the manifest read again (a resubmission or a
        new rung changes it) and the records brought up to date."""
        before = self.status
        self.manifest_stamp = runs.mtime_ns(self.path / runs.MANIFEST)
        run = load_run(self.path, spec=self.run.spec if self.run is not None else None)  # a spec never changes
        self.names = set()  # a poll reads every record again (a requeued task rewrites its start)
        self._scan()
        answer = self.sources.ask(run, self.records, at_end_only=True)
        self.run, self.answer, self.answered = run, answer, dict(self.records)
        self.status = _status(self.path, self.sources, run=run, records=self.records, answer=answer)
        self.polls += 1
        self.confirmed = True
        if run.backend != "slurm":  # no scheduler to spare: the folder and manifest are the truth
            self.pause = FOLDER_EVERY
        else:
            self.pause = next_pause(self.pause, before is not None and slurm_news(before, self.status), self.ceiling)
        self.next_poll = time.monotonic() + self.pause
        return self.status

    def look(self) -> RunStatus:
        """The run as its folder shows it now, on Slurm's last answer: one stat of ``tasks/``;
        a scan, and the new records read, only when it changed."""
        if self.status is None or self.run is None:
            return self.poll()
        if runs.mtime_ns(self.path / runs.TASKS) == self.stamp:
            return self.status
        if runs.mtime_ns(self.path / runs.MANIFEST) != self.manifest_stamp:
            return self.poll()  # a resubmission or a new rung: its jobs are not in the last answer
        self._scan()
        fresh = {i for i, rec in self.records.items() if rec != self.answered.get(i)}
        fresh.update(i for i in self.answered if i not in self.records)
        self.status = _status(self.path, self.sources, run=self.run, records=self.records, answer=self.answer, fresh=fresh, ask=False)
        self.confirmed = False
        if self.status.finished:
            self.next_poll = 0.0  # every task wrote its end: let Slurm confirm it now
        return self.status

    def step(self, deadline: Optional[float] = None) -> RunStatus:
        """Sleep until the next look (at most ``FOLDER_EVERY``), then look or poll."""
        now = time.monotonic()
        until = min(self.next_poll, now + FOLDER_EVERY)
        if deadline is not None:
            until = min(until, deadline)
        if until > now:
            time.sleep(until - now)
        return self.poll() if time.monotonic() >= self.next_poll else self.look()


def _record_index(name: str) -> Optional[int]:
    """The task index of a record file name (``12.start.json`` -> 12), None for others."""
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() and name.endswith(".json") else None


def wait(
    run: RunRef = None,
    *,
    poll: float = DEFAULT_POLL,
    progress: Optional[Callable[[RunStatus], None]] = None,
    timeout: Optional[float] = None,
    config: Optional[NexaConfig] = None,
) -> RunStatus:
    """Follow a run until no task is pending or running; ``progress(status)`` after every look.

    Slurm is asked one squeue call per poll for all of the run's jobs, 2 s after the first,
    then at pauses that double up to ``poll`` while it brings no news; the run folder is
    watched in between (one stat a second), and sacct is asked only once nothing is queued.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        poll: the longest pause between Slurm polls in seconds (default 300).
        progress: called with the ``RunStatus`` after every look (the CLI's progress line).
        timeout: give up after this many seconds (None: wait for ever).
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).

    Returns:
        The final ``RunStatus`` (check ``.failed``).

    Raises:
        WaitTimeout: ``timeout`` passed first (exit code 124). ConfigError: no such run.
    """
    path = resolve_run(run, config)
    follower = _Follower(path, poll)
    st = follower.poll()
    if st.backend == "planned":
        raise ConfigError(f"{path}: this run was planned but not submitted (nexa sweep --submit)")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if progress:
            progress(st)
        if st.finished and follower.confirmed:
            return st
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"{st.run_id}: still {st.summary()} after {timeout:g} s")
        st = follower.step(deadline)


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


@mutable
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
    """A ``done`` callable for ``follow``: true once the task is done or failed. Slurm is
    asked as ``wait`` asks it (backing off; the task's end record is seen at once)."""
    follower = _Follower(resolve_run(run, config))

    def done() -> bool:
        st = follower.poll() if time.monotonic() >= follower.next_poll else follower.look()
        row = next((t for t in st.tasks if t.index == index), None)
        return row.bucket in ("done", "failed") if row is not None else True

    return done
