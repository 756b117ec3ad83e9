"""Successive halving, pure: the schedule of rungs and the promotion decision.

A halving sweep runs every configuration of the grid (a **trial**, numbered by its index in
the grid) at the smallest budget, keeps the best ``floor(n / eta)`` (at least 1), runs those
at ``eta`` times the budget, and so on up to the largest budget. Each rung is one job array;
this module only computes: which budgets, how many trials, and who is promoted given each
trial's state and metric. ``promote.py`` reads the run folder and submits; ``docs/halving.md``
describes the whole.

Task layout: the spec plans every (rung, trial) pair up front, task ``rung * n + trial``, so
each task has its own argv (the rung's budget), records and metrics file, and a rung is an
array over a subset of indices.

Standard library only (the promotion job imports it on a compute node), no I/O.
"""

import math
from dataclasses import field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..structs import frozen, mutable

Number = Union[int, float]

METHOD = "halving"
SCHEMA = 1


def budgets(low: Number, high: Number, eta: int) -> List[Number]:
    """``low, low*eta, low*eta^2, ...`` while below ``high``, then ``high`` itself: the last
    rung is clipped to the largest budget (1, 3, 9, 27 for 1..27; 1, 3, 9, 10 for 1..10)."""
    out: List[Number] = []
    value = low
    while value < high:
        out.append(value)
        value = value * eta
    out.append(high)
    return out


def sizes(n: int, eta: int, rungs: int) -> List[int]:
    """Trials per rung: ``n``, then ``floor(previous / eta)``, at least 1."""
    out = [n]
    for _ in range(rungs - 1):
        out.append(max(1, out[-1] // eta))
    return out


def keep_count(entered: int, eta: int) -> int:
    """How many of a rung's ``entered`` trials the next rung takes: ``floor(entered / eta)``, at least 1."""
    return max(1, entered // eta)


@frozen
class Rung:
    """One planned rung: its budget and the most trials it runs (fewer when fewer qualify)."""

    rung: int
    budget: Number
    trials: int

    def as_json(self) -> Dict[str, Any]:
        return {"rung": self.rung, "budget": self.budget, "trials": self.trials}


@frozen
class Schedule:
    """The whole plan of a halving sweep over ``n`` configurations."""

    n: int  # configurations: the trials of rung 0
    param: str  # the budget parameter, set per rung
    metric: str
    mode: str  # min | max
    eta: int
    rungs: Tuple[Rung, ...]
    method: str = METHOD

    @property
    def min(self) -> Number:
        return self.rungs[0].budget

    @property
    def max(self) -> Number:
        return self.rungs[-1].budget

    @property
    def task_count(self) -> int:
        """Tasks planned in the spec: every trial at every rung (most never run)."""
        return self.n * len(self.rungs)

    @property
    def most_tasks(self) -> int:
        """The most tasks the schedule runs: the sum of the rung sizes."""
        return sum(r.trials for r in self.rungs)

    @property
    def budget_units(self) -> float:
        """Compute the schedule spends at most, in budget units (sum of trials x budget)."""
        return float(sum(r.trials * r.budget for r in self.rungs))

    @property
    def full_units(self) -> float:
        """What the full grid at the largest budget spends, in budget units."""
        return float(self.n * self.max)

    def index(self, rung: int, trial: int) -> int:
        """The task index of ``trial`` in ``rung``."""
        return rung * self.n + trial

    def locate(self, index: int) -> Tuple[int, int]:
        """``(rung, trial)`` of a task index."""
        return divmod(index, self.n)

    def is_last(self, rung: int) -> bool:
        return rung >= len(self.rungs) - 1

    def as_json(self) -> Dict[str, Any]:
        return {
            "method": self.method,
            "schema": SCHEMA,
            "n": self.n,
            "param": self.param,
            "metric": self.metric,
            "mode": self.mode,
            "eta": self.eta,
            "rungs": [r.as_json() for r in self.rungs],
        }

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Schedule":
        """The schedule as ``as_json`` wrote it; ``ValueError`` when it is not one."""
        try:
            rungs = tuple(Rung(int(r["rung"]), _number(r["budget"]), int(r["trials"])) for r in doc["rungs"])
            schedule = cls(int(doc["n"]), str(doc["param"]), str(doc["metric"]), str(doc["mode"]), int(doc["eta"]), rungs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a halving schedule: {exc}") from None
        if schedule.n < 1 or not rungs or schedule.mode not in ("min", "max") or doc.get("method") != METHOD:
            raise ValueError("not a halving schedule")
        return schedule


def _number(value: Any) -> Number:
    if type(value) in (int, float):
        return value
    raise ValueError(f"a budget must be a number, got {value!r}")


def plan(n: int, param: str, metric: str, mode: str, eta: int, low: Number, high: Number) -> Schedule:
    """The schedule of ``n`` configurations with budgets from ``low`` to ``high``."""
    values = budgets(low, high, eta)
    counts = sizes(n, eta, len(values))
    return Schedule(n, param, metric, mode, eta, tuple(Rung(i, b, c) for i, (b, c) in enumerate(zip(values, counts))))


# --- the decision ----------------------------------------------------------------------------


@frozen
class Outcome:
    """What one trial did in a rung: its task's final state (None: no trace of an end) and
    the last value it reported of the metric (None: none)."""

    trial: int
    state: Optional[str]
    value: Optional[float] = None


@frozen
class Verdict:
    """One trial's line of a decision: its outcome, whether it goes on, and why."""

    trial: int
    index: int
    state: Optional[str]
    value: Optional[float]
    promoted: bool
    rank: Optional[int]  # 1 = best, among the trials that qualified
    why: str

    def as_json(self) -> Dict[str, Any]:
        return {
            "trial": self.trial,
            "index": self.index,
            "state": self.state,
            "value": self.value,
            "rank": self.rank,
            "promoted": self.promoted,
            "why": self.why,
        }


@frozen
class Decision:
    """The end of a rung: every trial's verdict, who goes on (best first), the winner at the
    last rung. ``final``: nothing comes after (the last rung, or no trial qualified)."""

    rung: int
    budget: Number
    metric: str
    mode: str
    keep: int  # how many the rule keeps: floor(entered / eta), at least 1 (1 at the last rung: the winner)
    verdicts: List[Verdict]
    promoted: List[int]  # trial ids, best first
    final: bool
    winner: Optional[int] = None
    next_budget: Optional[Number] = None
    decided_at: str = ""
    by: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def qualified(self) -> int:
        return sum(1 for v in self.verdicts if v.rank is not None)

    def summary(self) -> str:
        """One line: who was promoted, or the winner, or why the schedule stopped."""
        if self.winner is not None:
            best = next(v for v in self.verdicts if v.trial == self.winner)
            return f"winner: trial {self.winner} ({self.metric} = {best.value:.6g})"
        if not self.promoted:
            return f"stopped: no trial of {len(self.verdicts)} completed with {self.metric}"
        return f"promoted {len(self.promoted)} of {self.qualified} with {self.metric}: " + ", ".join(map(str, self.promoted))

    def as_json(self) -> Dict[str, Any]:
        doc = {
            "schema": SCHEMA,
            "rung": self.rung,
            "budget": self.budget,
            "metric": self.metric,
            "mode": self.mode,
            "keep": self.keep,
            "promoted": list(self.promoted),
            "final": self.final,
            "winner": self.winner,
            "next_budget": self.next_budget,
            "decided_at": self.decided_at,
            "by": self.by,
            "summary": self.summary(),
            "trials": [v.as_json() for v in self.verdicts],
        }
        doc.update(self.extra)
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> "Decision":
        """A decision as ``as_json`` wrote it; ``ValueError`` when it is not one."""
        try:
            verdicts = [
                Verdict(
                    int(v["trial"]),
                    int(v["index"]),
                    v.get("state"),
                    _value(v.get("value")),
                    bool(v["promoted"]),
                    v.get("rank"),
                    str(v["why"]),
                )
                for v in doc["trials"]
            ]
            return cls(
                rung=int(doc["rung"]),
                budget=_number(doc["budget"]),
                metric=str(doc["metric"]),
                mode=str(doc["mode"]),
                keep=int(doc["keep"]),
                verdicts=verdicts,
                promoted=[int(t) for t in doc["promoted"]],
                final=bool(doc["final"]),
                winner=None if doc.get("winner") is None else int(doc["winner"]),
                next_budget=None if doc.get("next_budget") is None else _number(doc["next_budget"]),
                decided_at=str(doc.get("decided_at") or ""),
                by=str(doc.get("by") or ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a rung decision: {exc}") from None


def _value(value: Any) -> Optional[float]:
    if value is None:
        return None
    if type(value) in (int, float):
        return float(value)
    raise ValueError(f"a value must be a number, got {value!r}")


def qualifies(outcome: Outcome) -> bool:
    """Completed (exit code 0) and reported a finite value of the metric."""
    return outcome.state == "COMPLETED" and outcome.value is not None and math.isfinite(outcome.value)


def decide(schedule: Schedule, rung: int, outcomes: Sequence[Outcome], *, decided_at: str = "", by: str = "") -> Decision:
    """Who of ``rung``'s trials goes on: the best ``floor(entered / eta)`` (at least 1) of
    those that completed with the metric, by ``mode``; ties by trial id (the configuration's
    index). A trial that failed or reported nothing is never promoted. At the last rung the
    best one is the winner."""
    last = schedule.is_last(rung)
    sign = 1.0 if schedule.mode == "min" else -1.0
    ordered = sorted((o for o in outcomes if qualifies(o)), key=lambda o: (sign * float(o.value), o.trial))  # type: ignore[arg-type]
    keep = 1 if last else keep_count(len(outcomes), schedule.eta)
    chosen = [o.trial for o in ordered[:keep]]
    ranks = {o.trial: i + 1 for i, o in enumerate(ordered)}
    metric, total = schedule.metric, len(ordered)
    verdicts = []
    for o in sorted(outcomes, key=lambda o: o.trial):
        rank = ranks.get(o.trial)
        if rank is None:
            if o.state is None:
                why = "no end record: the task did not run to its end; never promoted"
            elif o.state != "COMPLETED":
                why = f"{o.state}: a trial that failed is never promoted"
            else:
                why = f"reported no {metric}: never promoted"
        elif last:
            why = "the best of the last rung: the winner" if rank == 1 else f"rank {rank} of {total} in the last rung"
        elif rank <= keep:
            why = f"rank {rank} of {total} by {metric} ({schedule.mode}): in the best {keep}"
        else:
            why = f"rank {rank} of {total} by {metric} ({schedule.mode}): below the best {keep}"
        promoted = rank is not None and rank <= keep and not last
        verdicts.append(Verdict(o.trial, schedule.index(rung, o.trial), o.state, o.value, promoted, rank, why))
    winner = chosen[0] if last and chosen else None
    final = last or not chosen
    return Decision(
        rung=rung,
        budget=schedule.rungs[rung].budget,
        metric=metric,
        mode=schedule.mode,
        keep=keep,
        verdicts=verdicts,
        promoted=[] if last else chosen,
        final=final,
        winner=winner,
        next_budget=None if final else schedule.rungs[rung + 1].budget,
        decided_at=decided_at,
        by=by,
    )


# --- where a schedule stands ------------------------------------------------------------------

#: A rung's state: not yet submitted; tasks running; tasks ended, the promotion job not yet
#: done; decided; the promotion failed (its job failed, or none was submitted); cancelled.
RUNG_STATES = ("planned", "running", "deciding", "decided", "failed", "cancelled")


@mutable
class RungStatus:
    """One rung as ``nexa status`` shows it."""

    rung: int
    budget: Number
    trials: List[int]  # the trials it runs (empty while planned)
    planned: int  # the most trials it runs
    buckets: Dict[str, int] = field(default_factory=dict)  # pending / running / done / failed
    job_ids: List[str] = field(default_factory=list)
    promote_job_id: Optional[str] = None
    promote_state: Optional[str] = None  # what Slurm says of the promotion job
    state: str = "planned"
    note: str = ""
    decision: Optional[Decision] = None

    def as_json(self) -> Dict[str, Any]:
        return {
            "rung": self.rung,
            "budget": self.budget,
            "trials": self.trials,
            "planned": self.planned,
            "buckets": self.buckets,
            "job_ids": self.job_ids,
            "promote_job_id": self.promote_job_id,
            "promote_state": self.promote_state,
            "state": self.state,
            "note": self.note,
            "promoted": self.decision.promoted if self.decision else None,
            "winner": self.decision.winner if self.decision else None,
        }


@mutable
class ScheduleStatus:
    """Where a halving run stands: each rung, and the schedule as a whole (``running``,
    ``finished`` with a winner, ``failed`` or ``cancelled``)."""

    schedule: Schedule
    rungs: List[RungStatus]
    state: str  # running | finished | failed | cancelled
    winner: Optional[int] = None
    message: str = ""

    @property
    def finished(self) -> bool:
        """Nothing more will run or be decided (a resume may start it again)."""
        return self.state != "running"

    @property
    def current(self) -> Optional[RungStatus]:
        """The last rung that was submitted."""
        started = [r for r in self.rungs if r.state != "planned"]
        return started[-1] if started else None

    def summary(self) -> str:
        current = self.current
        where = (
            f"rung {current.rung} of {len(self.rungs) - 1} ({self.schedule.param}={current.budget}): {current.state}"
            if current
            else "rung 0: planned"
        )
        return f"{where}; schedule {self.state}" + (f" ({self.message})" if self.message and self.state != "running" else "")

    def as_json(self) -> Dict[str, Any]:
        doc = self.schedule.as_json()
        doc.update(state=self.state, winner=self.winner, message=self.message, rung_status=[r.as_json() for r in self.rungs])
        return doc


def schedule_status(
    schedule: Schedule,
    entries: Sequence[Dict[str, Any]],
    decisions: Dict[int, Decision],
    errors: Dict[int, Dict[str, Any]],
    buckets: Dict[int, str],
    promote_states: Dict[str, Optional[str]],
    *,
    cancelled: bool = False,
    local: bool = False,
    now: float = 0.0,
) -> ScheduleStatus:
    """Each rung's state from the manifest's rung ``entries``, the ``decisions`` written,
    the promotion jobs' ``errors`` (rung -> record), each task's bucket (index -> pending /
    running / done / failed) and what Slurm says of the promotion jobs (job id -> state,
    None when Slurm no longer knows it). A rung still being submitted from the command line
    (``submitting_since``, no promotion job yet) counts as running for ``SUBMIT_GRACE``
    seconds after ``now``. Pure."""
    by_rung = {int(e["rung"]): e for e in entries}
    rows: List[RungStatus] = []
    state, message, winner = "running", "", None
    for planned in schedule.rungs:
        k = planned.rung
        entry = by_rung.get(k)
        row = RungStatus(k, planned.budget, [], planned.trials)
        rows.append(row)
        if entry is None:
            continue
        row.trials = [int(t) for t in entry.get("trials") or []]
        row.job_ids = [str(j) for j in entry.get("job_ids") or []]
        row.promote_job_id = str(entry["promote_job_id"]) if entry.get("promote_job_id") else None
        row.promote_state = promote_states.get(row.promote_job_id) if row.promote_job_id else None
        row.buckets = {b: 0 for b in ("pending", "running", "done", "failed")}
        for trial in row.trials:
            row.buckets[buckets.get(schedule.index(k, trial), "pending")] += 1
        active = row.buckets["pending"] + row.buckets["running"]
        decision = decisions.get(k)
        error = errors.get(k)
        if decision is not None:
            row.decision, row.state, row.note = decision, "decided", decision.summary()
            if decision.final:
                winner = decision.winner
                state = "finished" if decision.winner is not None else "failed"
                message = decision.summary()
            continue
        if error is not None and (local or str(error.get("job_id") or "") == (row.promote_job_id or "")):
            row.state, row.note = "failed", f"promotion failed: {error.get('error', '?')}"
        elif cancelled:
            row.state, row.note = "cancelled", "cancelled: no decision, no next rung (nexa resume continues)"
        elif local:
            row.state = "running" if active else "deciding"
        elif row.promote_job_id is None:
            submitter = str(entry.get("by_job") or "")
            since = entry.get("submitting_since")
            if submitter and promote_states.get(submitter) in _ALIVE:
                row.state, row.note = "running", f"being submitted by promotion job {submitter}"
            elif not submitter and type(since) in (int, float) and now - since < SUBMIT_GRACE:
                row.state, row.note = "running", "being submitted"
            else:
                row.state, row.note = "failed", "no promotion job was submitted (nexa resume submits one)"
                prior = errors.get(k - 1) or {}
                if submitter and str(prior.get("job_id") or "") == submitter:
                    why = prior.get("error", "?")
                    row.note = f"promotion job {submitter} submitted rung {k}, then failed: {why} (nexa resume submits its promotion job)"
        else:
            job, slurm_state = row.promote_job_id, row.promote_state
            if slurm_state in _ALIVE:
                row.state = "running" if active else "deciding"
                row.note = f"promotion job {job} {slurm_state}"
            elif slurm_state is None:
                row.state, row.note = "failed", f"promotion job {job} ended without a decision (Slurm no longer knows it; see its log)"
            else:
                row.state, row.note = "failed", f"promotion job {job} {slurm_state} without a decision (see its log)"
        if row.state in ("failed", "cancelled"):
            state, message = row.state, row.note
    last = max(by_rung, default=None)
    if state == "running" and last is not None and last in decisions and not decisions[last].final and last + 1 not in by_rung:
        # Decided, the next rung not recorded yet: its promotion job is submitting it, or died.
        job = str(by_rung[last].get("promote_job_id") or "")
        error = errors.get(last)
        if cancelled:
            state, message = "cancelled", "cancelled before the next rung was submitted (nexa resume continues)"
        elif not local and promote_states.get(job) not in _ALIVE:
            state, message = "failed", f"rung {last + 1} was never submitted (nexa resume submits it)"
            if error is not None and str(error.get("job_id") or "") == job:
                why = error.get("error", "?")
                message = f"promotion job {job} decided rung {last}, then failed: {why} (nexa resume submits rung {last + 1})"
        rows[last + 1].note = message or "being submitted"
    return ScheduleStatus(schedule, rows, state, winner, message)


#: How long a rung submitted from the command line may lack its promotion job (sbatch
#: takes well under a second; after this the submitting nexa is taken to have died).
SUBMIT_GRACE = 300.0

#: Slurm states of a job that has not ended.
_ALIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT"})
