"""A halving run's rungs on disk: the decisions (``rungs/<k>.json``), the promotion jobs'
error records (``rungs/<k>.error.json``), the lock their writers share, and where the
schedule stands, for ``status`` and ``wait``.

The decisions are written once, atomically, and never replaced: a decision already on disk
is the decision (re-running a promotion reuses it). Writers of the schedule (a promotion job,
``cancel``, ``resume``) hold ``rungs/.lock`` (``flock``) around read-modify-write of the
manifest; readers never lock. Standard library only: the promotion job imports this.
"""

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from .. import runs
from ..errors import NexaError
from ..fs import atomic_write_json
from ..tools import slurm
from .search import Decision, Schedule, ScheduleStatus, schedule_status

try:  # POSIX; where flock is missing, the manifest's atomic writes still keep readers safe
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"
ERROR_SUFFIX = ".error.json"


def schedule_of(doc: Dict[str, Any]) -> Optional[Schedule]:
    """The schedule in a spec's or manifest's ``search`` (None: not a halving run, or not one
    nexa can read)."""
    search = doc.get("search") if isinstance(doc, dict) else None
    if not isinstance(search, dict):
        return None
    try:
        return Schedule.from_json(search.get("schedule", search))
    except ValueError:
        return None


def run_schedule(run: runs.Run) -> Optional[Schedule]:
    """A halving run's schedule, from its spec or else its manifest; None for any other run."""
    if not run.halving:
        return None
    return schedule_of(run.spec) or schedule_of(run.manifest)


def decision_path(run_dir: Path, rung: int) -> Path:
    return Path(run_dir) / runs.RUNGS / f"{rung}.json"


def error_path(run_dir: Path, rung: int) -> Path:
    return Path(run_dir) / runs.RUNGS / f"{rung}{ERROR_SUFFIX}"


def _read(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_decision(run_dir: Path, rung: int) -> Optional[Decision]:
    """Rung ``rung``'s decision, or None when none was written (or the file is not one)."""
    try:
        return Decision.from_json(_read(decision_path(run_dir, rung)))
    except (OSError, ValueError):
        return None


def read_decisions(run_dir: Path) -> Dict[int, Decision]:
    """Every decision in ``rungs/``, by rung (one directory scan)."""
    out: Dict[int, Decision] = {}
    for name in _names(run_dir):
        stem = name[: -len(".json")]
        if stem.isdigit():
            found = read_decision(run_dir, int(stem))
            if found is not None and found.rung == int(stem):
                out[found.rung] = found
    return out


def read_errors(run_dir: Path) -> Dict[int, Dict[str, Any]]:
    """The promotion jobs' error records, by rung."""
    out: Dict[int, Dict[str, Any]] = {}
    for name in _names(run_dir):
        stem = name[: -len(ERROR_SUFFIX)] if name.endswith(ERROR_SUFFIX) else ""
        if stem.isdigit():
            try:
                doc = _read(error_path(run_dir, int(stem)))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict):
                out[int(stem)] = doc
    return out


def _names(run_dir: Path) -> List[str]:
    try:
        return [e.name for e in os.scandir(str(Path(run_dir) / runs.RUNGS)) if e.name.endswith(".json") and not e.name.startswith(".")]
    except OSError:
        return []


def write_decision(run_dir: Path, decision: Decision) -> Decision:
    """Write ``rungs/<k>.json`` unless a decision is there already; return the one on disk.
    Call it holding ``locked``: then the check and the write are one step."""
    existing = read_decision(run_dir, decision.rung)
    if existing is not None:
        return existing
    atomic_write_json(decision_path(run_dir, decision.rung), decision.as_json())
    return decision


def write_error(run_dir: Path, rung: int, record: Dict[str, Any]) -> Path:
    """``rungs/<k>.error.json``: why the promotion of rung ``k`` failed (the latest failure)."""
    return atomic_write_json(error_path(run_dir, rung), dict(record, rung=rung))


#: How long a schedule writer waits for another (a promotion job holds the lock for the
#: fraction of a second its decision and sbatch calls take).
LOCK_WAIT = 120.0


@contextlib.contextmanager
def locked(run_dir: Path, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Exclusive ``flock`` on ``rungs/.lock`` for the schedule's writers; ``NexaError`` when
    another holds it for more than ``wait`` seconds (a promotion job stuck in sbatch)."""
    folder = Path(run_dir) / runs.RUNGS
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(folder / LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise NexaError(f"{folder / LOCK}: held by another nexa (a promotion job?) for {wait:g} s; try again") from None
                time.sleep(0.05)
            except OSError:  # a filesystem without locks: the atomic writes still hold
                break
        yield
    finally:
        os.close(fd)


def task_indices(schedule: Schedule, manifest: Dict[str, Any]) -> List[int]:
    """The tasks ``status`` shows: those of every submitted rung, in rung and trial order
    (rung 0's while nothing is submitted)."""
    entries = sorted((e for e in manifest.get("rungs") or [] if isinstance(e, dict)), key=lambda e: int(e.get("rung", 0)))
    if not entries:
        return list(range(schedule.n))
    return [schedule.index(int(e["rung"]), int(t)) for e in entries for t in sorted(e.get("trials") or [])]


def promotion_jobs(manifest: Dict[str, Any], decisions: Dict[int, Decision]) -> List[str]:
    """The promotion jobs whose state matters: those of undecided rungs, the submitter of a
    rung without one, and the job of the last decision (it submits the next rung)."""
    entries = [e for e in manifest.get("rungs") or [] if isinstance(e, dict)]
    ids: List[str] = []
    last = max((int(e["rung"]) for e in entries), default=None)
    for entry in entries:
        k = int(entry["rung"])
        if k not in decisions or k == last:
            for key in ("promote_job_id", "by_job"):
                if entry.get(key):
                    ids.append(str(entry[key]))
    return list(dict.fromkeys(ids))


def status(
    run_dir: Path,
    schedule: Schedule,
    manifest: Dict[str, Any],
    buckets: Dict[int, str],
    known: Optional[Dict[str, Optional[str]]] = None,
    ask: bool = True,
) -> ScheduleStatus:
    """Where the schedule stands: the decisions and error records on disk, what Slurm says of
    the promotion jobs that matter. ``known``: their states as the caller's squeue call saw
    them (None: forgotten by Slurm); a job not in it is asked with ``scontrol show job``, or
    with ``ask`` false taken as PENDING (submitted since the caller asked: it exists).

    Slurm is asked first and the run folder read again afterwards: a promotion job writes the
    next rung into the manifest before it ends, so a job seen ended while the manifest lacks
    its rung really failed, and is not a manifest read a moment too early."""
    local = manifest.get("backend") != "slurm"
    states: Dict[str, Optional[str]] = {}
    decisions = read_decisions(run_dir)
    seen = _entries(manifest)
    for _ in range(5):  # until the manifest names no promotion job not asked about yet
        wanted = [] if local else [j for j in promotion_jobs(manifest, decisions) if j not in states]
        if not wanted:
            break
        for job in wanted:
            if known is not None and job in known:
                states[job] = known[job]
            else:
                states[job] = slurm.job_outcome(job)[0] if ask else "PENDING"
        try:
            fresh = runs.read_manifest(run_dir)
        except (OSError, ValueError):
            fresh = None
        if isinstance(fresh, dict) and runs.run_manifest_problem(fresh) is None:
            manifest = fresh
        decisions = read_decisions(run_dir)
    entries = [e for e in manifest.get("rungs") or [] if isinstance(e, dict)]
    found = schedule_status(
        schedule,
        entries,
        decisions,
        read_errors(run_dir),
        buckets,
        states,
        cancelled=bool(manifest.get("cancelled")),
        local=local,
        now=time.time(),
    )
    if _entries(manifest) != seen and found.finished:
        # A rung appeared since the caller read the manifest: its tasks are not in the
        # caller's rows yet, so the schedule cannot be called over on this reading.
        found.state, found.message = "running", ""
    return found


def _entries(manifest: Dict[str, Any]) -> List[Any]:
    return [(e.get("rung"), e.get("trials")) for e in manifest.get("rungs") or [] if isinstance(e, dict)]
