"""Snapshots: every task of a run runs the code as it was when the run was submitted.

Without one, a task that starts hours after ``--submit`` runs whatever the working tree
holds by then. With ``--snapshot`` (or ``[project] snapshot = true``) the files ``nexa sync``
would send (the same excludes and ``.gitignore``/``.nexaignore`` rules) are copied into
``<run>/code/`` before anything is submitted, and the tasks' working directory is the same
relative folder inside that copy.

rsync makes the copy locally, with ``--link-dest`` to the project's previous snapshot: a file
unchanged since then becomes a hard link to it, so a second snapshot of a large tree costs
little time and no space. (Across file systems rsync cannot link and copies instead.)
"""

import os
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import runs
from .config import NexaConfig
from .errors import ConfigError
from .structs import mutable

# sync and tools.rsync are imported where a snapshot is taken: every sweep and launch loads
# this module, few take a snapshot, and those two are a twentieth of a plan's start-up.

#: rsync: "some files vanished before they could be transferred": something writes into the
#: tree (an editor's swap file, a local run's output). The copy of everything else is whole.
VANISHED = 24


@mutable
class Snapshot:
    """A run's copy of the project code."""

    path: Path  # <run>/code
    workdir: Path  # where the tasks run: the same relative folder inside the copy
    source: Path  # the project folder that was copied
    linked_from: Optional[Path]  # the previous snapshot unchanged files are hard-linked to
    argv: List[str]
    seconds: float = 0.0
    stats: Dict[str, int] = field(default_factory=dict)  # rsync --stats counters

    def to_json(self) -> Dict[str, Any]:
        files = self.stats.get("number_of_regular_files_transferred")
        total = self.stats.get("number_of_files")
        return {
            "path": str(self.path),
            "workdir": str(self.workdir),
            "source": str(self.source),
            "linked_from": str(self.linked_from) if self.linked_from else None,
            "seconds": round(self.seconds, 3),
            "files": total,
            "copied": files,
        }


def excludes(source: Path, config: NexaConfig, run_dir: Path) -> List[str]:
    """``nexa sync``'s excludes, plus the run folder itself when it lies inside the project
    (``--out`` there): the copy must not copy itself."""
    from .sync import default_excludes  # lazy: see the imports

    out = default_excludes(source, config.runs_dir) + list(config.sync.exclude)
    run_dir = run_dir.resolve()
    if _inside(run_dir, config.runs_dir.resolve()):
        return out  # the runs folder is excluded already
    if _inside(run_dir, source.resolve()) and run_dir != source.resolve():
        out.append(f"/{run_dir.relative_to(source.resolve()).as_posix()}/")
    return out


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def rsync_argv(source: Path, dest: Path, patterns: Sequence[str], link_dest: Optional[Path] = None) -> List[str]:
    """A local ``rsync -a`` of ``source`` into ``dest`` with sync's rules; ``--link-dest``
    hard-links what is unchanged in ``link_dest`` (absolute, as rsync wants it).

    "Unchanged" is rsync's quick check: same size and modification time. By default rsync
    compares whole seconds, so a file edited to the same size within the second of its last
    change would be taken from the old snapshot; ``--modify-window=-1`` compares nanoseconds
    (rsync >= 3.1.3, older than what ``nexa sync`` needs)."""
    argv = ["rsync", "-a", "--modify-window=-1", "--stats"]
    argv += [f"--exclude={pattern}" for pattern in patterns]
    from .sync import IGNORE_FILES  # lazy: see the imports

    argv += [f"--filter=:- {name}" for name in IGNORE_FILES]
    if link_dest is not None:
        argv.append(f"--link-dest={link_dest}")
    argv += [str(source).rstrip("/") + "/", str(dest).rstrip("/") + "/"]
    return argv


def previous(runs_dir: Path, skip: Path) -> Optional[Path]:
    """The newest ``<run>/code`` under ``runs_dir`` (by when it was made), other than ``skip``."""
    best: Tuple[float, Optional[Path]] = (-1.0, None)
    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return None
    for entry in entries:
        code = Path(entry.path) / runs.CODE
        if code == skip:
            continue
        try:
            made = code.stat().st_ctime  # rsync gives the folder the project's mtime: ctime is when
        except OSError:
            continue
        if made > best[0] and code.is_dir():
            best = (made, code)
    return best[1]


def workdir_in(snapshot: Path, source: Path, workdir: Path) -> Path:
    """``workdir``'s place inside the snapshot (the same path relative to the project).

    Raises:
        ConfigError: ``workdir`` lies outside the project.
    """
    try:
        rel = workdir.resolve().relative_to(source.resolve())
    except ValueError:
        raise ConfigError(
            f"--snapshot: the working directory {workdir} is outside the project {source} (the folder of nexa.toml): "
            "run from inside it, or without --snapshot"
        ) from None
    return snapshot / rel


def take(config: NexaConfig, run_dir: Path, workdir: Path, *, dry_run: bool = False) -> Snapshot:
    """Copy the project into ``<run_dir>/code`` (``dry_run``: print the rsync command only).

    Raises:
        ConfigError: no nexa.toml (the project is its folder: without one, the current folder
            could be a home directory); ``workdir`` is outside the project or not in the copy.
        ToolMissing: no rsync. ToolError: rsync failed (an unreadable file, a full disk).
    """
    from .tools import rsync as rs  # lazy: see the imports

    source = config.root
    if config.path is None:  # the current folder, which may be a home directory
        raise ConfigError(
            "--snapshot: no nexa.toml here (nor --project or $NEXA_CONFIG): the folder of nexa.toml is the project that gets copied"
        )
    if run_dir.resolve() == source.resolve():
        raise ConfigError(f"--snapshot: the run folder {run_dir} is the project folder itself: pick another --out")
    dest = run_dir / runs.CODE
    inside = workdir_in(dest, source, workdir)
    link = previous(config.runs_dir, dest)
    argv = rsync_argv(source, dest, excludes(source, config, run_dir), link)
    snap = Snapshot(dest, inside, source, link, argv)
    if dry_run:
        rs.run_rsync(argv, dry_run=True)
        return snap
    started = time.monotonic()
    result = rs.run_rsync(argv, success_codes=(0, VANISHED))
    snap.seconds = time.monotonic() - started
    snap.stats = rs.parse_output(result.stdout or "").stats
    if result.returncode == VANISHED:
        print(f"nexa: warning: files vanished from {source} while it was copied into {dest}", file=sys.stderr)
    if not inside.is_dir():
        raise ConfigError(f"--snapshot: the working directory {workdir} is not in the snapshot (excluded from it?)")
    return snap
