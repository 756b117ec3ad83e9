"""Provenance: what produced a run, recorded in its manifest whether or not it has a snapshot.

The git commit, branch and whether tracked files had uncommitted changes (their diff is
saved beside the manifest as ``code.diff``, so ``git apply`` on that commit gives the code
back), and who ran what where: nexa and Python versions, host, user and the exact command
line. A project outside git is not an error: ``git`` is then null and ``git_problem`` says why.
"""

import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from . import __version__, runs
from .fs import atomic_write_text
from .tools import git

#: File names listed in the manifest at most (the counts are always complete).
LISTED = 50


def collect(root: Path, argv: Optional[Sequence[str]] = None) -> Tuple[Dict[str, Any], Optional[str]]:
    """``(provenance, diff)`` for the project at ``root``; ``diff`` is None when clean."""
    state, diff, problem = git.describe(root)
    try:
        cwd: Optional[str] = os.getcwd()
    except OSError:  # the folder was deleted under us
        cwd = None
    info: Dict[str, Any] = {
        "nexa_version": __version__,
        "python": sys.version.split()[0],  # what platform.python_version() reads, without its import
        "python_executable": sys.executable,
        "host": socket.gethostname(),
        "user": runs.user(),
        "argv": list(sys.argv if argv is None else argv),
        "cwd": cwd,
        "project": str(root),
        "git": None,
    }
    if state is None:
        info["git_problem"] = problem
        return info, None
    info["git"] = {
        "commit": state.commit,
        "branch": state.branch,
        "dirty": state.dirty,
        "toplevel": state.toplevel,
        "changed": state.changed[:LISTED],
        "changed_count": len(state.changed),
        "untracked": state.untracked[:LISTED],
        "untracked_count": len(state.untracked),
        "diff": None,
    }
    return info, diff


def save(run_dir: Path, info: Dict[str, Any], diff: Optional[str]) -> Dict[str, Any]:
    """Write ``diff`` to ``<run>/code.diff`` (when there is one) and name it in ``info``."""
    if diff and info.get("git") is not None:
        atomic_write_text(run_dir / runs.CODE_DIFF, diff)
        info["git"]["diff"] = runs.CODE_DIFF
    return info


def record(run_dir: Path, root: Path) -> Dict[str, Any]:
    """``collect`` and ``save`` in one: the manifest's ``provenance``."""
    info, diff = collect(root)
    return save(run_dir, info, diff)
