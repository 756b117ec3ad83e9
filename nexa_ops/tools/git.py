"""git: what a run's code was (commit, branch, uncommitted changes), read-only.

Every git call of nexa goes through here. Only plumbing and porcelain that git 1.8 already
had is used (clusters keep old gits): the folder is the process's working directory rather
than ``git -C``, and ``status --porcelain`` is the stable v1 format.
"""

from dataclasses import field
from pathlib import Path
from typing import List, Optional, Tuple

from .. import proc
from ..errors import ToolError, ToolMissing
from ..structs import mutable

HINT = "install git to record the commit of each run"
#: rev-parse's exit code outside a repository (and for a repository git refuses to read).
NOT_A_REPO = 128


@mutable
class GitState:
    """The repository holding a folder, as ``git`` sees it now."""

    toplevel: str
    commit: Optional[str]  # None before the first commit
    branch: Optional[str]  # None on a detached HEAD
    dirty: bool  # tracked files differ from the commit (staged or not)
    changed: List[str] = field(default_factory=list)  # those files
    untracked: List[str] = field(default_factory=list)  # files git does not track nor ignore


def parse_status(text: str) -> Tuple[List[str], List[str]]:
    """``git status --porcelain -z`` -> (changed tracked paths, untracked paths).

    Each entry is ``XY PATH`` ending in NUL; a rename or copy (R or C in X or Y) is followed by
    one more NUL-terminated field, its old path, which is skipped."""
    changed: List[str] = []
    untracked: List[str] = []
    fields = text.split("\0")
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if code == "??":
            untracked.append(path)
        elif code != "!!":
            changed.append(path)
            if "R" in code or "C" in code:
                i += 1
    return changed, untracked


def _git(folder: Path, *args: str, ok: Tuple[int, ...] = (0,)) -> proc.Result:
    return proc.run(["git", *args], cwd=str(folder), hint=HINT, success_codes=ok)


def state(folder: Path) -> Optional[GitState]:
    """The repository ``folder`` is in, or None when it is in none (or one git will not read,
    such as another user's without ``safe.directory``).

    Raises:
        ToolMissing: git is not on PATH. ToolError: git failed otherwise.
    """
    top = _git(folder, "rev-parse", "--show-toplevel", ok=(0, NOT_A_REPO))
    if top.returncode != 0:
        return None
    head = _git(folder, "rev-parse", "-q", "--verify", "HEAD", ok=(0, 1))
    branch = _git(folder, "symbolic-ref", "-q", "--short", "HEAD", ok=(0, 1))
    changed, untracked = parse_status(_git(folder, "status", "--porcelain", "-z").stdout or "")
    return GitState(
        toplevel=(top.stdout or "").strip(),
        commit=(head.stdout or "").strip() or None,
        branch=(branch.stdout or "").strip() or None,
        dirty=bool(changed),
        changed=changed,
        untracked=untracked,
    )


def diff(folder: Path, commit: Optional[str]) -> str:
    """The uncommitted changes of tracked files, staged and not, as a patch ``git apply``
    takes (binary files included); before the first commit, what is staged."""
    args = ["diff", "--binary", "HEAD"] if commit else ["diff", "--binary", "--cached"]
    return _git(folder, *args).stdout or ""


def describe(folder: Path) -> Tuple[Optional[GitState], Optional[str], str]:
    """``(state, diff, problem)``: the repository state and its uncommitted diff (None when
    clean), or why there is none (``problem``: not a repository, git missing or failing)."""
    try:
        found = state(folder)
        if found is None:
            return None, None, "not in a git repository"
        return found, (diff(folder, found.commit) if found.dirty else None), ""
    except ToolMissing:
        return None, None, "git not found on PATH"
    except ToolError as exc:
        return None, None, f"git failed: {exc.cause or exc.tail(1) or exc.returncode}"


def last_commit_time(folder: Path) -> Optional[int]:
    """The committer time of HEAD (seconds since 1970), or None (no git, no repository, no commit)."""
    try:
        out = _git(folder, "log", "-1", "--format=%ct").stdout or ""
        return int(out.strip())
    except (ToolMissing, ToolError, ValueError):
        return None


def listed_files(folder: Path, paths: List[str]) -> Optional[List[str]]:
    """Files under ``paths`` that git tracks or would track (not ignored), relative to
    ``folder``; None when ``folder`` is not in a git repository (or there is no git)."""
    try:
        out = _git(folder, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths).stdout or ""
    except (ToolMissing, ToolError):
        return None
    return [name for name in out.split("\0") if name]
