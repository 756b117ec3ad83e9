"""Follow a run: status, wait, logs, cancel, resubmit of failed tasks.

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
import signal as _signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import runs
from .config import NexaConfig, load_config
from .errors import ConfigError, NexaError, Refused

PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD", "PLANNED"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "STOPPED", "RESIZING"})
DONE_STATES = frozenset({"COMPLETED"})
BUCKETS = ("pending", "running", "done", "failed")

RunRef = Union[None, str, Path]


class WaitTimeout(NexaError):
    """``wait`` gave up before every task finished. Exit code 124, as timeout(1)."""

    exit_code = 124


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


@dataclass
class Slot:
    """Where a task index was last submitted: array job ``job_id``, element ``array_task_id``."""

    job_id: str
    array_task_id: int
    submitted_at: Optional[float] = None  # set for resubmissions: older records are stale

    @property
    def element(self) -> str:
        return f"{self.job_id}_{self.array_task_id}"


@dataclass
class SlurmInfo:
    """What the scheduler says about one array element (from squeue, scontrol or sacct)."""

    state: str
    source: str
    exit_code: Optional[int] = None
    restarts: int = 0
    node: Optional[str] = None
    elapsed: Optional[float] = None
    reason: str = ""


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
            "tasks": [asdict(t) for t in self.tasks],
        }


# --- pure: manifests, Slurm output, records -> rows ----------------------------------------


def expand_array(spec: str) -> List[int]:
    """``0-3,7,9-13:2%4`` -> indices (the throttle is dropped)."""
    out: List[int] = []
    for part in spec.split("%", 1)[0].split(","):
        part = part.strip()
        if not part:
            continue
        rng, _, step = part.partition(":")
        lo, dash, hi = rng.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (step and not step.isdigit()):
            raise ValueError(f"not an array index spec: {spec!r}")
        out.extend(range(int(lo), int(hi if dash else lo) + 1, int(step or 1)))
    return out


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


# --- checking what was read from disk -------------------------------------------------------

_NONE = type(None)
_INTEGER = ((int,), "an integer")  # bool is not: type() is compared, not isinstance()
_NUMBER = ((int, float), "a number")
_STRING = ((str,), "a string")
_LIST = ((list,), "a list")
_OBJECT = ((dict,), "an object")


def _nullable(kind: Tuple[Tuple[type, ...], str]) -> Tuple[Tuple[type, ...], str]:
    return (kind[0] + (_NONE,), kind[1])


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def field_problem(doc: Dict[str, Any], fields: Dict[str, Tuple[Tuple[type, ...], str]], prefix: str = "") -> Optional[str]:
    """The first field of ``doc`` named in ``fields`` (key -> (types, what)) whose value has
    another type, as ``"<prefix><key> must be <what>, got <value>"``; None when all are right.
    An absent field passes; null passes where ``NoneType`` is among the types."""
    for key, (types, what) in fields.items():
        if key in doc and type(doc[key]) not in types:
            return f"{prefix}{key} must be {what}, got {_shown(doc[key])}"
    return None


CHUNK_FIELDS = {
    "offset": _INTEGER,
    "count": _INTEGER,
    "job_id": _nullable(((str, int), "a string")),
    "array": _nullable(_STRING),
    "submitted_at": _nullable(_NUMBER),
    "resubmit": _nullable(_INTEGER),
}


def chunks_problem(chunks: Sequence[Any]) -> Optional[str]:
    """What is wrong with a manifest's ``chunks`` (run and cost manifests share them), or None."""
    for i, chunk in enumerate(chunks):
        if type(chunk) is not dict:
            return f"chunks[{i}] must be an object, got {_shown(chunk)}"
        problem = field_problem(chunk, CHUNK_FIELDS, f"chunks[{i}].")
        if problem:
            return problem
        if chunk.get("array"):
            try:
                expand_array(chunk["array"])
            except ValueError:
                return f"chunks[{i}].array must be an array index spec like 0,4,7-9, got {_shown(chunk['array'])}"
    return None


RUN_MANIFEST_FIELDS = {
    "run_id": _nullable(_STRING),
    "name": _nullable(_STRING),
    "backend": _STRING,
    "script": _nullable(_STRING),
    "tasks": _nullable(_INTEGER),
    "job_ids": _LIST,
    "chunks": _LIST,
    "resubmits": _LIST,
}
SPEC_FIELDS = {"name": _nullable(_STRING), "count": _nullable(_INTEGER), "tasks": _LIST}
SPEC_TASK_FIELDS = {"index": _INTEGER, "params": _OBJECT}
RECORD_FIELDS = {
    "start": _NUMBER,
    "end": _NUMBER,
    "exit_code": _nullable(_INTEGER),
    "restart_count": _nullable(_INTEGER),
    "host": _nullable(_STRING),
    "node": _nullable(_STRING),
    "signals": _nullable(_STRING),
}


def run_manifest_problem(manifest: Any) -> Optional[str]:
    """What makes a run's ``manifest.json`` unusable by status/cancel/resubmit, or None."""
    if type(manifest) is not dict:
        return f"expected a JSON object, got {_shown(manifest)}"
    return field_problem(manifest, RUN_MANIFEST_FIELDS) or chunks_problem(manifest.get("chunks") or [])


def spec_problem(spec: Any) -> Optional[str]:
    """What makes a run's ``spec.json`` unusable by status/cancel/resubmit, or None."""
    if type(spec) is not dict:
        return f"expected a JSON object, got {_shown(spec)}"
    problem = field_problem(spec, SPEC_FIELDS)
    if problem:
        return problem
    for i, task in enumerate(spec.get("tasks") or []):
        if type(task) is not dict:
            return f"tasks[{i}] must be an object, got {_shown(task)}"
        problem = field_problem(task, SPEC_TASK_FIELDS, f"tasks[{i}].")
        if problem:
            return problem
    return None


def task_records(run_dir: Path) -> Dict[int, Dict[str, Any]]:
    """``runs.task_records`` for reading a run: a file that is not a task record (not a JSON
    object, or a field of the wrong type) is ignored like one being written. The writers
    replace records atomically, so such a file was put there by someone else."""
    return runs.task_records(Path(run_dir), _is_record)


def attempt_records(run_dir: Path) -> List[Dict[str, Any]]:
    """``runs.attempt_records``, ignoring files that are not task records (see ``task_records``)."""
    return runs.attempt_records(Path(run_dir), _is_record)


def _is_record(data: Dict[str, Any]) -> bool:
    return field_problem(data, RECORD_FIELDS) is None


def parse_exit(text: Optional[str]) -> Optional[int]:
    """Slurm's ``ExitCode=code:signal`` -> a shell-style code (128+signal when killed)."""
    if not text:
        return None
    code, _, sig = text.partition(":")
    try:
        if sig and int(sig):
            return 128 + int(sig)
        return int(code)
    except ValueError:
        return None


def parse_duration(text: Optional[str]) -> Optional[float]:
    """``[D-]HH:MM:SS`` / ``MM:SS`` (squeue, scontrol) -> seconds."""
    if not text or text in ("INVALID", "N/A", "UNLIMITED"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + p
    return float(days * 86400 + seconds)


def from_squeue(rows: Sequence[Sequence[str]]) -> Dict[str, SlurmInfo]:
    """Rows of ``squeue -r -o %F|%K|%T|%r|%N|%M`` keyed by ``<array job>_<index>``."""
    out: Dict[str, SlurmInfo] = {}
    for row in rows:
        if len(row) < 6 or not row[1].isdigit():
            continue
        node = row[4] if row[4] and not row[4].startswith("(") else None
        reason = row[3] if row[3] not in ("None", "(null)") else ""
        out[f"{row[0]}_{row[1]}"] = SlurmInfo(row[2].split()[0], "squeue", node=node, elapsed=parse_duration(row[5]), reason=reason)
    return out


def from_scontrol(records: Sequence[Dict[str, str]]) -> Dict[str, SlurmInfo]:
    """``scontrol -o show job`` records keyed by ``<array job>_<index>`` (ranges expanded)."""
    out: Dict[str, SlurmInfo] = {}
    for rec in records:
        job = rec.get("ArrayJobId") or rec.get("JobId")
        task = rec.get("ArrayTaskId")
        if not job or task is None:
            continue
        try:
            indices = expand_array(task)
        except ValueError:
            continue
        state = (rec.get("JobState") or "UNKNOWN").split()[0]
        try:
            restarts = int(rec.get("Restarts") or 0)
        except ValueError:
            restarts = 0
        node = rec.get("NodeList")
        reason = rec.get("Reason") or ""
        for index in indices:
            out[f"{job}_{index}"] = SlurmInfo(
                state,
                "scontrol",
                exit_code=parse_exit(rec.get("ExitCode")) if bucket(state) in ("done", "failed") else None,
                restarts=restarts,
                node=node if node and node != "(null)" else None,
                elapsed=parse_duration(rec.get("RunTime")),
                reason="" if reason in ("None", "(null)") else reason,
            )
    return out


def from_sacct(rows: Sequence[Any]) -> Dict[str, SlurmInfo]:
    """``tools.sacct`` rows (job_id, state, elapsed, exit_code) keyed by element."""
    out: Dict[str, SlurmInfo] = {}
    for row in rows:
        if "_" not in row.job_id or "[" in row.job_id:
            continue
        state = row.state.split()[0] if row.state else "UNKNOWN"
        if state == "CANCELLED+":
            state = "CANCELLED"
        out[row.job_id] = SlurmInfo(state, "sacct", exit_code=parse_exit(row.exit_code), elapsed=float(row.elapsed))
    return out


def signal_number(name: str) -> int:
    return int(getattr(_signal, f"SIG{name}", 0))


def record_state(end: Dict[str, Any], warn_signal: str = "USR1") -> str:
    """A finished task's state from its end record alone (Slurm has forgotten it).

    TERM after the warning signal is the time limit (or a preemption); TERM alone a cancel;
    a program that died of the forwarded warning itself ran out of time too.
    """
    code = end.get("exit_code")
    signals = str(end.get("signals") or "").split()
    if code == 0:
        return "COMPLETED"
    if "TERM" in signals:
        return "TIMEOUT" if warn_signal in signals else "CANCELLED"
    if warn_signal in signals and code == 128 + signal_number(warn_signal):
        return "TIMEOUT"
    return "FAILED"


def current_records(record: Dict[str, Any], slot: Optional[Slot]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a merged ``runs.task_records`` entry into (start, end), dropping what an earlier
    submission wrote (a resubmitted task's old end record until its new attempt starts)."""
    start = {k: record[k] for k in ("start", "host", "restart_count") if k in record}
    end = {k: record[k] for k in ("exit_code", "end", "node", "signals", "restart_count") if k in record}
    since = slot.submitted_at if slot else None
    if since is not None:
        if start.get("start", since) < since - 1:
            start = {}
        if end.get("end", since) < since - 1:
            end = {}
    if end and start.get("start") and end.get("end", 0) < start["start"] - 1:
        end = {}  # a new attempt has started since that end
    return start, end


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
    """One task's row: live squeue state > scontrol > sacct > the run folder's records."""
    now = time.time() if now is None else now
    start, end = current_records(record, slot)
    slurm = live or known or accounted
    row = TaskRow(index=index, state="UNKNOWN", job_id=slot.element if slot else None, source="none")
    if slurm is not None:
        row.state, row.source, row.reason = slurm.state, slurm.source, slurm.reason
        row.exit_code, row.node, row.elapsed = slurm.exit_code, slurm.node, slurm.elapsed
        row.restarts = max(slurm.restarts, known.restarts if known else 0)
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
    varying = [k for k in keys if len({json.dumps(t.get("params", {}).get(k), sort_keys=True) for t in tasks}) > 1]
    return varying or keys


def log_path(pattern: Optional[str], slot: Optional[Slot], name: str = "") -> Optional[str]:
    """``--output`` pattern of the script with %A / %a / %x filled for this task."""
    if not pattern or slot is None:
        return None
    return pattern.replace("%A", slot.job_id).replace("%a", str(slot.array_task_id)).replace("%x", name)


def script_directive(script_text: str, option: str) -> Optional[str]:
    """The value of ``#SBATCH --option=value`` in a script (quotes removed), last one wins."""
    value = None
    prefix = f"#SBATCH --{option}="
    for line in script_text.splitlines():
        if line.startswith(prefix):
            value = line[len(prefix) :].strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
    return value


def group_for_resubmit(indices: Sequence[int], limit: int) -> List[Tuple[int, List[int]]]:
    """Failed task indices -> ``(offset, array indices)`` submissions, every array index below
    ``limit`` (MaxArraySize). Greedy from the smallest index: the fewest submissions."""
    groups: List[Tuple[int, List[int]]] = []
    for index in sorted(set(indices)):
        if groups and index - groups[-1][0] < limit:
            groups[-1][1].append(index - groups[-1][0])
        else:
            groups.append((index, [0]))
    return groups


def list_spec(indices: Sequence[int], max_parallel: Optional[int] = None) -> str:
    """``3,7,9`` (runs of 3+ compressed to ``a-b``), with the ``%P`` throttle when set."""
    parts: List[str] = []
    values = sorted(indices)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{values[i]}-{values[j]}")
        else:
            parts.extend(str(v) for v in values[i : j + 1])
        i = j + 1
    text = ",".join(parts)
    if max_parallel:
        text += f"%{max_parallel}"
    return text


# --- the run folder ------------------------------------------------------------------------


@dataclass
class Run:
    """A run folder as read from disk."""

    path: Path
    manifest: Dict[str, Any]
    spec: Dict[str, Any]
    script_text: str

    @property
    def backend(self) -> str:
        return self.manifest.get("backend", "planned") if self.manifest else "planned"

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
    def warn_signal(self) -> str:
        value = script_directive(self.script_text, "signal") or ""
        name = value.split(":", 1)[-1].split("@", 1)[0] if value else "USR1"
        return name[3:] if name.startswith("SIG") else (name or "USR1")


def resolve_run(run: RunRef = None, config: Optional[NexaConfig] = None) -> Path:
    """A run folder path, a run id under the runs directory, or (None) the latest run."""
    cfg = config or load_config()
    if run is None or str(run) == "":
        latest = runs.latest_run(cfg.runs_dir)
        if latest is None:
            raise ConfigError(f"no runs in {cfg.runs_dir}: pass RUN (a run folder or run id)")
        return latest
    candidates = [Path(run).expanduser(), cfg.runs_dir / str(run)]
    for path in candidates:
        if path.is_dir() and ((path / runs.MANIFEST).exists() or (path / runs.SPEC).exists()):
            return path.resolve()
    raise ConfigError(f"{run}: not a run folder or a run id in {cfg.runs_dir} (no manifest.json or spec.json)")


def load_run(path: Path) -> Run:
    """The run folder's manifest, spec and sbatch script.

    Raises:
        ConfigError: a manifest or spec that cannot be read, or is not a nexa run manifest or
            spec (the message names the file and the first wrong field).
    """
    manifest: Dict[str, Any] = {}
    spec: Dict[str, Any] = {}
    try:
        if (path / runs.MANIFEST).exists():
            manifest = runs.read_manifest(path)
            problem = run_manifest_problem(manifest)
            if problem:
                raise ConfigError(f"not a nexa run manifest: {problem}", str(path / runs.MANIFEST))
        if (path / runs.SPEC).exists():
            with open(path / runs.SPEC, encoding="utf-8") as fh:
                spec = json.load(fh)
            problem = spec_problem(spec)
            if problem:
                raise ConfigError(f"not a nexa run spec: {problem}", str(path / runs.SPEC))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the run folder: {exc}") from None
    script_text = ""
    run = Run(path, manifest, spec, "")
    if run.script and run.script.exists():
        script_text = run.script.read_text(encoding="utf-8", errors="replace")
    run.script_text = script_text
    return run


class _Sources:
    """Slurm queries for one run; remembers across polls whether accounting exists."""

    def __init__(self) -> None:
        self.accounting: Optional[bool] = None

    def scheduler(self, job_ids: List[str]) -> Tuple[Dict[str, SlurmInfo], Dict[str, SlurmInfo]]:
        """(squeue, scontrol) information keyed by array element."""
        from .tools import slurm

        live = from_squeue(slurm.squeue(job_ids, fmt="%F|%K|%T|%r|%N|%M"))
        records: List[Dict[str, str]] = []
        for job in job_ids:
            records.extend(slurm.show_job(job))
        return live, from_scontrol(records)

    def accounted(self, job_ids: List[str]) -> Dict[str, SlurmInfo]:
        """sacct information, or nothing (and never asked again) without accounting."""
        if self.accounting is False:
            return {}
        from .tools.sacct import sacct

        rows = sacct(job_ids)
        self.accounting = rows is not None
        return from_sacct(rows or [])


def _status(path: Path, sources: _Sources) -> RunStatus:
    run = load_run(path)
    spec_tasks = run.spec.get("tasks", [])
    params = {int(t["index"]): t.get("params", {}) for t in spec_tasks if "index" in t}
    where = slots(run.manifest) if run.backend == "slurm" else {}
    records = task_records(path)
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
    pattern = script_directive(run.script_text, "output")
    rows = []
    now = time.time()
    for index in range(run.count):
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
        )
        row.params = params.get(index, {})
        if run.backend == "local":
            row.log = str(path / "logs" / f"local_{index}.out")
        else:
            row.log = log_path(pattern, slot, run.name)
        rows.append(row)
    return RunStatus(
        run_id=str(run.manifest.get("run_id") or path.name),
        run_dir=path,
        name=run.name,
        backend=run.backend,
        job_ids=[str(j) for j in run.manifest.get("job_ids", [])],
        keys=varying_keys(spec_tasks),
        tasks=rows,
    )


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


# --- acting on a run -----------------------------------------------------------------------


@dataclass
class CancelResult:
    run_id: str
    job_ids: List[str]  # what scancel was given
    finished: List[int] = field(default_factory=list)  # asked-for tasks that had already ended


def cancel(run: RunRef, task: Optional[int] = None, dry_run: bool = False, *, config: Optional[NexaConfig] = None) -> CancelResult:
    """``scancel`` every job of the run, or one task's array element. Finished is not an error.

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
    from .tools import slurm

    st = status(run, config=config)
    _need_slurm(st, "cancel")
    if task is None:
        ids = list(st.job_ids)
        slurm.scancel(ids, dry_run=dry_run)
        return CancelResult(st.run_id, ids)
    row = _task(st, task)
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
    from .tools import slurm

    cfg = config or load_config()
    path = resolve_run(run, cfg)
    st = _status(path, _Sources())
    _need_slurm(st, "resubmit")
    indices = st.failed
    if not indices:
        return ResubmitResult(st.run_id, [], [], [])
    run_obj = load_run(path)
    script = run_obj.script
    if script is None or not script.exists():
        raise ConfigError(f"{path}: the run's sbatch script is missing ({script})")
    from .sweeps import array_limit

    limit = array_limit(cfg, dry_run)
    array_line = script_directive(run_obj.script_text, "array") or ""
    throttle = array_line.partition("%")[2]
    max_parallel = int(throttle) if throttle.isdigit() else None
    manifest = run_obj.manifest
    serial = len(manifest.get("resubmits", [])) + 1
    records, where = task_records(path), slots(manifest)
    replaced = {i: {**start, **end} for i in indices for start, end in [current_records(records.get(i, {}), where.get(i))]}
    chunks: List[Dict[str, Any]] = []
    job_ids: List[str] = []
    entry = {"at": runs.now_iso(), "indices": indices, "job_ids": job_ids}
    for offset, elements in group_for_resubmit(indices, limit):
        spec = list_spec(elements, max_parallel)
        submitted_at = time.time()
        job_id = slurm.sbatch(str(script), options=[f"--array={spec}"], args=[str(offset)], dry_run=dry_run)
        chunk = {
            "offset": offset,
            "count": len(elements),
            "job_id": job_id,
            "array": list_spec(elements),
            "resubmit": serial,
            "submitted_at": submitted_at,
        }
        chunks.append(chunk)
        job_ids.append(job_id)
        if not dry_run:
            manifest.setdefault("chunks", []).append(chunk)
            manifest.setdefault("job_ids", []).append(job_id)
            resubmits = manifest.setdefault("resubmits", [])
            if entry not in resubmits:
                resubmits.append(entry)
            runs.write_manifest(path, manifest)
            _bill(cfg, path, st.run_id, chunk, {offset + e: replaced[offset + e] for e in elements})
    return ResubmitResult(st.run_id, indices, chunks, job_ids)


def _bill(cfg: NexaConfig, path: Path, run_id: str, chunk: Dict[str, Any], replaced: Dict[int, Dict[str, Any]]) -> None:
    """Add a resubmitted chunk to the run's cost manifest, in the runs folder of the project
    or, for a run planned with --out, beside the run folder."""
    from .costs import record_resubmission

    for runs_dir in dict.fromkeys([cfg.runs_dir, path.parent]):
        if record_resubmission(runs_dir, run_id, [chunk], replaced) is not None:
            return


def _need_slurm(st: RunStatus, what: str) -> None:
    if st.backend != "slurm":
        kind = "ran locally" if st.backend == "local" else "was not submitted"
        raise Refused(f"{st.run_id}: {kind}; only Slurm runs can {what}")


def _task(st: RunStatus, task: int) -> TaskRow:
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
        row = _task(st, task)
    out = Path(row.log) if row.log else None
    err: Optional[Path] = None
    if st.backend == "local":
        err = st.run_dir / "logs" / f"local_{row.index}.err"
    else:
        run_obj = load_run(st.run_dir)
        err_text = log_path(script_directive(run_obj.script_text, "error"), slots(run_obj.manifest).get(row.index), st.name)
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
        return st.tasks[index].bucket in ("done", "failed") if index < len(st.tasks) else True

    return done


def format_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
