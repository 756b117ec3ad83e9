"""The cost book: one manifest per run, ``<runs>/manifests/cost_<run_id>.json``.

Writers take a per-manifest lock (``flock`` on one of 64 ``.locks/<n>.lock`` stripes) around
read-modify-write and replace the file by an atomic rename, so readers never lock and never
see half a file, and two writers (a chunked submission and a cron ``cost.report``) never lose
each other's fields. Files in the folder that are corrupt or not ours are reported and
skipped by every reader.
"""

import contextlib
import json
import os
import stat
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple, Union

from .. import runs
from ..errors import ConfigError, NexaError, os_error_message
from ..fs import atomic_write_json
from ..runs import chunks_problem
from ..schema import INTEGER, LIST, NUMBER, STRING, field_problem, nullable, shown
from .actual import actual_from_records
from .pricing import Estimate

try:  # POSIX; elsewhere writers rely on the atomic rename alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

SCHEMA = "nexa.cost/1"
MANIFEST_DIR = "manifests"
PREFIX = "cost_"
TERMINAL = ("finished", "failed", "incomplete")
LOCK_STRIPES = 64
OTHER_NEXA = ("teardown_",)  # nexa's other manifests sharing the folder: not foreign, not ours


def manifests_dir(runs_dir: Path) -> Path:
    return Path(runs_dir) / MANIFEST_DIR


def manifest_path(runs_dir: Path, run_id: str) -> Path:
    return manifests_dir(runs_dir) / f"{PREFIX}{run_id}.json"


def _shared_dir(folder: Path) -> None:
    """Make ``folder`` (and missing parents) for the cost book. In a runs folder shared by a
    group (group-writable), the folders made here are group-writable too, and setgid when it
    is, whatever the umask: every member of the group writes the book (manifests, locks)."""
    parent = folder.parent
    if not parent.is_dir():
        _shared_dir(parent)
    try:
        folder.mkdir()
    except FileExistsError:
        return
    mode = parent.stat().st_mode
    shared = mode & (stat.S_IRWXG | stat.S_ISGID)
    if shared & stat.S_IWGRP and not mode & stat.S_IWOTH:  # a group's folder, not /tmp
        os.chmod(str(folder), (folder.stat().st_mode & 0o7777) | shared)


def _open_lock(path: Path) -> int:
    """The lock stripe file, never through a link. Created group-writable in a shared book;
    one another member made (and we may not write) is opened read-only: ``flock`` needs no
    write access."""
    flags = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(str(path), os.O_RDWR | flags, 0o644)
    except FileExistsError:
        try:
            return os.open(str(path), os.O_RDWR | os.O_NOFOLLOW)
        except PermissionError:
            return os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW)
    if path.parent.stat().st_mode & stat.S_IWGRP:
        os.fchmod(fd, 0o664)
    return fd


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the lock stripe of ``path`` (``.locks/<crc32(name) % 64>.lock``:
    a fixed number of lock files however many manifests). Where locks do not work (some NFS),
    the atomic rename still keeps every reader safe; only a racing update may be lost."""
    locks = path.parent / ".locks"
    _shared_dir(locks)
    fd = _open_lock(locks / f"{zlib.crc32(path.name.encode()) % LOCK_STRIPES}.lock")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
        yield
    finally:
        os.close(fd)


def check_writable(runs_dir: Path, run_id: str) -> None:
    """Before submitting: the cost book in ``runs_dir`` can take ``run_id``'s manifest (its
    folder, its lock stripe, a new file beside it). A submission whose manifest could not be
    written would leave jobs nobody accounts for, so this fails first.

    Raises:
        ConfigError: the book cannot be written (one line: where and why).
    """
    path = manifest_path(runs_dir, run_id)
    try:
        with _locked(path):
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=str(path.parent))
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the cost book: {os_error_message(exc)}; nothing was submitted "
            "(a runs folder shared by a group needs group write on manifests/ and manifests/.locks/)"
        ) from None


def read_json(path: Path) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


_TEXT = nullable(STRING)
_COUNT = nullable(INTEGER)
_FIGURE = nullable(NUMBER)
_LIST = nullable(LIST)
#: What the report and reconcile read from a manifest, and the types they need (null is a
#: missing value). Checked once, where a manifest is read: a file that fails is not ours.
FIELDS = {
    "run_id": _TEXT,
    "kind": _TEXT,
    "campaign": _TEXT,
    "user": _TEXT,
    "submitted_at": _TEXT,
    "backend": _TEXT,
    "run_dir": _TEXT,
    "gpu_type": _TEXT,
    "status": _TEXT,
    "tasks": _COUNT,
    "nodes": _COUNT,
    "gpus_per_node": _COUNT,
    "tasks_ok": _COUNT,
    "tasks_failed": _COUNT,
    "rate_usd_per_gpu_hour": _FIGURE,
    "estimated_gpu_hours": _FIGURE,
    "estimated_usd": _FIGURE,
    "actual_gpu_hours": _FIGURE,
    "actual_usd": _FIGURE,
    "idle_usd": _FIGURE,
    "earlier_attempts_gpu_hours": _FIGURE,
    "job_ids": _LIST,
    "chunks": _LIST,
}
_FAST = tuple((key, types) for key, (types, _) in FIELDS.items())
#: Figures and counts: a cost, an hour or a task count is a finite number >= 0. JSON as
#: Python reads it allows NaN and Infinity, and a NaN total passes every budget comparison.
AMOUNTS = tuple(key for key, kind in FIELDS.items() if kind in (_FIGURE, _COUNT))
_INF = float("inf")


def _amount_problem(doc: Dict[str, Any]) -> Optional[str]:
    for key in AMOUNTS:
        value = doc.get(key)
        if value is not None and not 0 <= value < _INF:  # False for NaN too
            return f"{key} must be a finite number >= 0, got {shown(value)}"
    return None


def manifest_problem(doc: Any) -> Optional[str]:
    """Why ``doc`` is not a usable nexa cost manifest (``"not a nexa cost manifest[: <field>
    must be ...]"``), or None. Wrong-typed fields the report or reconcile read, and figures
    that are not finite numbers >= 0, count as not ours: a hand-edited, damaged or foreign
    file is skipped (and fails a ``--budget`` check) rather than summed or crashing a cron
    report."""
    if type(doc) is not dict or doc.get("schema") != SCHEMA:
        return "not a nexa cost manifest"
    get = doc.get
    for key, types in _FAST:  # the common case, kept cheap: 100,000 manifests per report
        if type(get(key)) not in types:
            break
    else:
        for key in AMOUNTS:
            value = get(key)
            if value is not None and not 0 <= value < _INF:
                break
        else:
            if not get("chunks"):
                return None
    problem = field_problem(doc, FIELDS) or _amount_problem(doc) or chunks_problem(doc.get("chunks") or [])
    return f"not a nexa cost manifest: {problem}" if problem else None


def update_manifest(path: Path, change: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Dict[str, Any]:
    """Locked read-modify-write: ``change(current)`` returns the new document ({} if none)."""
    with _locked(path):
        try:
            current = read_json(path)
            if not isinstance(current, dict):
                current = {}
        except (OSError, ValueError):
            current = {}
        new = change(dict(current))
        atomic_write_json(path, new)
        return new


def manifest_document(
    estimate: Estimate,
    *,
    run_id: str,
    name: str,
    kind: str,
    campaign: Optional[str],
    run_dir: Optional[Path],
    job_ids: Sequence[str] = (),
    chunks: Sequence[Dict[str, Any]] = (),
    backend: str = "slurm",
    status: str = "submitted",
) -> Dict[str, Any]:
    """The fields of a cost manifest known at submission."""
    e = estimate.as_json()
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "kind": kind,
        "name": name,
        "campaign": campaign,
        "user": runs.user(),
        "submitted_at": runs.now_iso(),
        "backend": backend,
        "run_dir": str(run_dir) if run_dir else None,
        "gpu_type": e["gpu_type"],
        "provider": e["provider"],
        "sku": e["sku"],
        "region": e["region"],
        "price_source": e["price_source"],
        "price_fetched": e["price_fetched"],
        "rate_usd_per_gpu_hour": e["rate_usd_per_gpu_hour"],
        "rate_from": e["rate_from"],
        "tasks": e["tasks"],
        "nodes": e["nodes"],
        "gpus_per_node": e["gpus_per_node"],
        "estimated_hours": e["hours"],
        "hours_from": e["hours_from"],
        "estimated_gpu_hours": e["gpu_hours"],
        "estimated_usd": e["total_usd"],
        "estimate_problem": e["problem"],
        "currency": e["currency"],
        "job_ids": list(job_ids),
        "chunks": [dict(c) for c in chunks],
        "status": status,
        "actual_gpu_hours": None,
        "actual_usd": None,
        "actual_source": None,
        "tasks_ok": 0,
        "tasks_failed": 0,
        "reconciled_at": None,
    }


def write_cost_manifest(runs_dir: Path, doc: Dict[str, Any]) -> Path:
    """Create or update ``cost_<run_id>.json``: submission fields from ``doc`` replace the
    old ones, while ``submitted_at`` and reconciled figures already there are kept."""
    path = manifest_path(runs_dir, doc["run_id"])

    def merge(old: Dict[str, Any]) -> Dict[str, Any]:
        if not old:
            return doc
        new = dict(old)
        keep = {"submitted_at", "status", "actual_gpu_hours", "actual_usd", "actual_source", "tasks_ok", "tasks_failed", "reconciled_at"}
        new.update({k: v for k, v in doc.items() if k not in keep or old.get(k) is None})
        if old.get("status") in TERMINAL:
            new["status"] = old["status"]
        return new

    update_manifest(path, merge)
    return path


def record_resubmission(
    runs_dir: Path,
    run_id: str,
    chunks: Sequence[Dict[str, Any]],
    replaced: Dict[int, Dict[str, Any]],
    err: TextIO = sys.stderr,
) -> Optional[Path]:
    """Add a resubmission's jobs to the run's cost manifest (when it has one), so reconcile
    bills them too, and reopen it.

    ``replaced`` holds the worker's records of the attempts being resubmitted: the new
    attempts overwrite them, so their time is kept here (``earlier_attempts_gpu_hours``)
    for reconciling from records. sacct lists every job, the old ones included, and needs
    none of it. A cost manifest that is not valid is warned about on ``err`` and left alone.
    """
    path = manifest_path(runs_dir, run_id)
    if not path.is_file():
        return None

    def change(doc: Dict[str, Any]) -> Dict[str, Any]:
        problem = manifest_problem(doc)
        if problem:
            raise ConfigError(problem)  # before anything is written
        gpus_per_task = int(doc.get("nodes") or 1) * int(doc.get("gpus_per_node") or 0)
        earlier = actual_from_records(replaced, gpus_per_task, 0.0).gpu_hours
        doc["job_ids"] = [*(doc.get("job_ids") or []), *(c["job_id"] for c in chunks)]
        keep = ("offset", "count", "job_id", "array", "submitted_at")  # what runs.slots reads
        doc["chunks"] = [*(doc.get("chunks") or []), *({k: c[k] for k in keep if k in c} for c in chunks)]
        doc["earlier_attempts_gpu_hours"] = float(doc.get("earlier_attempts_gpu_hours") or 0.0) + earlier
        doc["status"] = "submitted"  # not finished any more: the next report reconciles it
        return doc

    try:
        update_manifest(path, change)
    except ConfigError as exc:  # the jobs are submitted: a damaged cost manifest must not hide that
        warn(err, path, f"not updated: {exc}")
    return path


def warn(err: TextIO, path: Union[str, Path], message: str) -> None:
    print(f"nexa: warning: {path}: {message}", file=err)


def scan(folder: Path, err: TextIO) -> List[Tuple[str, str]]:
    """``(path, name)`` of every visible ``*.json`` in the manifests folder, by name; other
    JSON files are kept so that the caller can report them as foreign. Plain strings: at
    100,000 files, ``Path`` objects alone cost more than parsing the JSON."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise NexaError(f"{folder}: cannot list: {exc.strerror}") from None
    return sorted(
        (e.path, e.name) for e in entries if e.name.endswith(".json") and not e.name.startswith(".") and not e.name.startswith(OTHER_NEXA)
    )
