"""Cost books: estimates before submitting, one manifest per run, actual cost, reports.

Every submission writes ``<runs>/manifests/cost_<run_id>.json``. Writers take a per-manifest
lock (``flock`` on one of 64 ``.locks/<n>.lock`` stripes) around read-modify-write and replace the
file by an atomic rename, so readers never lock and never see half a file, and two writers
(a chunked submission and a cron ``cost.report``) never lose each other's fields.

``reconcile`` turns finished tasks into actual GPU-hours and cost: from ``sacct`` where the
cluster has accounting, else from the worker's ``tasks/<i>.start.json`` / ``<i>.end.json``.
``cost_report`` sums manifests by campaign, user, GPU type or run; files in the folder that
are corrupt or not ours are reported on stderr and skipped.
"""

import contextlib
import csv
import io
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple, Union

from . import runs
from .config import NexaConfig, Resources, SweepDefinition, load_config
from .errors import ConfigError, NexaError, Refused
from .fs import atomic_write_json, atomic_write_text
from .plan import cost as plan

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
BY = {"campaign": "campaign", "user": "user", "gpu": "gpu_type", "run": "run_id"}
FORMATS = ("table", "csv", "json", "markdown")

ConfigLike = Union[NexaConfig, str, Path, None]


# --- prices and estimates ------------------------------------------------------------------


@lru_cache(maxsize=None)
def shipped_prices() -> plan.PriceTable:
    """``nexa_ops/data/prices.toml``, read from the checkout or from inside nexa.pyz."""
    from . import toml
    from .resources import read_text

    return plan.parse_price_table(toml.loads(read_text("data/prices.toml"), "nexa_ops/data/prices.toml"), "nexa_ops/data/prices.toml")


def load_prices(config: NexaConfig) -> plan.PriceTable:
    """The shipped table, with ``[cost] prices`` (a file relative to nexa.toml) laid over it."""
    table = shipped_prices()
    if config.cost.prices:
        from . import toml

        path = (config.root / os.path.expanduser(config.cost.prices)).resolve()
        if not path.is_file():
            where = str(config.path) if config.path else "nexa.toml"
            raise ConfigError(f"price table {path} not found (a TOML file, relative to nexa.toml)", where, "cost.prices")
        table = plan.merge_tables(table, plan.parse_price_table(toml.load(path), str(path)))
    return table


def _config(config: ConfigLike) -> NexaConfig:
    return config if isinstance(config, NexaConfig) else load_config(config)


def estimate_cost(
    what: Union[SweepDefinition, Resources, str, Path],
    config: ConfigLike = None,
    *,
    tasks: Optional[int] = None,
    provider: Optional[str] = None,
    strict: bool = False,
) -> plan.Estimate:
    """The cost estimate of a sweep (file or definition) or of ``tasks`` jobs of ``Resources``.

    Args:
        what: a sweep file, a ``SweepDefinition``, a ``Resources``, or any TOML file with a
            ``[resources]`` table (counted as one task).
        config: ``NexaConfig`` or the path of nexa.toml (default: found as the CLI does).
        tasks: the number of tasks (default: the sweep's expanded size, or 1).
        provider: price this provider instead of ``[cost] provider``.
        strict: raise ``ConfigError`` when no figure can be made (no GPU type, hours, price)
            (default False: return the estimate with ``problem`` set).

    Returns:
        Estimate (``nexa_ops.plan.cost.Estimate``): ``gpu_type``, ``provider``, ``sku``/``region``,
        ``rate_usd_per_gpu_hour`` and ``rate_from``, ``tasks``, ``nodes``, ``gpus_per_node``, ``hours``
        and ``hours_from``, ``gpu_hours`` and ``total_usd`` (None when no figure can be made, then
        ``problem`` says why and ``priced`` is False).

    Raises:
        ConfigError: a file that cannot be read or parsed, or is neither a sweep nor a ``[resources]``
            file; a bad ``[cost]`` section or price table; with ``strict``, no figure.
    """
    cfg = _config(config)
    if isinstance(what, (str, Path)):
        what = _load_target(Path(what))
    if isinstance(what, SweepDefinition):
        res = what.resources
        if tasks is None:
            from .plan.sweep import iter_params

            tasks = sum(1 for _ in iter_params(what))
    else:
        res = what
    where = str(cfg.path or "nexa.toml")
    est = plan.estimate(res, tasks if tasks is not None else 1, load_prices(cfg), cfg.cost, provider=provider, where=where)
    return est.require() if strict else est


def _load_target(path: Path) -> Union[SweepDefinition, Resources]:
    from . import toml
    from .config import parse_sweep
    from .schema import from_table

    table = toml.load(path)
    if "command" in table or "name" in table or "grid" in table:
        return parse_sweep(table, str(path), path)
    if isinstance(table.get("resources"), dict):
        res = from_table(Resources, table["resources"], str(path), "resources")
        res.validate(str(path))
        return res
    raise ConfigError("expected a sweep file or a file with a [resources] table", str(path))


def check_max_cost(estimate: plan.Estimate, max_cost: Optional[float]) -> None:
    """``Refused`` (exit 3) when the estimate is above ``max_cost`` USD or cannot be made."""
    if max_cost is None:
        return
    if not math.isfinite(max_cost) or max_cost < 0:  # nan would pass every comparison below
        raise ConfigError(f"--max-cost: expected a finite number >= 0 (USD), got {max_cost:g}")
    if not estimate.priced:
        raise Refused(f"cannot check --max-cost ${max_cost:,.2f}: {estimate.problem}; nothing submitted")
    if estimate.total_usd > max_cost:  # type: ignore[operator]
        raise Refused(
            f"estimated cost ${estimate.total_usd:,.2f} is above --max-cost ${max_cost:,.2f} "
            f"({estimate.formula()} at ${estimate.rate_usd_per_gpu_hour:g}/GPU-hour); nothing submitted"
        )


# --- manifests -----------------------------------------------------------------------------


def manifests_dir(runs_dir: Path) -> Path:
    return Path(runs_dir) / MANIFEST_DIR


def manifest_path(runs_dir: Path, run_id: str) -> Path:
    return manifests_dir(runs_dir) / f"{PREFIX}{run_id}.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the lock stripe of ``path`` (``.locks/<crc32(name) % 64>.lock``:
    a fixed number of lock files however many manifests). Where locks do not work (some NFS),
    the atomic rename still keeps every reader safe; only a racing update may be lost."""
    import zlib

    locks = path.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(locks / f"{zlib.crc32(path.name.encode()) % LOCK_STRIPES}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
        yield
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


_N = type(None)
_TEXT = ((str, _N), "a string")
_COUNT = ((int, _N), "an integer")
_FIGURE = ((int, float, _N), "a number")
_LIST = ((list, _N), "a list")
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
    "earlier_attempts_gpu_hours": _FIGURE,
    "job_ids": _LIST,
    "chunks": _LIST,
}
_FAST = tuple((key, types) for key, (types, _) in FIELDS.items())


def manifest_problem(doc: Any) -> Optional[str]:
    """Why ``doc`` is not a usable nexa cost manifest (``"not a nexa cost manifest[: <field>
    must be ...]"``), or None. Wrong-typed fields the report or reconcile read count as not
    ours: a hand-edited or foreign file is skipped rather than crashing a cron report."""
    if type(doc) is not dict or doc.get("schema") != SCHEMA:
        return "not a nexa cost manifest"
    get = doc.get
    for key, types in _FAST:  # the common case, kept cheap: 100,000 manifests per report
        if type(get(key)) not in types:
            break
    else:
        chunks = get("chunks")
        if not chunks:
            return None
    from .track import chunks_problem, field_problem

    problem = field_problem(doc, FIELDS) or chunks_problem(doc.get("chunks") or [])
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
    estimate: plan.Estimate,
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


def record_submission(
    config: NexaConfig, artifacts: Any, defn: SweepDefinition, *, backend: str = "slurm", status: str = "submitted"
) -> Path:
    """The cost manifest of a sweep (``SweepArtifacts``), written at each accepted chunk."""
    est = artifacts.cost if artifacts.cost is not None else estimate_cost(defn, config, tasks=len(artifacts.tasks))
    chunks = [{"offset": c.offset, "count": c.count, "job_id": c.job_id} for c in artifacts.chunks if c.job_id]
    doc = manifest_document(
        est,
        run_id=artifacts.run_id,
        name=defn.name,
        kind="sweep",
        campaign=defn.campaign,
        run_dir=artifacts.run_dir,
        job_ids=artifacts.job_ids,
        chunks=chunks,
        backend=backend,
        status=status,
    )
    return write_cost_manifest(config.runs_dir, doc)


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
        earlier = plan.actual_from_records(replaced, gpus_per_task, 0.0).gpu_hours
        doc["job_ids"] = [*(doc.get("job_ids") or []), *(c["job_id"] for c in chunks)]
        keep = ("offset", "count", "job_id", "array", "submitted_at")  # what track.slots reads
        doc["chunks"] = [*(doc.get("chunks") or []), *({k: c[k] for k in keep if k in c} for c in chunks)]
        doc["earlier_attempts_gpu_hours"] = float(doc.get("earlier_attempts_gpu_hours") or 0.0) + earlier
        doc["status"] = "submitted"  # not finished any more: the next report reconciles it
        return doc

    try:
        update_manifest(path, change)
    except ConfigError as exc:  # the jobs are submitted: a damaged cost manifest must not hide that
        _warn(err, path, f"not updated: {exc}")
    return path


# --- reconcile -----------------------------------------------------------------------------


@dataclass
class Reconciled:
    """One manifest after reconciling."""

    run_id: str
    status: str
    tasks: int
    done: int
    estimated_usd: Optional[float]
    actual_usd: Optional[float]
    actual_gpu_hours: Optional[float]
    source: Optional[str]
    path: Path


def _run_dir(doc: Dict[str, Any], runs_dir: Path) -> Path:
    recorded = doc.get("run_dir")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return Path(runs_dir) / str(doc.get("run_id"))  # the runs folder was moved or synced


def _offsets(doc: Dict[str, Any]) -> Dict[str, int]:
    offsets = {str(c["job_id"]): int(c.get("offset", 0)) for c in doc.get("chunks") or [] if isinstance(c, dict) and c.get("job_id")}
    for job_id in doc.get("job_ids") or []:
        offsets.setdefault(str(job_id), 0)
    return offsets


class _Slurm:
    """Lazy, once-per-call answers from Slurm shared by every manifest being reconciled."""

    def __init__(self, use_sacct: Optional[bool]):
        self.use_sacct = use_sacct  # None: try, and stop trying after the first "disabled"
        self._live: Optional[set] = None

    def sacct(self, job_ids: List[str]) -> Optional[List[plan.SacctRow]]:
        if self.use_sacct is False or not job_ids:
            return None
        from .tools.sacct import sacct

        rows = sacct(job_ids)
        if rows is None:
            self.use_sacct = False
        return rows

    def gone(self, job_ids: List[str]) -> Optional[bool]:
        """True when none of the jobs is queued or running; None when Slurm cannot say."""
        if not job_ids:
            return None
        if self._live is None:
            from . import proc

            try:
                out = proc.run(["squeue", "-h", "-r", "-o", "%F"], timeout=60).stdout or ""
            except NexaError:
                return None
            self._live = {line.strip() for line in out.splitlines() if line.strip()}
        return not any(j in self._live for j in job_ids)


def reconcile_manifest(
    path: Path, runs_dir: Path, slurm: Optional[_Slurm] = None, *, dry_run: bool = False
) -> Tuple[Dict[str, Any], Reconciled]:
    """Actual figures for one manifest, written back under its lock (unless ``dry_run``)."""
    slurm = slurm or _Slurm(None)

    def change(doc: Dict[str, Any]) -> Dict[str, Any]:
        problem = manifest_problem(doc)
        if problem:
            raise ConfigError(problem, str(path))
        return _reconciled(doc, runs_dir, slurm)

    if dry_run:
        doc = change(read_json(path))
    else:
        doc = update_manifest(path, change)
    return doc, _summary(doc, path)


def _reconciled(doc: Dict[str, Any], runs_dir: Path, slurm: _Slurm) -> Dict[str, Any]:
    tasks = int(doc.get("tasks") or 0)
    gpus_per_task = int(doc.get("nodes") or 1) * int(doc.get("gpus_per_node") or 0)
    rate = doc.get("rate_usd_per_gpu_hour")
    job_ids = [str(j) for j in doc.get("job_ids") or []]
    actual = None
    if doc.get("backend") == "slurm" and job_ids:
        rows = slurm.sacct(job_ids)
        if rows:
            actual, _ = plan.actual_from_sacct(rows, _offsets(doc), gpus_per_task, rate or 0.0, array=doc.get("kind") != "launch")
    if actual is None or actual.done < tasks:
        from .track import attempt_records, task_records

        run_dir = _run_dir(doc, runs_dir)
        records = task_records(run_dir)
        if "earlier_attempts_gpu_hours" in doc:
            records = _current(records, doc)
        recorded = plan.actual_from_records(records, gpus_per_task, rate or 0.0)
        # Attempts the new ones replaced: resubmitted (kept by resubmit) and requeued (kept by
        # the array script in tasks/attempts/). They ran, so they are billed.
        requeued = plan.actual_from_records(dict(enumerate(attempt_records(run_dir))), gpus_per_task, 0.0)
        extra = float(doc.get("earlier_attempts_gpu_hours") or 0.0) + requeued.gpu_hours
        if extra:
            recorded = replace(recorded, gpu_hours=recorded.gpu_hours + extra, usd=(recorded.gpu_hours + extra) * (rate or 0.0))
        if actual is None or recorded.done > actual.done:
            actual = recorded  # slurmdbd records asynchronously: it can lag behind the run's own records
    gone = slurm.gone(job_ids) if doc.get("backend") == "slurm" else None  # None: Slurm cannot say
    if tasks and actual.done >= tasks and gone is not False:  # a queued job may still rerun a task
        status = "finished" if actual.failed == 0 else "failed"
    elif gone:
        status = "incomplete"  # the jobs left the queue with tasks unrecorded (killed, lost)
    elif doc.get("backend") == "local" and doc.get("status") in TERMINAL:
        status = doc["status"]
    else:
        status = "running" if (actual.done or actual.running) else doc.get("status") or "submitted"
    doc.update(
        status=status,
        actual_gpu_hours=round(actual.gpu_hours, 6),
        actual_usd=round(actual.usd, 6) if rate is not None else None,
        actual_source=actual.source,
        tasks_ok=actual.ok,
        tasks_failed=actual.failed,
        reconciled_at=runs.now_iso(),
    )
    return doc


def _current(records: Dict[int, Dict[str, Any]], doc: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    """A resubmitted run's records without what the replaced attempts wrote (their time is
    in ``earlier_attempts_gpu_hours``): a resubmitted task keeps its old end record until
    its new attempt starts."""
    from .track import current_records, slots

    where = slots(doc)
    out = {}
    for index, record in records.items():
        start, end = current_records(record, where.get(index))
        if start or end:
            out[index] = {**start, **end}
    return out


def _summary(doc: Dict[str, Any], path: Path) -> Reconciled:
    return Reconciled(
        run_id=str(doc.get("run_id")),
        status=str(doc.get("status")),
        tasks=int(doc.get("tasks") or 0),
        done=int(doc.get("tasks_ok") or 0) + int(doc.get("tasks_failed") or 0),
        estimated_usd=doc.get("estimated_usd"),
        actual_usd=doc.get("actual_usd"),
        actual_gpu_hours=doc.get("actual_gpu_hours"),
        source=doc.get("actual_source"),
        path=path,
    )


def reconcile(
    runs_dir: Path,
    run_ids: Optional[Sequence[str]] = None,
    *,
    force: bool = False,
    use_sacct: Optional[bool] = None,
    dry_run: bool = False,
    err: TextIO = sys.stderr,
) -> List[Reconciled]:
    """Reconcile the given runs, or every manifest not yet finished (``force``: all of them).

    Actual GPU-hours and cost come from ``sacct`` where the cluster has accounting, else from
    the worker's task records; each manifest is updated under its lock. Files in the folder
    that are not valid JSON or not nexa cost manifests are reported on ``err`` and skipped.

    Args:
        runs_dir: the runs folder whose ``manifests/`` holds the ``cost_<run_id>.json`` files.
        run_ids: only these runs, reconciled even when already finished (default None: every
            manifest in the folder).
        force: also re-reconcile manifests already ``finished``/``failed``/``incomplete`` (default False).
        use_sacct: True/False to use accounting or not; None (default) tries ``sacct`` and falls back
            to the worker's records when it is missing or disabled.
        dry_run: compute the figures without writing the manifests (default False).
        err: where warnings about skipped files go (default stderr).

    Returns:
        List[Reconciled]: one per manifest, with ``run_id``, ``status`` (``submitted``, ``running``,
        ``finished``, ``failed`` or ``incomplete``), ``tasks``, ``done``, ``estimated_usd``,
        ``actual_usd``, ``actual_gpu_hours``, ``source`` (``sacct`` or ``worker``) and ``path``.

    Raises:
        ConfigError: a run in ``run_ids`` has no cost manifest.
        NexaError: the manifests folder cannot be listed.
    """
    slurm = _Slurm(use_sacct)
    out = []
    if run_ids:
        paths = [manifest_path(runs_dir, r) for r in run_ids]
        for p in paths:
            if not p.is_file():
                raise ConfigError(f"no cost manifest for run {p.name[len(PREFIX) : -5]!r}", str(p))
    else:
        paths = [Path(p) for p, _ in _scan(manifests_dir(runs_dir), err)]
    for path in paths:
        try:
            doc = read_json(path)
        except (OSError, ValueError) as exc:
            _warn(err, path, f"skipped: {exc}")
            continue
        problem = manifest_problem(doc)
        if problem:
            _warn(err, path, f"skipped: {problem}")
            continue
        if doc.get("status") in TERMINAL and not force and not run_ids:
            out.append(_summary(doc, path))
            continue
        out.append(reconcile_manifest(path, runs_dir, slurm, dry_run=dry_run)[1])
    return out


# --- reports -------------------------------------------------------------------------------


def _warn(err: TextIO, path: Union[str, Path], message: str) -> None:
    print(f"nexa: warning: {path}: {message}", file=err)


def _scan(folder: Path, err: TextIO) -> List[Tuple[str, str]]:
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


def parse_when(text: str, option: str, end: bool = False, now: Optional[float] = None) -> str:
    """``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS][Z]`` (UTC) or ``Nd`` (N days ago) as the
    manifests' own timestamp format, so filtering is a string comparison. A bare date as
    ``--until`` means the end of that day."""
    text = text.strip()
    now = time.time() if now is None else now
    m = re.match(r"^(\d+)d$", text)
    if m:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - int(m.group(1)) * 86400))
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?Z?)?$", text)
    if not m:
        raise ConfigError(f"{option}: expected a date like 2025-12-31, 2025-12-31T18:00 (UTC) or 7d, got {text!r}")
    y, mo, d, hh, mm, ss = m.groups()
    try:
        import datetime

        datetime.datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}: {text!r}") from None
    if hh is None:
        return f"{y}-{mo}-{d}T23:59:59Z" if end else f"{y}-{mo}-{d}T00:00:00Z"
    return f"{y}-{mo}-{d}T{hh}:{mm}:{ss or ('59' if end else '00')}Z"


NUMBERS = ("estimated_gpu_hours", "estimated_usd", "actual_gpu_hours", "actual_usd")


@dataclass
class CostReport:
    """Rows grouped by ``by`` plus totals; ``skipped`` lists files that were not read."""

    by: str
    rows: List[Dict[str, Any]]
    totals: Dict[str, Any]
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    filters: Dict[str, Optional[str]] = field(default_factory=dict)

    def columns(self) -> List[str]:
        key = BY[self.by]
        extra = ["campaign", "user", "gpu_type", "status"] if self.by == "run" else []
        return [key] + extra + ["runs", "tasks", "tasks_done", *NUMBERS]

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            doc = {
                "by": self.by,
                "filters": self.filters,
                "currency": "USD",
                "rows": self.rows,
                "totals": self.totals,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            }
            return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        cols = self.columns()
        total = dict(self.totals, **{cols[0]: "TOTAL"})
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(cols)
            for row in self.rows + [total]:
                writer.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
            return buf.getvalue()
        if fmt not in ("table", "markdown"):
            raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        from tabulate import tabulate

        heads = [_HEADS.get(c, c.upper()) for c in cols]
        body = [[_cell(row.get(c), c) for c in cols] for row in self.rows]
        body.append([_cell(total.get(c), c) for c in cols])
        text = tabulate(
            body,
            headers=heads,
            tablefmt="github" if fmt == "markdown" else "simple",
            disable_numparse=True,
            colalign=["left"] * (len(cols) - 7) + ["right"] * 7,
        )
        title = f"Cost by {self.by}" + "".join(f", {k} {v}" for k, v in self.filters.items() if v)
        if fmt == "markdown":
            return f"### {title} (USD)\n\n{text}\n"
        return f"{title} (USD)\n{text}\n"


_HEADS = {
    "estimated_gpu_hours": "EST GPU-H",
    "estimated_usd": "EST $",
    "actual_gpu_hours": "ACTUAL GPU-H",
    "actual_usd": "ACTUAL $",
    "tasks_done": "DONE",
    "gpu_type": "GPU",
    "run_id": "RUN",
}


def _cell(value: Any, col: str) -> str:
    if value is None:
        return "-"
    if col in NUMBERS:  # cents and hundredths, but a small non-zero figure keeps 4 digits
        return f"{value:.4f}" if 0 < abs(value) < 1 else f"{value:,.2f}"
    return str(value)


def _new_row() -> Dict[str, Any]:
    return {
        "runs": 0,
        "tasks": 0,
        "tasks_done": 0,
        "estimated_gpu_hours": 0.0,
        "estimated_usd": 0.0,
        "actual_gpu_hours": 0.0,
        "actual_usd": 0.0,
    }


def cost_report(
    runs_dir: Path,
    *,
    campaign: Optional[str] = None,
    since: Optional[str] = None,
    until: Optional[str] = None,
    by: str = "campaign",
    reconcile_first: bool = True,
    use_sacct: Optional[bool] = None,
    dry_run: bool = False,
    err: TextIO = sys.stderr,
) -> CostReport:
    """Sum the cost manifests under ``runs_dir/manifests``.

    A file that is not valid JSON or not a nexa cost manifest is reported on ``err`` and
    skipped. A missing estimate or actual figure counts as 0 in the sums.

    Args:
        runs_dir: the runs folder whose ``manifests/`` holds the ``cost_<run_id>.json`` files.
        campaign: only this campaign (default None: all).
        since: only runs submitted at or after this time: ``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS]``
            (UTC) or ``Nd`` for N days ago (default None: no lower bound; see ``parse_when``).
        until: only runs submitted at or before this time, same forms; a bare date means the end
            of that day (default None: no upper bound).
        by: group rows by ``campaign`` (default), ``user``, ``gpu`` or ``run``.
        reconcile_first: reconcile unfinished runs before summing, so actual figures are current
            (default True); a run that fails to reconcile is warned about and summed as it is.
        use_sacct: for that reconciling, True/False to use accounting or not; None (default) tries
            ``sacct`` and falls back to the worker's records.
        dry_run: reconcile without writing the manifests back (default False).
        err: where warnings about skipped or unreconciled files go (default stderr).

    Returns:
        CostReport: ``by``, ``rows`` (one per group, sorted by key: ``runs``, ``tasks``, ``tasks_done``,
        estimated and actual GPU-hours and USD), ``totals`` (the same sums over all rows),
        ``skipped`` (``(path, reason)`` of files not read) and ``filters``; ``render(fmt)`` formats it.

    Raises:
        ConfigError: a bad ``by``, ``since`` or ``until``.
        NexaError: the manifests folder cannot be listed.
    """
    if by not in BY:
        raise ConfigError(f"--by: expected one of {', '.join(BY)}, got {by!r}")
    since_key = parse_when(since, "--since") if since else None
    until_key = parse_when(until, "--until", end=True) if until else None
    key_name = BY[by]
    groups: Dict[str, Dict[str, Any]] = {}
    skipped: List[Tuple[str, str]] = []
    slurm = _Slurm(use_sacct)
    folder = manifests_dir(runs_dir)
    for path, name in _scan(folder, err):
        try:
            with open(path, "rb") as fh:
                doc = json.loads(fh.read())
        except (OSError, ValueError) as exc:
            reason = f"corrupt JSON: {exc}" if isinstance(exc, ValueError) else f"unreadable: {exc.strerror}"
            skipped.append((path, reason))
            _warn(err, path, f"skipped: {reason}")
            continue
        problem = manifest_problem(doc) if name.startswith(PREFIX) else "not a nexa cost manifest"
        if problem:
            skipped.append((path, problem))
            _warn(err, path, f"skipped: {problem}")
            continue
        if campaign is not None and doc.get("campaign") != campaign:
            continue
        when = doc.get("submitted_at") or ""
        if (since_key and when < since_key) or (until_key and when > until_key):
            continue
        if reconcile_first and doc.get("status") not in TERMINAL:
            try:
                doc = reconcile_manifest(Path(path), runs_dir, slurm, dry_run=dry_run)[0]
            except (OSError, ValueError, NexaError) as exc:
                _warn(err, path, f"not reconciled: {exc}")
        key = doc.get(key_name)
        key = "-" if key is None else str(key)
        row = groups.get(key)
        if row is None:
            row = groups[key] = _new_row()
            row[key_name] = key
            if by == "run":
                row.update(campaign=doc.get("campaign"), user=doc.get("user"), gpu_type=doc.get("gpu_type"), status=doc.get("status"))
        row["runs"] += 1
        row["tasks"] += doc.get("tasks") or 0
        row["tasks_done"] += (doc.get("tasks_ok") or 0) + (doc.get("tasks_failed") or 0)
        for k in NUMBERS:
            row[k] += doc.get(k) or 0.0
    rows = [groups[k] for k in sorted(groups)]
    totals = _new_row()
    for row in rows:
        for k in totals:
            totals[k] += row[k]
    for row in rows + [totals]:
        for k in NUMBERS:
            row[k] = round(row[k], 6)
    filters = {"campaign": campaign, "since": since_key, "until": until_key}
    return CostReport(by, rows, totals, skipped, filters)


def check_budget(report: CostReport, budget: Optional[float]) -> None:
    """Refuse (exit 3 from the CLI) when the report's actual spend is above ``budget``.

    Args:
        report: a ``CostReport`` from ``cost_report``.
        budget: the limit in the report's currency; None checks nothing.

    Raises:
        Refused: the actual spend is above the budget.
    """
    if budget is not None and report.totals["actual_usd"] > budget:
        raise Refused(f"actual spend ${report.totals['actual_usd']:,.2f} is above --budget ${budget:,.2f}")


def write_report(
    report: CostReport, fmt: str = "table", output: Optional[Union[str, Path]] = None, out: TextIO = sys.stdout
) -> Optional[Path]:
    """Render and print, or write atomically to ``output`` (a cron job's file is never half)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    text = report.render(fmt)
    if output is None:
        out.write(text)
        out.flush()
        return None
    try:
        return atomic_write_text(Path(output), text)
    except OSError as exc:
        raise NexaError(f"{output}: cannot write: {exc.strerror or exc}") from None


# --- campaign spend (teardown) --------------------------------------------------------------


@dataclass(frozen=True)
class CampaignSpend:
    campaign: str
    runs: int
    estimated_usd: float
    actual_usd: float


def campaign_spend(runs_dir: Path, campaign: str, *, reconcile_first: bool = True, err: TextIO = sys.stderr) -> CampaignSpend:
    """What a campaign's runs were estimated to cost and actually cost so far (USD).

    Args:
        runs_dir: the runs folder whose ``manifests/`` holds the cost manifests.
        campaign: the campaign whose runs are summed.
        reconcile_first: reconcile its unfinished runs first, so actual figures are current
            (default True).
        err: where warnings about skipped or unreconciled manifests go (default stderr).

    Returns:
        CampaignSpend: ``campaign``, ``runs`` (the number of its manifests), ``estimated_usd`` and
        ``actual_usd`` (sums; a missing figure counts as 0).

    Raises:
        NexaError: the manifests folder cannot be listed.
    """
    report = cost_report(Path(runs_dir), campaign=campaign, by="campaign", reconcile_first=reconcile_first, err=err)
    t = report.totals
    return CampaignSpend(campaign, int(t["runs"]), float(t["estimated_usd"]), float(t["actual_usd"]))
