"""Follow a run: status, wait, logs. Read-only: acting on a run is ``control``.

A task's truth comes from several places, none complete on its own:

- ``squeue -t all``: what is queued or running now, and the verdict (state, exit status,
  restarts) on elements that ended less than MinJobAge seconds ago; one call for all of a
  run's array jobs;
- ``sacct``: everything, but only where the cluster has accounting (slurmdbd);
- the run folder's records: ``tasks/<i>.start.json`` (worker) and ``tasks/<i>.end.json``
  (sbatch script: the program's exit code and the signals it was sent). They never expire.

``merge_task`` combines them (pure, see tests/test_track.py): a live Slurm state wins, then
Slurm's verdict on an ended element, then accounting, then the records alone.
"""

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Container, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from . import runs
from .config import NexaConfig
from .errors import ConfigError, WaitTimeout
from .runs import BUCKETS, RunRef, Slot, bucket, current_records, load_run, record_state, resolve_run
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
    source: str = ""  # squeue | sacct | record | none
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
        return all(t.bucket in ("done", "failed") for t in self.tasks)

    @property
    def failed(self) -> List[int]:
        return [t.index for t in self.tasks if t.bucket == "failed"]

    def summary(self) -> str:
        b = self.buckets
        return f"{b['pending']} pending, {b['running']} running, {b['done']} done, {b['failed']} failed ({len(self.tasks)} tasks)"

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
            "tasks": [{name: getattr(t, name) for name in _ROW_FIELDS} for t in self.tasks],  # asdict deep-copies: slow for 10,000
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
) -> TaskRow:
    """One task's row: live squeue state > Slurm's verdict on the ended element (``known``,
    squeue -t all) > sacct > the run folder's records."""
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
        signals = str(end.get("signals") or "")
        row.reason = f"signals: {signals}" if signals else ""
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


def varying_keys(tasks: Sequence[Dict[str, Any]]) -> List[str]:
    """Parameters whose value differs between tasks (all of them when none does)."""
    keys: List[str] = []
    for task in tasks:
        for key in task.get("params", {}):
            if key not in keys:
                keys.append(key)
    varying = [k for k in keys if len({_same(t.get("params", {}).get(k)) for t in tasks}) > 1]
    return varying or keys


def _same(value: Any) -> Any:
    """A key equal for equal JSON values (1 and 1.0 and True differ, as in the spec):
    scalars as themselves with their type, the rest as canonical JSON (10,000 tasks)."""
    if value is None or type(value) in (str, int, float, bool):
        return (type(value), value)
    return json.dumps(value, sort_keys=True)


# --- asking Slurm -----------------------------------------------------------------------------
#
# Every question nexa asks about a run is ONE squeue call for all of its array jobs (chunks and
# resubmissions together): ``squeue -r -t all -j id1,id2,...`` names the state of every queued
# and running element, and of every ended one slurmctld still remembers (MinJobAge) with its
# exit status and restart count, all ``scontrol show job`` would add. sacct goes to slurmdbd
# (often the busiest daemon of a site) and is asked only for what neither Slurm nor an end
# record explains, and, while following a run, only once nothing of it is queued any more.


class _Sources:
    """Slurm queries for one run; remembers across polls whether accounting exists."""

    def __init__(self) -> None:
        self.accounting: Optional[bool] = None

    def scheduler(self, job_ids: List[str]) -> Tuple[Dict[str, SlurmInfo], Dict[str, SlurmInfo]]:
        """(live, ended) information keyed by array element, from one squeue call."""
        found = slurm.array_tasks(job_ids)
        live = {k: v for k, v in found.items() if not runs.is_final(v.state)}
        return live, {k: v for k, v in found.items() if k not in live}

    def accounted(self, job_ids: List[str]) -> Dict[str, SlurmInfo]:
        """sacct information, or nothing (and never asked again) without accounting."""
        if self.accounting is False:
            return {}
        rows = slurm.sacct(job_ids)
        self.accounting = rows is not None
        return slurm.from_sacct(rows or [])


@dataclass
class _Answer:
    """What Slurm said at one poll: live elements, ended ones, accounting's."""

    live: Dict[str, SlurmInfo] = field(default_factory=dict)
    ended: Dict[str, SlurmInfo] = field(default_factory=dict)
    accounted: Dict[str, SlurmInfo] = field(default_factory=dict)
    slots: Optional[Dict[int, Slot]] = None  # the run's slots the question was about


def _ask(run: runs.Run, records: Dict[int, Dict[str, Any]], sources: _Sources, *, at_end_only: bool = False) -> _Answer:
    """One squeue call for every job of the run; sacct only for tasks that neither Slurm nor
    an end record explains, and with ``at_end_only`` only when none of the run is queued."""
    where = run.slots()
    job_ids = list(dict.fromkeys(s.job_id for s in where.values()))
    answer = _Answer(slots=where)
    if not job_ids:
        return answer
    answer.live, answer.ended = sources.scheduler(job_ids)
    if at_end_only and answer.live:
        return answer
    if any(
        s.element not in answer.live and s.element not in answer.ended and not current_records(records.get(i, {}), s)[1]
        for i, s in where.items()
    ):
        answer.accounted = sources.accounted(job_ids)
    return answer


def _rows(
    run: runs.Run,
    records: Dict[int, Dict[str, Any]],
    answer: _Answer,
    fresh: Container[int] = (),
    base: Optional[RunStatus] = None,
    only: Sequence[int] = (),
) -> RunStatus:
    """The run's status from Slurm's answer and the records (pure). Tasks in ``fresh`` wrote
    records after that answer: their records alone say what they are now. With ``base`` (an
    earlier result for the same answer) only the rows of ``only`` are made again: a follower
    of 10,000 tasks redoes the few whose records changed."""
    where = answer.slots if answer.slots is not None else run.slots()
    params = run.params() if base is None else {i: base.tasks[i].params for i in only}
    pattern = run.directive("output")
    warn_signal = run.warn_signal
    local = run.backend == "local"
    log_dir = run.path / runs.LOGS
    rows: List[TaskRow] = [] if base is None else list(base.tasks)
    now = time.time()
    for index in range(run.count) if base is None else only:
        slot = where.get(index)
        element = slot.element if slot else ""
        if index in fresh:
            # A start record means running, an end record ended, whatever Slurm said before.
            row = merge_task(index, slot, None, None, None, records.get(index, {}), backend="local", warn_signal=warn_signal, now=now)
        else:
            row = merge_task(
                index,
                slot,
                answer.live.get(element),
                answer.ended.get(element),
                answer.accounted.get(element),
                records.get(index, {}),
                backend=run.backend,
                warn_signal=warn_signal,
                now=now,
            )
        row.params = params.get(index, {})
        if local:
            row.log = str(log_dir / f"local_{index}.out")
        elif slot is not None:
            row.log = slurm.log_path(pattern, slot.job_id, slot.array_task_id, run.name)
        if base is None:
            rows.append(row)
        else:
            rows[index] = row
    return RunStatus(
        run_id=run.run_id,
        run_dir=run.path,
        name=run.name,
        backend=run.backend,
        job_ids=[str(j) for j in run.manifest.get("job_ids", [])],
        keys=varying_keys(run.spec.get("tasks", [])) if base is None else base.keys,
        tasks=rows,
    )


def _status(path: Path, sources: _Sources) -> RunStatus:
    """One look at a run: its folder (one scan of ``tasks/``, one read per record) and one
    squeue call, sacct only when needed."""
    run = load_run(path)
    records = runs.task_records(path)
    return _rows(run, records, _ask(run, records, sources))


def status(run: RunRef = None, *, config: Optional[NexaConfig] = None) -> RunStatus:
    """Every task of a run with its state, exit code, elapsed time, node, log and restarts.

    States come from one squeue call for all of the run's array jobs and sacct (only where
    accounting exists and only for tasks nothing else explains), merged with the worker's
    records, so finished tasks stay known after Slurm forgets them.

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


# --- following a run: polls that back off ------------------------------------------------------

FIRST_POLL = 2.0  # seconds: the first pause, and the pause after news
DEFAULT_POLL = 300.0  # seconds: the longest pause by default (``--poll``); see docs/track.md
TICK = 1.0  # seconds: how often the run folder is looked at between polls (one stat)


def next_pause(pause: Optional[float], news: bool, ceiling: float = DEFAULT_POLL, first: float = FIRST_POLL) -> float:
    """The pause before the next Slurm poll (pure): ``first`` to begin with and after news,
    else twice the last pause, never above ``ceiling``: 2, 4, 8, ..., 256, 300, 300... s."""
    ceiling = max(ceiling, 0.1)
    if pause is None or news:
        return min(first, ceiling)
    return min(pause * 2, ceiling)


def slurm_news(before: RunStatus, after: RunStatus) -> bool:
    """Whether a poll told what the run folder had not shown (pure): a task that ended badly
    without an end record (cancelled, killed, its node lost, gone while pending), a requeue,
    or a run whose tasks all wrote their end records that Slurm does not call over yet. Tasks
    that start and end on their own write records, which nexa watches for free: no news."""
    if before.finished and not after.finished:
        return True
    for old, new in zip(before.tasks, after.tasks):
        if new.restarts > old.restarts:
            return True
        if new.bucket == "failed" and old.bucket in ("pending", "running"):
            return True
    return False


class _Follower:
    """A run followed over time (``wait``, ``logs --follow``).

    Slurm is asked on a schedule that backs off (``next_pause``); between polls the run
    folder is watched (one stat of ``tasks/``; a scan, and reads of the changed records only,
    when it changed), which shows tasks starting and ending without a single RPC. When the
    records say the run (or the task followed) is over, Slurm is asked at once to confirm.
    sacct is asked at most once, at the end (only for tasks nothing else explains).
    """

    def __init__(self, path: Path, ceiling: float = DEFAULT_POLL) -> None:
        self.path = path
        self.ceiling = max(ceiling, 0.1)
        self.sources = _Sources()
        self.spec: Optional[Dict[str, Any]] = None
        self.pause: Optional[float] = None
        self.due = 0.0
        self.polls = 0

    def poll(self) -> RunStatus:
        """Ask Slurm now (one squeue call), with every record read again."""
        self.run = load_run(self.path, self.spec)
        self.spec = self.run.spec
        self.stamp = runs.tasks_stamp(self.path)  # before the scan: a change after it shows next time
        self.names = set(runs.task_names(self.path))
        self.records = runs.task_records(self.path, sorted(self.names))
        self.answer = _ask(self.run, self.records, self.sources, at_end_only=True)
        self.fresh: Set[int] = set()
        self.polls += 1
        self.latest = _rows(self.run, self.records, self.answer)
        return self.latest

    def look(self) -> bool:
        """Look at the run folder (one stat); read the records that changed and update the
        latest status with them. True if any did."""
        stamp = runs.tasks_stamp(self.path)
        if stamp is None or stamp == self.stamp:
            return False
        names = set(runs.task_names(self.path))
        changed = {n.split(".", 1)[0] for n in names ^ self.names if n.endswith(".json")}
        self.stamp, self.names = stamp, names
        indices = {int(i) for i in changed if i.isdigit()}
        if not indices:
            return False
        wanted = [n for n in names if n.split(".", 1)[0] in changed]
        found = runs.task_records(self.path, wanted)
        for index in indices:
            if index in found:
                self.records[index] = found[index]
            else:
                self.records.pop(index, None)
        self.fresh |= indices
        changed_rows = sorted(i for i in indices if i < self.run.count)
        self.latest = _rows(self.run, self.records, self.answer, self.fresh, base=self.latest, only=changed_rows)
        return True

    def step(self, over: Callable[[RunStatus], bool]) -> RunStatus:
        """The status now: Slurm's if a poll is due or the records say ``over``, else the last
        poll's answer with the records written since."""
        now = time.monotonic()
        changed = self.look()
        if now >= self.due or (changed and over(self.latest)):
            before = self.latest
            after = self.poll()
            self.schedule(slurm_news(before, after))
            return after
        return self.latest

    def schedule(self, news: bool) -> None:
        self.pause = next_pause(self.pause, news, self.ceiling)
        self.due = time.monotonic() + self.pause


def wait(
    run: RunRef = None,
    *,
    poll: float = DEFAULT_POLL,
    progress: Optional[Callable[[RunStatus], None]] = None,
    timeout: Optional[float] = None,
    config: Optional[NexaConfig] = None,
) -> RunStatus:
    """Poll until no task is pending or running; ``progress(status)`` after every look.

    Slurm is asked at once, then after 2 s, and the pause doubles up to ``poll`` seconds
    while it brings no news (back to 2 s when it does: see ``slurm_news``). Each poll is one
    squeue call for all of the run's array jobs. In between, the run folder is looked at
    every second (one stat, no RPC): tasks starting and ending show up at once, and when every
    task has written its end record Slurm is asked at once to confirm.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        poll: the longest pause between Slurm polls in seconds (default 300).
        progress: called with the ``RunStatus`` after every poll and every look at the run
            folder, about once a second (the CLI's progress line and its clock).
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
    follower.schedule(False)
    deadline = None if timeout is None else time.monotonic() + timeout
    tick = min(TICK, follower.ceiling)
    while True:
        if progress:
            progress(st)
        if st.finished:
            return st
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise WaitTimeout(f"{st.run_id}: still {st.summary()} after {timeout:g} s")
        time.sleep(max(0.0, min(tick, follower.due - now, (deadline - now) if deadline is not None else tick)))
        st = follower.step(lambda s: s.finished)


def task_row(st: RunStatus, task: int) -> TaskRow:
    """The row of task index ``task``, or a ConfigError naming the valid range."""
    if not 0 <= task < len(st.tasks):
        raise ConfigError(f"--task: expected 0..{len(st.tasks) - 1}, got {task}")
    return st.tasks[task]


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
    """A ``done`` callable for ``follow``: true once the task is done or failed. Slurm is
    asked as ``wait`` asks it (backing off, at once when the task's end record appears)."""
    follower = _Follower(resolve_run(run, config))

    def over(st: RunStatus) -> bool:
        return st.tasks[index].bucket in ("done", "failed") if index < len(st.tasks) else True

    def done() -> bool:
        if follower.polls == 0:
            st = follower.poll()
            follower.schedule(False)
        else:
            st = follower.step(over)
        return over(st)

    return done


def format_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
