"""Run folders: where a sweep's spec, script, logs, task records and manifest live."""

import getpass
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .fs import atomic_write_json

MANIFEST = "manifest.json"
SPEC = "spec.json"


def new_run_id(name: str) -> str:
    """``<name>-<UTC yyyymmdd-HHMMSS>-<4 hex>``: sortable by time, unique without a lock."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def create_run_dir(runs_dir: Path, name: str) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    while True:
        path = runs_dir / new_run_id(name)
        try:
            path.mkdir()
            return path
        except FileExistsError:  # pragma: no cover - 1 in 65536 in the same second
            continue


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return str(os.getuid())


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_manifest(run_dir: Path, data: Dict[str, Any]) -> Path:
    return atomic_write_json(run_dir / MANIFEST, data)


def read_manifest(run_dir: Path) -> Dict[str, Any]:
    with open(run_dir / MANIFEST, encoding="utf-8") as fh:
        return json.load(fh)


def task_records(run_dir: Path, valid: Optional[Callable[[Dict[str, Any]], bool]] = None) -> Dict[int, Dict[str, Any]]:
    """Merge the worker's ``<i>.start.json`` and the script's ``<i>.end.json`` per task."""
    return _merged(run_dir / "tasks", lambda name: int(name.split(".", 1)[0]), valid)


def attempt_records(run_dir: Path, valid: Optional[Callable[[Dict[str, Any]], bool]] = None) -> List[Dict[str, Any]]:
    """The attempts Slurm requeued, one merged start + end record each
    (``tasks/attempts/<i>.<job>.<restart>.start|end.json``): they ran, and cost, before the
    task's last attempt, whose records are the ones in ``tasks/``."""
    return list(_merged(run_dir / "tasks" / "attempts", lambda name: name.rsplit(".", 2)[0], valid).values())


def _merged(folder: Path, key: Callable[[str], Any], valid: Optional[Callable[[Dict[str, Any]], bool]]) -> Dict[Any, Dict[str, Any]]:
    """Every visible ``*.json`` object in ``folder`` that passes ``valid``, merged by
    ``key(file name)``. A file that cannot be read or parsed (one being written) is skipped."""
    records: Dict[Any, Dict[str, Any]] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return records
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            k = key(name)
            with open(entry.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (ValueError, OSError):
            continue
        if type(data) is dict and (valid is None or valid(data)):
            records.setdefault(k, {}).update(data)
    return records


def latest_run(runs_dir: Path) -> Optional[Path]:
    """The most recent run folder that has a manifest or a spec."""
    if not runs_dir.is_dir():
        return None
    candidates: List[Path] = [p for p in runs_dir.iterdir() if p.is_dir() and ((p / MANIFEST).exists() or (p / SPEC).exists())]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)
