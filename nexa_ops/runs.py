"""The run folder: nexa's central object on disk, read and written only here.

A run folder holds what was planned (``spec.json``, the argv lookups ``spec.nul`` for the array
script and ``spec.argv`` for the worker, the sbatch script), what was submitted
(``manifest.json``: backend, job ids, chunks, resubmissions) and what ran
(``tasks/<i>.start.json`` from the array script or the worker, ``tasks/<i>.end.json``
from the array script or the local runner, ``tasks/attempts/`` for requeued attempts, and
``logs/``). ``docs/run-folder.md`` describes every file.

This module owns the schemas of those files (what a reader may trust), the one writer of the
manifest, the state vocabulary every reader shares (status, wait, cost, results), and the
mapping of task indices to the array elements that ran them (``slots``).
"""

import json
import math
import os
import pwd
import signal as _signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import pids
from .config import NexaConfig, load_config
from .errors import ConfigError
from .schema import INTEGER, LIST, NUMBER, OBJECT, STRING, field_problem, nullable, shown
from .structs import mutable
from .tools.slurm import expand_array, script_directive, warn_signal_of
from .worker import INDEX_NAME, NUL_NAME

MANIFEST = "manifest.json"
SPEC = "spec.json"
TASKS = "tasks"
ATTEMPTS = "attempts"
LOGS = "logs"
METRICS = "metrics"  # <index>.jsonl: what each task reported ($NEXA_METRICS_FILE)
CODE = "code"  # the snapshot of the project the tasks run from (--snapshot)
CODE_DIFF = "code.diff"  # the uncommitted changes at submission (git diff HEAD)
OUT = "out"  # out/<i>: task i's own folder ($NEXA_TASK_DIR), made by the program if it wants one
RUNGS = "rungs"  # halving sweeps: <k>.json, the decision of rung k (sweep/promote.py)
TRIALS = "trials"  # halving sweeps: <id>/, each trial's own folder ($NEXA_TRIAL_DIR)

RunRef = Union[None, str, Path]

# --- states --------------------------------------------------------------------------------
#
# One vocabulary for every run, Slurm's or local: Slurm's job state names, plus PLANNED (not
# submitted), UNKNOWN (no trace of the task) and INTERRUPTED (a local task stopped by a signal
# to its runner, Ctrl-C or SIGTERM, or whose runner is gone). Each state falls in one bucket.

PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD", "PLANNED"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "STOPPED", "RESIZING"})
DONE_STATES = frozenset({"COMPLETED"})
FAILED_STATES = frozenset({"FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "UNKNOWN"})
STATES = PENDING_STATES | RUNNING_STATES | DONE_STATES | FAILED_STATES  # what a task row may show
#: End states a local runner writes into an end record itself (``"state"``): it knows why it
#: stopped a task, which an exit code alone does not say. Both are in the failed bucket.
RECORDED_STATES = frozenset({"INTERRUPTED", "CANCELLED"})
BUCKETS = ("pending", "running", "done", "failed")


def bucket(state: str) -> str:
    """pending / running / done / failed: every state that will not change again and is not
    COMPLETED (FAILED, TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL, UNKNOWN...) is failed."""
    if state in PENDING_STATES:
        return "pending"
    if state in RUNNING_STATES:
        return "running"
    if state in DONE_STATES:
        return "done"
    return "failed"


def is_final(state: str) -> bool:
    """The state will not change again (done or failed)."""
    return bucket(state) in ("done", "failed")


def signal_number(name: str) -> int:
    return int(getattr(_signal, f"SIG{name}", 0))


#: ``--state`` as given: comma-separated text, a list, or None (every state).
States = Union[None, str, Sequence[str]]


def parse_states(state: States) -> Optional[frozenset]:
    """``--state``: Slurm states or buckets, comma-separated or a list, any case."""
    if state is None:
        return None
    items = state.split(",") if isinstance(state, str) else list(state)
    wanted = set()
    for item in items:
        word = str(item).strip()
        if word.lower() in BUCKETS:
            wanted.add(word.lower())
        elif word.upper() in STATES:
            wanted.add(word.upper())
        else:
            raise ConfigError(
                f"--state: expected a task state (COMPLETED, FAILED, RUNNING...) or pending, running, done, failed; got {word!r}"
            )
    return frozenset(wanted)


def record_state(end: Dict[str, Any], warn_signal: str = "USR1") -> str:
    """A finished task's state from its end record alone (Slurm has forgotten it).

    TERM after the warning signal is the time limit (or a preemption); TERM alone a cancel;
    a program that died of the forwarded warning itself ran out of time too.
    """
    code = end.get("exit_code")
    signals = str(end.get("signals") or "").split()
    if end.get("state") in RECORDED_STATES and code != 0:
        return str(end["state"])
    if code == 0:
        return "COMPLETED"
    if "TERM" in signals:
        return "TIMEOUT" if warn_signal in signals else "CANCELLED"
    if warn_signal in signals and code == 128 + signal_number(warn_signal):
        return "TIMEOUT"
    return "FAILED"


# --- ids, folders, people, time ------------------------------------------------------------


def new_run_id(name: str) -> str:
    """``<name>-<UTC yyyymmdd-HHMMSS>-<4 hex>``: sortable by time, unique without a lock."""
    import secrets  # lazy, as getpass and fs below: only making a run needs them, and every status loads this module

    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


#: A run folder's mode: never writable by the group or others, whatever the umask (and a
#: shared runs folder's default ACL): what is in it decides what the tasks run.
RUN_DIR_MODE = 0o755


def create_run_dir(runs_dir: Path, name: str) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    while True:
        path = runs_dir / new_run_id(name)
        try:
            path.mkdir(mode=RUN_DIR_MODE)  # the umask can only take bits away
            return path
        except FileExistsError:  # pragma: no cover - 1 in 65536 in the same second
            continue


def foreign_problem(path: Path) -> Optional[str]:
    """Why the files of run folder ``path`` that decide what its tasks run (the folder, its
    spec, its index, its scripts) are not this user's alone (owned by another user, or
    writable by the group or others), or None. The worker refuses such files: a run that is
    not yours alone must not be submitted (again) by you."""
    candidates = [path, path / SPEC, path / INDEX_NAME, path / NUL_NAME, *sorted(path.glob("*.sbatch"))]
    for item in candidates:
        try:
            st = item.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"{item}: {exc.strerror}"
        if st.st_uid != os.geteuid():
            return f"{item} belongs to another user (uid {st.st_uid}): its tasks would run what that user can change"
        if st.st_mode & 0o022:
            return f"{item} is writable by others (mode {st.st_mode & 0o7777:04o}): chmod go-w it first"
    return None


def user() -> str:
    """The real user's name, from the uid (never from ``$LOGNAME``/``$USER``, which anyone can
    set: ``LOGNAME=alice`` must not bill alice); the uid itself without a passwd entry."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry in some containers
        return str(os.getuid())


def now_iso(when: Optional[float] = None) -> str:
    """UTC time as the manifests write it: ``2025-12-31T18:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / MANIFEST).exists() or (path / SPEC).exists())


def latest_run(runs_dir: Path) -> Optional[Path]:
    """The most recent run folder that has a manifest or a spec."""
    candidates = run_dirs(runs_dir)
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def run_dirs(runs_dir: Path) -> List[Path]:
    """Every run folder directly under ``runs_dir`` (a manifest or a spec inside)."""
    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and is_run_dir(Path(e.path))]


#: How many matches an ambiguous run prefix lists.
SHOWN_MATCHES = 10


def resolve_run(run: RunRef = None, config: Optional[NexaConfig] = None) -> Path:
    """A run folder path, a run id under the runs directory, a unique prefix of one, or
    (None) the latest run.

    Raises:
        ConfigError: no run at all, no such run, or a prefix that several run ids start with
            (the message lists them).
    """
    cfg = config or load_config()
    if run is None or str(run) == "":
        latest = latest_run(cfg.runs_dir)
        if latest is None:
            raise ConfigError(f"no runs in {cfg.runs_dir}: pass RUN (a run folder or run id)")
        return latest
    for path in (Path(run).expanduser(), cfg.runs_dir / str(run)):
        if is_run_dir(path):
            return path.resolve()
    text = str(run)
    plain = "/" not in text and text not in (".", "..")  # a plain name, not a path
    matches = sorted(p.name for p in run_dirs(cfg.runs_dir) if p.name.startswith(text)) if plain else []
    if len(matches) == 1:
        return (cfg.runs_dir / matches[0]).resolve()
    if matches:
        shown = ", ".join(matches[:SHOWN_MATCHES]) + (f" and {len(matches) - SHOWN_MATCHES} more" if len(matches) > SHOWN_MATCHES else "")
        raise ConfigError(f"{run}: ambiguous run prefix, {len(matches)} runs in {cfg.runs_dir} start with it: {shown}")
    raise ConfigError(f"{run}: not a run folder or a run id in {cfg.runs_dir} (no manifest.json or spec.json)")


# --- schemas: what a reader may trust ------------------------------------------------------

CHUNK_FIELDS = {
    "offset": INTEGER,
    "count": INTEGER,
    "job_id": nullable(((str, int), "a string")),
    "array": nullable(STRING),
    "submitted_at": nullable(NUMBER),
    "resubmit": nullable(INTEGER),
}
RUN_MANIFEST_FIELDS = {
    "run_id": nullable(STRING),
    "name": nullable(STRING),
    "backend": STRING,
    "script": nullable(STRING),
    "tasks": nullable(INTEGER),
    "job_ids": LIST,
    "chunks": LIST,
    "resubmits": LIST,
    "runner": nullable(OBJECT),
    "search": nullable(OBJECT),  # halving sweeps: the schedule and what the promotion job needs
    "rungs": LIST,  # halving sweeps: one entry per submitted rung (set_rung)
}
SPEC_FIELDS = {"name": nullable(STRING), "count": nullable(INTEGER), "tasks": LIST}
SPEC_TASK_FIELDS = {"index": INTEGER, "params": OBJECT}
RECORD_FIELDS = {
    "start": NUMBER,
    "end": NUMBER,
    "exit_code": nullable(INTEGER),
    "restart_count": nullable(INTEGER),
    "host": nullable(STRING),
    "node": nullable(STRING),
    "signals": nullable(STRING),
    "state": nullable(STRING),
}
#: ``manifest.json``'s ``runner``: the process running a local run's tasks (see ``pids``).
RUNNER_FIELDS = {
    "pid": INTEGER,
    "host": STRING,
    "pid_start": nullable(INTEGER),
    "boot_id": nullable(STRING),
    "started_at": nullable(STRING),
}


def chunks_problem(chunks: Sequence[Any]) -> Optional[str]:
    """What is wrong with a manifest's ``chunks`` (run and cost manifests share them), or None."""
    for i, chunk in enumerate(chunks):
        if type(chunk) is not dict:
            return f"chunks[{i}] must be an object, got {shown(chunk)}"
        problem = field_problem(chunk, CHUNK_FIELDS, f"chunks[{i}].")
        if problem:
            return problem
        if chunk.get("array"):
            try:
                expand_array(chunk["array"])
            except ValueError:
                return f"chunks[{i}].array must be an array index spec like 0,4,7-9, got {shown(chunk['array'])}"
    return None


def run_manifest_problem(manifest: Any) -> Optional[str]:
    """What makes a run's ``manifest.json`` unusable by status/cancel/resubmit, or None."""
    if type(manifest) is not dict:
        return f"expected a JSON object, got {shown(manifest)}"
    problem = field_problem(manifest, RUN_MANIFEST_FIELDS) or chunks_problem(manifest.get("chunks") or [])
    if problem is None and manifest.get("runner") is not None:
        problem = field_problem(manifest["runner"], RUNNER_FIELDS, "runner.")
    return problem


def spec_problem(spec: Any) -> Optional[str]:
    """What makes a run's ``spec.json`` unusable by status/cancel/resubmit, or None."""
    if type(spec) is not dict:
        return f"expected a JSON object, got {shown(spec)}"
    problem = field_problem(spec, SPEC_FIELDS)
    if problem:
        return problem
    for i, task in enumerate(spec.get("tasks") or []):
        if type(task) is not dict:
            return f"tasks[{i}] must be an object, got {shown(task)}"
        problem = field_problem(task, SPEC_TASK_FIELDS, f"tasks[{i}].")
        if problem:
            return problem
    return None


def _is_record(data: Dict[str, Any]) -> bool:
    """Right types, and times that are finite numbers (JSON as Python reads it allows NaN
    and Infinity, which would make every cost figure computed from them useless)."""
    if field_problem(data, RECORD_FIELDS) is not None:
        return False
    return all(math.isfinite(data[k]) for k in ("start", "end") if data.get(k) is not None)


# --- the spec: what each task runs ----------------------------------------------------------

SPEC_SCHEMA = 1


def spec_document(
    name: str,
    campaign: Optional[str],
    command: Sequence[str],
    workdir: Path,
    run_dir: Path,
    tasks: Sequence[Any],
    search: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """``spec.json``: the planned tasks (objects with ``index``, ``params`` and ``argv``), and
    for a halving sweep its ``search`` schedule (task ``rung * n + trial``)."""
    extra = {"search": search} if search is not None else {}
    return {
        "schema": SPEC_SCHEMA,
        "name": name,
        "campaign": campaign,
        "command": list(command),
        "workdir": str(workdir),
        "run_dir": str(run_dir),
        "count": len(tasks),
        **extra,
        "tasks": [{"index": t.index, "params": t.params, "argv": t.argv} for t in tasks],
    }


# --- the manifest: the one writer ----------------------------------------------------------


def new_manifest(run_id: str, name: str, backend: str, *, campaign: Optional[str] = None, **fields: Any) -> Dict[str, Any]:
    """A run's ``manifest.json`` at submission: who, when, where; ``fields`` add the rest
    (``spec``, ``script``, ``tasks``, ``job_ids``, ``chunks``, a launch's ``argv``...)."""
    doc: Dict[str, Any] = {
        "run_id": run_id,
        "name": name,
        "campaign": campaign,
        "backend": backend,
        "user": user(),
        "submitted_at": now_iso(),
    }
    doc.update(fields)
    return doc


def write_manifest(run_dir: Path, data: Dict[str, Any]) -> Path:
    from .fs import atomic_write_json  # tempfile and shutil: for writers only

    return atomic_write_json(run_dir / MANIFEST, data)


def read_manifest(run_dir: Path) -> Dict[str, Any]:
    return json.loads(read_small(str(run_dir / MANIFEST)).decode("utf-8"))


def add_submission(run_dir: Path, manifest: Dict[str, Any], chunk: Dict[str, Any], resubmit: Optional[Dict[str, Any]] = None) -> None:
    """Record one more accepted array submission (its chunk, its job id, and for a
    resubmission its entry in ``resubmits``) and write the manifest at once."""
    manifest.setdefault("chunks", []).append(chunk)
    manifest.setdefault("job_ids", []).append(chunk["job_id"])
    if resubmit is not None:
        entries = manifest.setdefault("resubmits", [])
        if resubmit not in entries:
            entries.append(resubmit)
    write_manifest(run_dir, manifest)


def set_rung(run_dir: Path, manifest: Dict[str, Any], entry: Dict[str, Any]) -> None:
    """Record (or update) a halving sweep's rung ``entry`` (``rung``, ``budget``, ``trials``,
    ``job_ids``, ``promote_job_id``...) in ``rungs`` and write the manifest at once. Its
    array submissions go through ``add_submission`` like any other."""
    rungs = manifest.setdefault("rungs", [])
    for i, old in enumerate(rungs):
        if old.get("rung") == entry["rung"]:
            rungs[i] = entry
            break
    else:
        rungs.append(entry)
    write_manifest(run_dir, manifest)


# --- a local run's runner -------------------------------------------------------------------
#
# A local run's tasks are children of one ``nexa`` process (``sweep --local``, ``resubmit
# --failed --local``), which writes their end records. The manifest records it (``runner``),
# so that a task left without an end record by a runner that died (SIGKILL, a closed laptop)
# is shown INTERRUPTED instead of RUNNING for ever, and ``cancel`` knows whom to signal.

RUNNER_ALIVE = "alive"
RUNNER_GONE = "gone"
RUNNER_ELSEWHERE = "elsewhere"  # on another host: this one cannot tell


def new_runner() -> Dict[str, Any]:
    """This process as a local run's ``runner``: pid, host, start time, boot id."""
    return dict(pids.identity(), started_at=now_iso())


def runner_state(manifest: Dict[str, Any]) -> Optional[str]:
    """``alive``, ``gone`` or ``elsewhere`` for a local run's recorded runner; None when the
    manifest records none (runs made before nexa recorded it: nothing can be told)."""
    runner = manifest.get("runner")
    if type(runner) is not dict or type(runner.get("pid")) is not int:
        return None
    if runner.get("host") != pids.hostname():
        return RUNNER_ELSEWHERE
    return RUNNER_ALIVE if pids.alive(runner["pid"], runner.get("pid_start"), runner.get("boot_id")) else RUNNER_GONE


def runner_text(manifest: Dict[str, Any]) -> str:
    """``runner pid 4242 on host gpu01`` (for messages)."""
    runner = manifest.get("runner") or {}
    return f"runner pid {runner.get('pid')} on host {runner.get('host')}"


# --- where each task ran: chunks and slots -------------------------------------------------


@mutable
class Slot:
    """Where a task index was last submitted: array job ``job_id``, element ``array_task_id``."""

    job_id: str
    array_task_id: int
    submitted_at: Optional[float] = None  # set for resubmissions: older records are stale

    @property
    def element(self) -> str:
        return f"{self.job_id}_{self.array_task_id}"


def chunk_indices(chunk: Dict[str, Any]) -> List[int]:
    """Array indices of one manifest chunk: ``array`` (a resubmission's list) or ``0..count-1``."""
    if chunk.get("array"):
        return expand_array(str(chunk["array"]))
    return list(range(int(chunk.get("count", 0))))


def slots(manifest: Dict[str, Any]) -> Dict[int, Slot]:
    """Task index -> its latest submission; task = chunk offset + array index."""
    out: Dict[int, Slot] = {}
    chunks = manifest.get("chunks") or []
    if not chunks and manifest.get("job_ids"):  # a single array written without chunks
        chunks = [{"offset": 0, "count": manifest.get("tasks") or 0, "job_id": manifest["job_ids"][0]}]
    for chunk in chunks:
        if not chunk.get("job_id"):
            continue
        offset = int(chunk.get("offset", 0))
        for element in chunk_indices(chunk):
            out[offset + element] = Slot(str(chunk["job_id"]), element, chunk.get("submitted_at"))
    return out


def job_offsets(manifest: Dict[str, Any]) -> Dict[str, int]:
    """Each submitted job id -> the task index its array index 0 stands for."""
    offsets = {str(c["job_id"]): int(c.get("offset", 0)) for c in manifest.get("chunks") or [] if isinstance(c, dict) and c.get("job_id")}
    for job_id in manifest.get("job_ids") or []:
        offsets.setdefault(str(job_id), 0)
    return offsets


# --- what ran: task and attempt records ----------------------------------------------------


def task_records(run_dir: Path, names: Optional[Sequence[str]] = None) -> Dict[int, Dict[str, Any]]:
    """The worker's ``<i>.start.json`` and the script's ``<i>.end.json`` merged per task;
    with ``names`` (file names in ``tasks/``) only those files are read.

    A file that is not a task record (not a JSON object, or a field of the wrong type) is
    ignored like one being written: the writers replace records atomically, so such a file
    was put there by someone else."""
    return _merged(Path(run_dir) / TASKS, lambda name: int(name.split(".", 1)[0]), names)


def mtime_ns(path: Path) -> Optional[int]:
    """A run-folder entry's mtime in ns (one stat; None without it). ``tasks/``'s changes when a
    record is added, replaced or removed, the manifest's when it is rewritten: a follower
    scans the folder, or asks Slurm again, only then."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def task_names(run_dir: Path) -> List[str]:
    """The file names in ``tasks/`` (one scan, no stat of each, no read); [] without it."""
    try:
        return [entry.name for entry in os.scandir(Path(run_dir) / TASKS)]
    except OSError:
        return []


def task_record(run_dir: Path, index: int) -> Dict[str, Any]:
    """One task's merged record, as ``task_records`` has it, reading only its two files."""
    record: Dict[str, Any] = {}
    for kind in ("start", "end"):
        try:
            with open(Path(run_dir) / TASKS / f"{index}.{kind}.json", encoding="utf-8") as fh:
                data = json.load(fh)
        except (ValueError, OSError):
            continue
        if type(data) is dict and _is_record(data):
            record.update(data)
    return record


def keep_local_attempts(run_dir: Path, indices: Sequence[int]) -> None:
    """Before local tasks run again (``resubmit --failed --local``, ``resume``): move each
    one's records to ``tasks/attempts/<i>.local.<n>.*`` and its logs to
    ``logs/local_<i>.attempt<n>.*``, ``n`` its first free attempt number, so the attempts that
    already ran stay billed (reconcile reads every attempt record) and readable."""
    tasks, logs = Path(run_dir) / TASKS, Path(run_dir) / LOGS
    for i in indices:
        records = [tasks / f"{i}.{kind}.json" for kind in ("start", "end")]
        if not any(p.exists() for p in records):
            continue  # never ran: nothing to keep
        (tasks / ATTEMPTS).mkdir(mode=0o755, exist_ok=True)
        n = 1
        while any((tasks / ATTEMPTS / f"{i}.local.{n}.{kind}.json").exists() for kind in ("start", "end")):
            n += 1
        moves = [(tasks / f"{i}.{kind}.json", tasks / ATTEMPTS / f"{i}.local.{n}.{kind}.json") for kind in ("start", "end")]
        moves += [(logs / f"local_{i}.{ext}", logs / f"local_{i}.attempt{n}.{ext}") for ext in ("out", "err")]
        for old, new in moves:
            try:
                os.replace(str(old), str(new))
            except FileNotFoundError:
                pass


def attempt_records(run_dir: Path) -> List[Dict[str, Any]]:
    """The attempts Slurm requeued, one merged start + end record each
    (``tasks/attempts/<i>.<job>.<restart>.start|end.json``): they ran, and cost, before the
    task's last attempt, whose records are the ones in ``tasks/``."""
    return list(_merged(Path(run_dir) / TASKS / ATTEMPTS, lambda name: name.rsplit(".", 2)[0]).values())


def read_small(path: str) -> bytes:
    """A whole small file with the fewest file-system calls: open, one read, close.

    Python's ``open()`` adds an fstat, an ioctl and lseeks, and a second read to see the end:
    on a network file system each is a round trip, paid for every one of thousands of task
    records. A read that fills the buffer is followed by more, so a large file still comes
    back whole."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, 65536)
        if len(data) == 65536:
            parts = [data]
            while True:
                more = os.read(fd, 1 << 20)
                if not more:
                    break
                parts.append(more)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def _merged(folder: Path, key: Callable[[str], Any], names: Optional[Sequence[str]] = None) -> Dict[Any, Dict[str, Any]]:
    """Every visible ``*.json`` task record in ``folder`` (or the ones in ``names``), merged
    by ``key(file name)``: one scan of the folder and one read per record. A file that cannot
    be read or parsed (one being written) is skipped."""
    records: Dict[Any, Dict[str, Any]] = {}
    if names is None:
        try:
            names = [entry.name for entry in os.scandir(folder)]
        except OSError:
            return records
    base = str(folder) + os.sep
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            k = key(name)
            data = json.loads(read_small(base + name).decode("utf-8"))
        except (ValueError, OSError):
            continue
        if type(data) is dict and _is_record(data):
            records.setdefault(k, {}).update(data)
    return records


def current_records(record: Dict[str, Any], slot: Optional[Slot]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a merged ``task_records`` entry into (start, end), dropping what an earlier
    submission wrote (a resubmitted task's old end record until its new attempt starts)."""
    start = {k: record[k] for k in ("start", "host", "restart_count") if k in record}
    end = {k: record[k] for k in ("exit_code", "end", "node", "signals", "restart_count", "state") if k in record}
    since = slot.submitted_at if slot else None
    if since is not None:
        if start.get("start", since) < since - 1:
            start = {}
        if end.get("end", since) < since - 1:
            end = {}
    if end and start.get("start") and end.get("end", 0) < start["start"] - 1:
        end = {}  # a new attempt has started since that end
    return start, end


def current_task_records(records: Dict[int, Dict[str, Any]], manifest: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    """``records`` without what replaced attempts wrote (see ``current_records``)."""
    where = slots(manifest)
    out = {}
    for index, record in records.items():
        start, end = current_records(record, where.get(index))
        if start or end:
            out[index] = {**start, **end}
    return out


# --- a run folder as read from disk ---------------------------------------------------------


@mutable
class Run:
    """A run folder as read from disk: its manifest, spec and sbatch script."""

    path: Path
    manifest: Dict[str, Any]
    spec: Dict[str, Any]
    script_text: str

    @property
    def backend(self) -> str:
        return self.manifest.get("backend", "planned") if self.manifest else "planned"

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @property
    def count(self) -> int:
        return int(self.spec.get("count") or len(self.spec.get("tasks", [])) or self.manifest.get("tasks") or 0)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.spec.get("name") or self.path.name)

    @property
    def script(self) -> Optional[Path]:
        if self.manifest.get("script"):
            return Path(self.manifest["script"])
        found = sorted(self.path.glob("*.sbatch"))
        return found[0] if found else None

    @property
    def halving(self) -> bool:
        """A successive-halving run (a ``search`` table in its spec or manifest): a cheap test,
        before anything reads the schedule."""
        return "search" in self.spec or "search" in self.manifest

    @property
    def warn_signal(self) -> str:
        """The signal the script forwards before the time limit (parsed once: status asks it
        for every task)."""
        cached = self.__dict__.get("_warn_signal")
        if cached is None:
            cached = self.__dict__["_warn_signal"] = warn_signal_of(self.script_text)
        return cached

    def directive(self, option: str) -> Optional[str]:
        """The value of ``#SBATCH --<option>=`` in the run's script."""
        return script_directive(self.script_text, option)

    def params(self) -> Dict[int, Dict[str, Any]]:
        """Task index -> its parameters, from the spec."""
        return {int(t["index"]): t.get("params", {}) for t in self.spec.get("tasks", []) if "index" in t}

    def slots(self) -> Dict[int, Slot]:
        return slots(self.manifest) if self.backend == "slurm" else {}


def load_run(path: Path, spec: Optional[Dict[str, Any]] = None) -> Run:
    """The run folder's manifest, spec and sbatch script; a ``spec`` already read is taken
    as it is (it never changes once planned: a follower reads only the manifest again).

    Raises:
        ConfigError: a manifest or spec that cannot be read, or is not a nexa run manifest or
            spec (the message names the file and the first wrong field).
    """
    manifest: Dict[str, Any] = {}
    known = spec is not None
    spec = spec or {}
    try:
        if (path / MANIFEST).exists():
            manifest = read_manifest(path)
            problem = run_manifest_problem(manifest)
            if problem:
                raise ConfigError(f"not a nexa run manifest: {problem}", str(path / MANIFEST))
        if not known and (path / SPEC).exists():
            spec = json.loads(read_small(str(path / SPEC)).decode("utf-8"))
            problem = spec_problem(spec)
            if problem:
                raise ConfigError(f"not a nexa run spec: {problem}", str(path / SPEC))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the run folder: {exc}") from None
    run = Run(path, manifest, spec, "")
    if run.script and run.script.exists():
        run.script_text = run.script.read_text(encoding="utf-8", errors="replace")
    return run
