"""``nexa sync``: copy the project to the cluster's head node with rsync over ssh.

The plan (options -> ``SyncPlan`` -> rsync argv) and the ``--delete`` guards are pure; the
only I/O is one optional probe of the destination over ssh (when deletion is on) and the
rsync run itself, both in ``tools/rsync.py``.

A marker file, ``.nexa-sync``, travels with every sync as a second rsync source (a tiny
folder with a fixed mtime, so re-syncs never resend it). Its presence on the remote is what
tells a later ``--delete`` that the destination is a nexa copy and safe to prune.
"""

import ipaddress
import os
import posixpath
import re
import shutil
import tempfile
import time
from dataclasses import field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .config import NexaConfig, SyncConfig, load_config
from .errors import ConfigError, Refused
from .structs import frozen, mutable
from .tools import rsync as rs

MARKER = ".nexa-sync"
MARKER_TEXT = (
    "This folder is a copy of a project kept up to date by `nexa sync`.\n"
    "`nexa sync --delete` may remove files here that are not in the project.\n"
)
MARKER_MTIME = 1577836800  # 2020-01-01 UTC: fixed, so rsync's quick check never resends it

#: Always excluded (the runs folder is added, anchored, by ``default_excludes``).
BASE_EXCLUDES = ("__pycache__/", "*.pyc", ".git/")
#: Per-directory ignore files honoured as exclude lists (gitignore syntax, rsync semantics).
IGNORE_FILES = (".gitignore", ".nexaignore")

HOME_RE = re.compile(r"^(~[^/]*|\$HOME|\$\{HOME\}|/root|/home/[^/]+|/Users/[^/]+|/u/[^/]+)$")

#: A host as ssh and rsync both read it: a name (letters, digits, '-', '_', dot-separated
#: labels; an ssh config alias too), an IPv4 address, or an IPv6 address in brackets. Nothing
#: else: a '/' makes rsync copy locally, a leading '-' is an option, ':' splits the path.
HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
#: A login name: letters, digits, '_', '.', '-', not starting with '-' or '.'.
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
USER_WORDS = "letters, digits, '_', '.', '-'"


@frozen
class SyncPlan:
    """Everything the sync will do, decided before anything runs."""

    source: Path
    remote: rs.Remote
    dest: str  # as rsync gets it: relative to the remote home, or absolute
    excludes: List[str]
    delete: bool
    dry_run: bool
    force: bool
    rsync_path: Optional[str] = None

    @property
    def destination(self) -> str:
        return f"{self.remote.login}:{self.dest}"


@mutable
class SyncResult:
    """What a sync did (or, with ``dry_run``, would do)."""

    source: str
    destination: str
    argv: List[str]
    dry_run: bool
    delete: bool
    itemized: List[str] = field(default_factory=list)  # rsync's itemized lines, verbatim
    sent: List[str] = field(default_factory=list)  # files whose data went (or would go) over
    created: List[str] = field(default_factory=list)
    deleted: List[str] = field(default_factory=list)
    stats: Dict[str, int] = field(default_factory=dict)  # rsync --stats counters
    seconds: float = 0.0
    probe: Optional[rs.DestProbe] = None

    @property
    def files_transferred(self) -> int:
        return self.stats.get("number_of_regular_files_transferred", len(self.sent))

    @property
    def bytes_sent(self) -> int:
        return self.stats.get("total_bytes_sent", 0)


# --- planning (pure) -----------------------------------------------------------------------


def normalize_dest(dest: str) -> str:
    """Trim and turn ``~/x`` into ``x`` (rsync over ssh resolves relative paths from the remote
    home, and no remote shell then has to expand a tilde)."""
    text = dest.strip()
    if text.startswith("~/"):
        text = text[2:].lstrip("/") or "."
    if len(text) > 1:
        text = text.rstrip("/") or "/"
    return text


def default_excludes(source: Path, runs_dir: Optional[Path]) -> List[str]:
    """The fixed excludes plus the runs folder, anchored at the project root when inside it."""
    excludes = ["/runs/"]
    if runs_dir is not None:
        try:
            rel = runs_dir.resolve().relative_to(source.resolve())
        except ValueError:
            rel = None
        if rel is not None and str(rel) not in (".", "runs"):
            excludes.append(f"/{rel.as_posix()}/")
    return excludes + list(BASE_EXCLUDES)


def make_plan(
    cfg: SyncConfig,
    *,
    source: Path,
    runs_dir: Optional[Path] = None,
    host: Optional[str] = None,
    user: Optional[str] = None,
    port: Optional[int] = None,
    identity: Optional[str] = None,
    dest: Optional[str] = None,
    delete: Optional[bool] = None,
    dry_run: bool = False,
    force: bool = False,
    where: str = "nexa.toml",
) -> SyncPlan:
    """Merge options over ``[sync]`` and validate them; raise ``ConfigError`` on bad input.

    A bad value is named where it came from: an option by its flag (``--port: ...``), a
    ``[sync]`` value by ``where`` (the file) and its key (``nexa.toml: sync.port: ...``).
    """

    def bad(message: str, from_option: bool, flag: str, key: str) -> ConfigError:
        return ConfigError(f"{flag}: {message}") if from_option else ConfigError(message, where, key)

    host_from_option = host is not None
    user_from_option = user is not None
    host = host if host_from_option else cfg.host
    user = user if user_from_option else cfg.user
    if host is None:
        raise ConfigError("no host to sync to: pass --host or set host in [sync]", where, "sync.host")
    user_from_host = False
    if "@" in host:
        at_user, host = host.rsplit("@", 1)
        if user is None:
            user, user_from_host = at_user, True
    problem = host_problem(host)
    if problem:
        raise bad(f"{problem}, got {host!r}", host_from_option, "--host", "sync.host")
    if user is not None and not USER_RE.match(user):
        if user_from_host:  # the USER@ part of a host
            raise bad(f"expected a user name before '@' ({USER_WORDS}), got {user!r}", host_from_option, "--host", "sync.host")
        raise bad(f"expected a user name ({USER_WORDS}), got {user!r}", user_from_option, "--user", "sync.user")
    port_from_option = port is not None
    port = port if port_from_option else cfg.port
    if port is not None:
        try:
            number = int(port) if not isinstance(port, bool) else -1
        except (TypeError, ValueError):
            number = -1
        if not 0 < number < 65536:
            raise bad(f"expected a port between 1 and 65535, got {port!r}", port_from_option, "--port", "sync.port")
        port = number
    identity_from_option = bool(identity)
    identity = identity or cfg.identity
    if identity:
        identity = os.path.expanduser(identity)
        if not os.path.isfile(identity):
            raise bad(f"identity file {identity!r} does not exist", identity_from_option, "--identity", "sync.identity")
    if not source.is_dir():
        raise ConfigError(f"source folder {str(source)!r} does not exist")
    raw_dest = dest if dest is not None else cfg.dest
    if raw_dest is None:
        raw_dest = source.resolve().name
    if not raw_dest.strip():
        raise bad("expected a destination path, got an empty string", dest is not None, "--dest", "sync.dest")
    if any(not c.isprintable() for c in raw_dest):
        raise bad(f"expected a one-line path without control characters, got {raw_dest!r}", dest is not None, "--dest", "sync.dest")
    for i, option in enumerate(cfg.ssh_options):
        if "=" not in option or option.startswith("-"):
            raise ConfigError(f"expected an ssh option like 'ProxyJump=bastion', got {option!r}", where, f"sync.ssh_options[{i}]")
    remote = rs.Remote(host=host, user=user, port=port, identity=identity, ssh_options=tuple(cfg.ssh_options))
    excludes = default_excludes(source, runs_dir) + list(cfg.exclude)
    return SyncPlan(
        source=source,
        remote=remote,
        dest=normalize_dest(raw_dest),
        excludes=excludes,
        delete=cfg.delete if delete is None else delete,
        dry_run=dry_run,
        force=force,
        rsync_path=cfg.rsync_path,
    )


def host_problem(host: str) -> str:
    """Why ``host`` is not a host name, IPv4 address or ``[IPv6]`` address ("" when it is)."""
    expected = "expected a host name (letters, digits, '-', '.'), an IPv4 address or an [IPv6] address"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return expected
        return ""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return expected
        return "expected an IPv6 address in brackets, like [::1]"
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not host or len(host) > 253 or not all(HOST_LABEL_RE.match(label) for label in labels):
        return expected
    if all(label.isdigit() for label in labels):  # all numbers: an IPv4 address or nothing
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "expected an IPv4 address like 10.0.0.1"
    return ""


def rsync_argv(plan: SyncPlan, marker_dir: Optional[str] = None) -> List[str]:
    """The exact rsync command for ``plan``.

    ``-a`` plus compression and ``--mkpath``; ``-i --stats`` so the result can say what moved;
    excludes first, then the per-directory ignore files (``:-`` = dir-merge, excludes only).
    Excluded files on the remote are never deleted (rsync protects them without
    ``--delete-excluded``), so a remote ``runs/`` survives ``--delete``.
    """
    argv = ["rsync", "-a", "-z", "--mkpath", "--itemize-changes", "--stats"]
    if plan.dry_run:
        argv.append("--dry-run")
    if plan.delete:
        argv.append("--delete")
    argv += ["-e", rs.ssh_command(plan.remote)]
    if plan.rsync_path:
        argv.append(f"--rsync-path={plan.rsync_path}")
    argv += [f"--exclude={pattern}" for pattern in plan.excludes]
    argv += [f"--filter=:- {name}" for name in IGNORE_FILES]
    argv.append(str(plan.source).rstrip("/") + "/")
    if marker_dir:
        argv.append(marker_dir.rstrip("/") + "/")
    dest = plan.dest if plan.dest == "/" else plan.dest + "/"
    argv.append(f"{plan.remote.login}:{dest}")
    return argv


def check_dest_text(dest: str) -> None:
    """The guards that need no remote: ``/``, a home directory and a parent of the remote
    home (``..``), whatever ``--force`` says."""
    norm = posixpath.normpath(normalize_dest(dest) or ".")
    if norm.startswith("/") and not norm.strip("/"):
        raise Refused(
            f"refusing to sync with --delete into {dest!r}: it is '/' and everything else there would be deleted; "
            "pick a project folder"
        )
    if norm == "." or HOME_RE.match(norm):
        raise Refused(
            f"refusing to sync with --delete into {dest!r}: it is a home directory and everything not in the project "
            "would be deleted; use a subfolder such as ~/projects/NAME"
        )
    if all(part == ".." for part in norm.split("/")):
        raise Refused(
            f"refusing to sync with --delete into {dest!r}: it is a folder above the remote home, and the home inside "
            "it would be deleted; use a subfolder such as ~/projects/NAME"
        )


def _contains(folder: str, path: str) -> bool:
    """``path`` is ``folder`` or inside it (both absolute and resolved)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_dest_probe(dest: str, found: rs.DestProbe, force: bool) -> None:
    """The guards that need the remote's answer (``DestProbe``). Only an exact answer lets a
    deletion go on: an unknown state, an unknown home or an unresolved existing folder is a
    refusal, and so is ``/``, the home, or any folder the home is inside, even with ``force``."""
    head = f"refusing to sync with --delete into {dest!r}"
    if found.state not in rs.PROBE_STATES:
        raise Refused(f"{head}: could not check the destination exactly ({found.problem or 'unknown answer'}); nothing was deleted")
    if not found.home.startswith("/") or not found.cwd.startswith("/"):
        raise Refused(f"{head}: the remote did not say where its home directory is, so the destination cannot be checked")
    if found.state == "notdir":
        raise Refused(f"refusing to sync into {dest!r}: it exists on the remote and is not a folder")
    if found.state == "unreadable":
        raise Refused(f"{head}: it is a folder on the remote whose contents cannot be listed")
    if found.state == "absent":
        if found.realpath:
            raise Refused(f"{head}: the remote says it is absent but resolves it to {found.realpath!r}")
        return
    if not found.realpath.startswith("/"):
        raise Refused(f"{head}: the remote could not resolve the folder's real path")
    if found.realpath == "/":
        raise Refused(f"{head}: it resolves to '/' on the remote")
    for what, home in (("the remote home directory", found.home), ("the folder remote commands start in", found.cwd)):
        if found.realpath == home:
            raise Refused(f"{head}: it is {what} ({home}); use a subfolder")
        if _contains(found.realpath, home):
            raise Refused(
                f"{head}: {what} ({home}) is inside it ({found.realpath}) and would be deleted; use a subfolder"
            )
    if found.state == "nonempty" and not force:
        raise Refused(
            f"{head}: it is not empty and has no {MARKER} marker, so it was not "
            "made by nexa sync and its other files would be deleted; check it, then re-run with --force "
            "(or sync once without --delete to adopt it)"
        )


# --- running -------------------------------------------------------------------------------


def _marker_dir() -> str:
    folder = tempfile.mkdtemp(prefix="nexa-sync-")
    path = os.path.join(folder, MARKER)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(MARKER_TEXT)
    os.chmod(path, 0o644)
    os.utime(path, (MARKER_MTIME, MARKER_MTIME))
    return folder


def execute(plan: SyncPlan) -> SyncResult:
    """Run the guards (probing the remote when deleting), then rsync."""
    found: Optional[rs.DestProbe] = None
    if plan.delete:
        check_dest_text(plan.dest)
        found = rs.probe(plan.remote, plan.dest, MARKER)
        check_dest_probe(plan.dest, found, plan.force)
    marker_dir = _marker_dir()
    try:
        argv = rsync_argv(plan, marker_dir)
        start = time.monotonic()
        result = rs.run_rsync(argv)
        seconds = time.monotonic() - start
    finally:
        shutil.rmtree(marker_dir, ignore_errors=True)
    parsed = rs.parse_output(result.stdout or "")
    return SyncResult(
        source=str(plan.source),
        destination=plan.destination,
        argv=argv,
        dry_run=plan.dry_run,
        delete=plan.delete,
        itemized=parsed.lines,
        sent=parsed.sent,
        created=parsed.created,
        deleted=parsed.deleted,
        stats=parsed.stats,
        seconds=seconds,
        probe=found,
    )


def sync_repository(
    config: Optional[NexaConfig] = None,
    *,
    source: Optional[Path] = None,
    host: Optional[str] = None,
    user: Optional[str] = None,
    port: Optional[int] = None,
    identity: Optional[str] = None,
    dest: Optional[str] = None,
    delete: Optional[bool] = None,
    dry_run: bool = False,
    force: bool = False,
    exclude: Sequence[str] = (),
) -> SyncResult:
    """Sync the project folder (``source``, default: the folder of nexa.toml) to the remote.

    Options override ``[sync]`` of nexa.toml; ``delete=None`` keeps the file's setting.
    ``.git/``, ``__pycache__/``, ``*.pyc`` and the runs folder are always excluded, and
    ``.gitignore``/``.nexaignore`` files are honoured.

    Args:
        config: the project's ``NexaConfig`` (default None: ``load_config()``).
        source: the local folder to copy (default None: the folder of nexa.toml).
        host: the remote host (a host name, an IPv4 address or an ``[IPv6]`` address), optionally
            ``user@host`` (default None: ``[sync] host``; one is required).
        user: the remote user (default None: ``[sync] user``, else the ``user@`` of ``host``, else ssh's default).
        port: the ssh port, 1-65535 (default None: ``[sync] port``, else ssh's default).
        identity: an ssh private key file, which must exist (default None: ``[sync] identity``).
        dest: the remote folder, relative to the remote home (``~/x`` accepted) or absolute
            (default None: ``[sync] dest``, else the source folder's name).
        delete: delete remote files that are not in the source (rsync ``--delete``), after the guards
            below (default None: ``[sync] delete``).
        dry_run: run rsync with ``--dry-run``: it still connects and reports what would change,
            but copies and deletes nothing (default False).
        force: allow ``delete`` into a non-empty folder without the ``.nexa-sync`` marker; never
            allows ``/``, the remote home or a folder the home is inside (default False).
        exclude: extra rsync exclude patterns, added to ``[sync] exclude`` (default: none).

    Returns:
        SyncResult: ``source``, ``destination`` (``login:dest``), ``argv`` (the rsync command), ``dry_run``,
        ``delete``, the itemized lines and the ``sent``/``created``/``deleted`` paths, rsync's ``stats``
        (also as ``files_transferred`` and ``bytes_sent``), ``seconds``, and ``probe`` (the remote
        destination check, only when deleting).

    Raises:
        ConfigError: bad options or ``[sync]`` values (no host, a host that is not a host name, an
            IPv4 or ``[IPv6]`` address, bad port, missing identity file or source).
        Refused: a ``delete`` guard: the remote's answer about the destination could not be read
            exactly; the destination is ``/``, a home directory or a folder above the home, not a
            folder, unreadable, or non-empty without the marker and ``force`` is not set.
        ToolMissing: rsync or ssh is not on PATH.
        ToolError: rsync or ssh failed, with a one-line cause and rsync's own message.
    """
    cfg = config or load_config()
    sync_cfg = cfg.sync
    if exclude:
        sync_cfg = replace(sync_cfg, exclude=list(sync_cfg.exclude) + list(exclude))
    where = cfg.where
    plan = make_plan(
        sync_cfg,
        source=Path(source) if source is not None else cfg.root,
        runs_dir=cfg.runs_dir,
        host=host,
        user=user,
        port=port,
        identity=identity,
        dest=dest,
        delete=delete,
        dry_run=dry_run,
        force=force,
        where=where,
    )
    return execute(plan)
