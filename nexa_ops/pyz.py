"""Build ``dist/nexa.pyz`` and keep its extraction cache tidy: the library behind ``inv build``
and ``nexa cache-clean``.

The zipapp is made by shiv from a staged ``site-packages`` folder: the nexa-ops wheel (built
from the checkout's tracked files, so ``pyproject.toml`` decides what ships) plus the pinned,
hash-checked pure-Python wheels of the dependencies, unpacked with fixed file modes. shiv then
writes the archive with fixed timestamps, so two builds of one commit are byte-identical.

shiv's bootstrap extracts ``site-packages`` on first run into ``~/.shiv``, which is the wrong
place on HPC clusters (small home quotas, shared filesystems with unreliable locks). Our
``__main__.py`` keeps shiv's bootstrap but defaults the root to ``${TMPDIR:-/tmp}/<user>-shiv``
(node-local, private); ``SHIV_ROOT`` still wins. The compute-node worker never extracts: the
sbatch script imports it straight from ``nexa.pyz/site-packages``.
"""

import hashlib
import inspect
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import proc
from .errors import ConfigError, NexaError, ToolError, ToolMissing
from .resources import pyz_environment, running_pyz  # noqa: F401 - part of this module's API
from .structs import frozen, mutable
from .tools import git, pip, shiv

SETTINGS_FILE = "shiv.toml"
DEFAULT_EPOCH = 315532800  # 1980-01-01, the oldest time a zip entry can hold
#: What a build needs beyond nexa's runtime dependencies (pyproject.toml's build extra).
BUILD_TOOLS = ("shiv==1.0.8", "setuptools>=70.1")
#: The oldest CPython nexa.pyz runs on (RHEL 8's python3): ``python_floor`` may not be higher.
OLDEST_PYTHON = "3.6"


@frozen
class PyzSettings:
    """``shiv.toml``: how the zipapp is built (see docs/zipapp.md)."""

    requirements: List[str]
    output: str = "dist/nexa.pyz"
    entry_point: str = "nexa_ops.cli:main"
    console_script: str = "nexa"
    shebang: str = "/usr/bin/env python3"
    reproducible: bool = True
    root: str = ""
    python_floor: str = OLDEST_PYTHON
    max_bytes: int = 1000000
    sources: List[str] = field(default_factory=lambda: ["pyproject.toml", "nexa_ops"])
    path: Optional[Path] = field(default=None, metadata={"internal": True})

    @property
    def checkout(self) -> Path:
        """The folder holding ``shiv.toml``: paths in it are relative to this."""
        return self.path.resolve().parent if self.path else Path.cwd()


@mutable
class BuildResult:
    """A finished (or, with ``dry_run``, planned) build."""

    path: Path
    size: int = 0
    sha256: str = ""
    build_id: str = ""
    built_at: str = ""
    files: int = 0
    max_bytes: int = 0
    seconds: float = 0.0
    commands: List[List[str]] = field(default_factory=list)


@mutable
class CleanReport:
    """What ``clean_cache`` removed (or would remove) from the extraction root."""

    root: Path
    kept_build: Optional[str]
    removed: List[Path] = field(default_factory=list)
    freed_bytes: int = 0
    kept: List[Path] = field(default_factory=list)
    in_use: List[Path] = field(default_factory=list)  # skipped: a running nexa holds its lock


# --- settings ------------------------------------------------------------------------------


def find_settings(explicit: Optional[str] = None) -> Path:
    """``explicit``, else ``./shiv.toml``, else the checkout this nexa was imported from."""
    if explicit:
        return Path(explicit)
    here = Path(SETTINGS_FILE)
    if here.is_file():
        return here
    from .resources import package_root

    candidate = package_root() / SETTINGS_FILE
    if candidate.is_file():
        return candidate
    raise ConfigError("not found: run `inv build` in a nexa-ops checkout or pass --config", SETTINGS_FILE)


def load_settings(explicit: Optional[str] = None) -> PyzSettings:
    """Parse and check ``shiv.toml``."""
    from . import toml
    from .schema import from_table

    path = find_settings(explicit)
    where = str(path)
    settings = from_table(PyzSettings, toml.load(path), where)
    if not re.match(r"^\d+\.\d+$", settings.python_floor):
        raise ConfigError(f"expected a version like '3.6', got {settings.python_floor!r}", where, "python_floor")
    if _version(settings.python_floor) > _version(OLDEST_PYTHON):
        message = f"expected {OLDEST_PYTHON} or lower (nexa.pyz runs on CPython {OLDEST_PYTHON}+), got {settings.python_floor!r}"
        raise ConfigError(message, where, "python_floor")
    if settings.max_bytes < 1:
        raise ConfigError("expected an integer >= 1", where, "max_bytes")
    for i, line in enumerate(settings.requirements):
        if not re.match(r"^[A-Za-z0-9_.\-]+==[^\s]+ --hash=sha256:[0-9a-f]{64}$", line):
            raise ConfigError(f"expected 'name==version --hash=sha256:<64 hex>', got {line!r}", where, f"requirements[{i}]")
    if not settings.sources:
        raise ConfigError("expected at least pyproject.toml and the package", where, "sources")
    import dataclasses

    return dataclasses.replace(settings, path=path)


def check_console_script(settings: PyzSettings, pyproject: Dict[str, Any]) -> None:
    """The zipapp must start what ``nexa`` starts when installed: one entry point, not two."""
    scripts = pyproject.get("project", {}).get("scripts", {})
    declared = scripts.get(settings.console_script)
    if declared != settings.entry_point:
        raise ConfigError(
            f"entry_point {settings.entry_point!r} differs from pyproject.toml [project.scripts] "
            f"{settings.console_script} = {declared!r}",
            str(settings.path or SETTINGS_FILE),
            "entry_point",
        )


# --- the extraction root (these two functions are also copied into the pyz's __main__.py) --


def default_root() -> str:
    """``${TMPDIR:-/tmp}/<user>-shiv``: node-local, per user, outside the home quota."""
    import os

    base = os.environ.get("TMPDIR") or "/tmp"
    try:
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # no passwd entry (containers with an arbitrary uid)
        user = str(os.getuid())
    return os.path.join(base, user + "-shiv")


def private_root(path: str) -> str:
    """Create ``path`` as a private folder, or refuse one another user could write into
    (``/tmp`` is shared: a planted extraction would be code we run)."""
    import os
    import stat

    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise SystemExit(f"nexa: cannot create the extraction folder {path}: {exc.strerror}; set SHIV_ROOT to a writable folder") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise SystemExit(f"nexa: {path} is not a private folder of yours; set SHIV_ROOT to another folder")
    return path


def resolve_root(baked: "Optional[str]" = None, private: bool = True) -> str:
    """``SHIV_ROOT``, else the build-time root (``$VAR`` read from the environment, ``~``
    expanded, as shiv does), else ``default_root()`` (made private when ``private``)."""
    import os

    root = os.environ.get("SHIV_ROOT") or baked
    if root:
        if root.startswith("$"):
            root = os.environ.get(root[1:], root[1:])
        return os.path.expanduser(root)
    return private_root(default_root()) if private else default_root()


MAIN_TEMPLATE = """\
# -*- coding: utf-8 -*-
# nexa.pyz's entry, generated by nexa_ops/pyz.py around shiv's bootstrap (_bootstrap/):
# - the extraction root defaults to ${{TMPDIR:-/tmp}}/<user>-shiv, not ~/.shiv (SHIV_ROOT,
#   or a root set in shiv.toml, still wins);
# - every run holds a shared lock on its extraction's `.<name>_<build id>_inuse` file, which
#   `nexa cache-clean` takes exclusive (without waiting) before deleting an extraction;
# - a warm start (this build already extracted, no SHIV_* override but SHIV_ROOT) goes
#   straight to the entry point, as shiv would after extracting, without loading shiv's
#   bootstrap or reading the archive again; anything else runs shiv's bootstrap unchanged.
import os
import sys

# The extraction is nexa's own cache: keep its .pyc files even under PYTHONDONTWRITEBYTECODE,
# or every warm start compiles invoke from source again (~1.8x slower --help).
sys.dont_write_bytecode = False

BUILD_ID = {build_id!r}
ROOT = {root!r}
ENTRY_POINT = {entry_point!r}


{default_root}

{private_root}

{resolve_root}

{hold_extraction}

def warm_site_packages():
    \"\"\"This build's extracted site-packages when present and nothing asks for shiv's full
    bootstrap (any SHIV_* variable but SHIV_ROOT does); else None.\"\"\"
    import os

    if any(key.startswith("SHIV_") and key != "SHIV_ROOT" for key in os.environ):
        return None
    name = os.path.basename(os.path.realpath(sys.argv[0])) + "_" + BUILD_ID
    path = os.path.join(resolve_root(ROOT), name, "site-packages")
    return path if os.path.isdir(path) else None


def run_warm(path):
    \"\"\"What shiv's bootstrap does once extracted: our site-packages ahead of any other
    site-packages on sys.path (through site.addsitedir, for .pth files), then the entry point.\"\"\"
    import importlib
    import os
    import site

    length = len(sys.path)
    names = ("site-packages", "dist-packages")
    index = next((i for i, p in enumerate(sys.path) if os.path.splitext(os.path.basename(p))[0] in names), length) or length
    site.addsitedir(path)
    sys.path = sys.path[:index] + sys.path[length:] + sys.path[index:length]
    module, _, attr = ENTRY_POINT.partition(":")
    func = importlib.import_module(module)
    for part in attr.split("."):
        func = getattr(func, part)
    sys.exit(func())


# Held (shared) until this process exits: `nexa cache-clean` never deletes an extraction in use.
_in_use = hold_extraction(resolve_root(ROOT), os.path.basename(os.path.realpath(sys.argv[0])) + "_" + BUILD_ID)
_warm = warm_site_packages()
if _warm:
    run_warm(_warm)

import _bootstrap

_shiv_cache_path = _bootstrap.cache_path


def _cache_path(archive, root_dir, build_id):
    return _shiv_cache_path(archive, root_dir or private_root(default_root()), build_id)


_bootstrap.cache_path = _cache_path
_bootstrap.bootstrap()
"""


def main_py(build_id: str, root: Optional[str], entry_point: str) -> bytes:
    """The zipapp's ``__main__.py`` for this build (see ``MAIN_TEMPLATE``)."""
    parts = {func.__name__: inspect.getsource(func) for func in (default_root, private_root, resolve_root, hold_extraction)}
    return MAIN_TEMPLATE.format(build_id=build_id, root=root, entry_point=entry_point, **parts).encode("utf-8")


def extraction_root(baked: Optional[str] = None) -> Path:
    """The root a pyz extracts into (``resolve_root``), without creating it."""
    return Path(resolve_root(baked, private=False))


# --- build ---------------------------------------------------------------------------------


def source_date_epoch(checkout: Path) -> int:
    """``SOURCE_DATE_EPOCH``, else the last commit's time, else 1980: same commit, same bytes."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        try:
            return int(env)
        except ValueError:
            raise ConfigError(f"expected an integer (seconds since 1970), got {env!r}", "SOURCE_DATE_EPOCH") from None
    when = git.last_commit_time(checkout)
    return DEFAULT_EPOCH if when is None else max(DEFAULT_EPOCH, when)


def project_files(checkout: Path, sources: Sequence[str]) -> List[str]:
    """Checkout files under ``sources`` that git tracks or would track (no caches, no
    scratch files); every file when the checkout is not a git repository."""
    listed = git.listed_files(checkout, list(sources))
    names = listed or []
    if listed is None:
        for source in sources:
            top = checkout / source
            if top.is_file():
                names.append(source)
            for dirpath, _, filenames in os.walk(str(top)):
                rel = os.path.relpath(dirpath, str(checkout))
                names += [os.path.join(rel, f).replace(os.sep, "/") for f in filenames]
    keep = set()
    for name in names:
        parts = name.split("/")
        if "__pycache__" in parts or name.endswith((".pyc", ".pyo")) or not (checkout / name).is_file():
            continue
        keep.add(name)
    return sorted(keep)


def stage_checkout(checkout: Path, sources: Sequence[str], dest: Path) -> Dict[str, Any]:
    """Copy the project's files to ``dest`` (so the wheel build cannot pick up stale ``build/``
    output or untracked files) and return its parsed ``pyproject.toml``."""
    from . import toml

    for name in project_files(checkout, sources):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(checkout / name), str(target))
        os.chmod(str(target), 0o755 if os.stat(str(checkout / name)).st_mode & 0o111 else 0o644)
    pyproject = toml.load(dest / "pyproject.toml")
    # Folders mapped into the package may be empty (git keeps no empty folders).
    package_dir = pyproject.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    for folder in package_dir.values():
        (dest / folder).mkdir(parents=True, exist_ok=True)
    return pyproject


def unpack_wheel(wheel: Path, target: Path) -> int:
    """Install a pure-Python wheel by unpacking it, with modes 0644/0755 whatever the umask."""
    count = 0
    with zipfile.ZipFile(str(wheel)) as archive:
        for info in archive.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            if name.startswith("/") or ".." in name.split("/"):
                raise NexaError(f"{wheel.name}: unsafe path {name!r} in wheel")
            if ".data/" in name.split("/", 1)[0] + "/":
                raise NexaError(f"{wheel.name}: wheels with a .data folder are not supported in nexa.pyz")
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(archive.read(info))
            os.chmod(str(dest), 0o755 if (info.external_attr >> 16) & 0o111 else 0o644)
            count += 1
    return count


def replace_main(src: Path, dst: Path, main: bytes) -> None:
    """Copy shiv's archive to ``dst`` with our ``__main__.py``, keeping every entry's time,
    mode and compression (so the result stays reproducible)."""
    raw = src.read_bytes()
    shebang = raw[: raw.index(b"\n") + 1] if raw.startswith(b"#!") else b""
    with zipfile.ZipFile(str(src)) as zin, open(str(dst), "wb") as fh:
        fh.write(shebang)
        with zipfile.ZipFile(fh, "w") as zout:
            for info in zin.infolist():
                data = main if info.filename == "__main__.py" else zin.read(info)
                entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                entry.compress_type = info.compress_type
                entry.external_attr = info.external_attr
                entry.create_system = info.create_system
                zout.writestr(entry, data)


def build_commands(settings: PyzSettings, work: Path, output: Path) -> List[List[str]]:
    """The pip and shiv command lines of a build in scratch folder ``work``."""
    return [
        pip.wheel_argv(work / "src", work / "wheels"),
        pip.download_argv(work / "requirements.txt", work / "wheels", settings.python_floor),
        shiv.argv(
            work / "site-packages", output, settings.entry_point, settings.shebang, reproducible=settings.reproducible, root=settings.root
        ),
    ]


def build(settings: PyzSettings, output: Optional[str] = None, *, dry_run: bool = False) -> BuildResult:
    """Build the zipapp; refuse (and leave the previous one in place) when over ``max_bytes``.

    Raises ConfigError (bad shiv.toml), ToolMissing (no shiv/pip), ToolError (pip or shiv
    failed, e.g. no network and no pip cache), NexaError (too large).
    """

    checkout = settings.checkout
    target = Path(output) if output else checkout / settings.output
    target = target if target.is_absolute() else Path.cwd() / target
    started = time.monotonic()
    if dry_run:
        work = Path(tempfile.gettempdir()) / "nexa-pyz-XXXXXXXX"
        commands = build_commands(settings, work, work / "nexa.pyz")
        print(f"# copy {len(project_files(checkout, settings.sources))} checkout files to {work / 'src'}")
        for argv in commands:
            print(proc.quote(argv))
        print(f"# replace __main__.py, then move to {target}")
        return BuildResult(target, max_bytes=settings.max_bytes, commands=commands)
    check_build_tools()
    epoch = source_date_epoch(checkout)
    with tempfile.TemporaryDirectory(prefix="nexa-pyz-") as tmp:
        work = Path(tmp)
        pyproject = stage_checkout(checkout, settings.sources, work / "src")
        check_console_script(settings, pyproject)
        (work / "requirements.txt").write_text("\n".join(settings.requirements) + "\n", encoding="utf-8")
        raw = work / "shiv.pyz"
        commands = build_commands(settings, work, raw)
        wheel_cmd, download_cmd, shiv_cmd = commands
        pip.run(wheel_cmd, explain=_explain_pip)
        try:
            pip.run(download_cmd, explain=_explain_pip)
        except ToolError as exc:
            refused = pip.floor_refusal(exc.stderr, settings.python_floor)
            if refused:
                raise ConfigError(refused, str(settings.path or SETTINGS_FILE), "requirements") from None
            raise
        site = work / "site-packages"
        files = sum(unpack_wheel(w, site) for w in sorted((work / "wheels").glob("*.whl")))
        env = {"SOURCE_DATE_EPOCH": str(epoch)} if settings.reproducible else {"SOURCE_DATE_EPOCH": None}
        shiv.run(shiv_cmd, env=env)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.parent / f".{target.name}.{os.getpid()}.tmp"
        try:
            shiv_env = pyz_environment(raw)
            replace_main(raw, staged, main_py(shiv_env["build_id"], shiv_env.get("root"), settings.entry_point))
            size = staged.stat().st_size
            if size > settings.max_bytes:
                where = settings.path or SETTINGS_FILE
                raise NexaError(f"{target.name} would be {size:,} bytes, above max_bytes = {settings.max_bytes:,} in {where}")
            os.chmod(str(staged), 0o755)
            os.replace(str(staged), str(target))
        finally:
            if staged.exists():
                staged.unlink()
    data = target.read_bytes()
    env_json = pyz_environment(target)
    return BuildResult(
        path=target,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        build_id=env_json.get("build_id", ""),
        built_at=env_json.get("built_at", ""),
        files=files,
        max_bytes=settings.max_bytes,
        seconds=time.monotonic() - started,
        commands=commands,
    )


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _explain_pip(code: int, stderr: str) -> str:
    return pip.explain_failure(code, stderr, install_hint())


def install_hint() -> str:
    """The command that installs the build tools into the Python running the build."""
    import shlex

    return f"{shlex.quote(sys.executable)} -m pip install " + " ".join(shlex.quote(t) for t in BUILD_TOOLS)


def check_build_tools() -> None:
    """shiv, pip, and a setuptools that can build a wheel (bdist_wheel is built into
    setuptools 70.1+; older ones need the wheel package): ToolMissing (exit 127) naming the
    one missing and the command that installs them, before anything is built."""
    import importlib.util

    for module in ("shiv", "pip"):
        if importlib.util.find_spec(module) is None:
            raise ToolMissing(module, install_hint(), what=f"not installed for {sys.executable}")
    spec = importlib.util.find_spec("setuptools")
    if spec is None:
        raise ToolMissing("setuptools", install_hint(), what=f"not installed for {sys.executable}")
    folders = list(spec.submodule_search_locations or [])
    if any(os.path.isfile(os.path.join(f, "command", "bdist_wheel.py")) for f in folders):
        return
    if importlib.util.find_spec("wheel") is not None:
        return
    found = "?"
    for folder in folders:  # its version, from the dist-info next to it (only for the message)
        site = os.path.dirname(folder)
        names = sorted(n for n in os.listdir(site) if n.startswith("setuptools-") and n.endswith(".dist-info"))
        found = names[-1][len("setuptools-") : -len(".dist-info")] if names else found
    what = f"{found} in {sys.prefix} cannot build wheels (bdist_wheel needs setuptools >= 70.1 or the wheel package)"
    raise ToolMissing("setuptools", install_hint(), what=what)


# --- cache-clean ---------------------------------------------------------------------------

_EXTRACTION = re.compile(r"^(?P<name>.+)_(?P<build>[0-9a-f]{64})(?P<tmp>\.tmp)?$")
_LOCK = re.compile(r"^\.(?P<name>.+)_(?P<build>[0-9a-f]{64})_lock$")
_REMOVING = re.compile(r"^\..+\.removing\.\d+$")


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(str(path)):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _is_nexa(path: Path) -> bool:
    return (path / "site-packages" / "nexa_ops").is_dir()


def clean_cache(
    root: Optional[str] = None,
    keep: Optional[str] = None,
    *,
    dry_run: bool = False,
    stale_seconds: float = 3600.0,
) -> CleanReport:
    """Remove extractions of nexa builds other than ``keep`` from the extraction root.

    ``keep`` is a nexa.pyz whose build stays (default: the one running this, else none);
    ``root`` defaults to where that pyz extracts (``SHIV_ROOT`` or ``default_root()``).
    Only folders holding ``site-packages/nexa_ops`` are touched, so other shiv apps sharing
    a root are left alone; half-done extractions (``.tmp``) are removed only when older than
    ``stale_seconds``. An extraction a running nexa uses is never removed: each run holds a
    shared lock on ``.<name>_<build id>_inuse`` and the cleaner skips (``in_use``) any it cannot
    lock exclusively at once. Each folder is renamed away under that lock, so a nexa starting
    meanwhile re-extracts instead of reading a half-deleted tree.
    """
    keep_path = Path(keep) if keep else running_pyz()
    kept_build = None
    baked = None
    if keep_path is not None:
        info = pyz_environment(keep_path)
        kept_build = info.get("build_id")
        baked = info.get("root")
    folder = Path(root).expanduser() if root else extraction_root(baked)
    report = CleanReport(folder.resolve() if folder.exists() else folder, kept_build)
    if not folder.is_dir():
        return report
    removed_builds = set()
    now = time.time()
    entries = sorted(folder.iterdir())
    for entry in entries:
        match = _EXTRACTION.match(entry.name)
        if _REMOVING.match(entry.name) and entry.is_dir():
            _remove(entry, report, dry_run)
            continue
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        if match.group("build") == kept_build:
            report.kept.append(entry)
            continue
        if not _is_nexa(entry):
            continue
        if match.group("tmp") and now - entry.stat().st_mtime < stale_seconds:
            continue  # another process may be extracting right now
        if not _remove_unused(folder, match.group("name"), match.group("build"), entry, report, dry_run):
            continue
        if not match.group("tmp"):
            removed_builds.add((match.group("name"), match.group("build")))
    for entry in entries:
        match = _LOCK.match(entry.name)
        if match and (match.group("name"), match.group("build")) in removed_builds:
            tmp = folder / f"{match.group('name')}_{match.group('build')}.tmp"
            if not tmp.exists():
                _remove(entry, report, dry_run)
    return report


def _remove(path: Path, report: CleanReport, dry_run: bool) -> None:
    size = _size(path) if path.is_dir() else path.lstat().st_size
    report.removed.append(path)
    report.freed_bytes += size
    if dry_run:
        return
    if path.is_dir():
        doomed = path if _REMOVING.match(path.name) else path.with_name(f".{path.name}.removing.{os.getpid()}")
        try:
            os.rename(str(path), str(doomed))
        except FileNotFoundError:
            return  # removed by a concurrent cache-clean
        shutil.rmtree(str(doomed), ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# --- the in-use lock of an extraction (hold_extraction is also copied into __main__.py) -----


def hold_extraction(root: str, name: str) -> "Optional[int]":
    """Hold a shared ``flock`` on ``<root>/.<name>_inuse`` for the life of this process (the
    returned descriptor stays open; it is not inherited by programs nexa starts). Waits while
    a cache-clean holds it exclusively, then checks the file is still the one at that path
    (a cleaner unlinks it with the extraction). None when locks are unavailable here."""
    import os

    try:
        import fcntl
    except ImportError:  # not POSIX: nothing to hold
        return None
    path = os.path.join(root, "." + name + "_inuse")
    flags = os.O_RDONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(50):
        try:
            fd = os.open(path, flags, 0o644)
        except OSError:  # a root this user cannot write: the run goes on unprotected
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except OSError:
            pass
        os.close(fd)
    return None


_INUSE = re.compile(r"^\.(?P<name>.+)_(?P<build>[0-9a-f]{64})_inuse$")


def _remove_unused(root: Path, name: str, build: str, entry: Path, report: CleanReport, dry_run: bool) -> bool:
    """Remove extraction ``entry`` (or its ``.tmp``) unless a running nexa holds its in-use
    lock: take it exclusive without waiting, and while holding it rename the folder away and
    unlink the lock file; delete the renamed tree after letting go. False (and ``entry`` in
    ``report.in_use``) when it is in use."""
    import fcntl

    lock = root / f".{name}_{build}_inuse"
    create = 0 if dry_run else os.O_CREAT  # a dry run changes nothing; no lock file = no run holds it
    try:
        fd = os.open(str(lock), os.O_RDONLY | create | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileNotFoundError:
        if not dry_run:
            report.in_use.append(entry)  # the root vanished under us: cannot tell, keep it
            return False
        report.removed.append(entry)
        report.freed_bytes += _size(entry)
        return True
    except OSError:
        report.in_use.append(entry)  # cannot tell: keep it
        return False
    doomed: Optional[Path] = None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            report.in_use.append(entry)
            return False
        report.removed.append(entry)
        report.freed_bytes += _size(entry)
        if dry_run:
            return True
        doomed = entry.with_name(f".{entry.name}.removing.{os.getpid()}")
        try:
            os.rename(str(entry), str(doomed))
        except FileNotFoundError:
            doomed = None  # removed by a concurrent cache-clean
        if not entry.name.endswith(".tmp"):
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)
    if doomed is not None:
        shutil.rmtree(str(doomed), ignore_errors=True)
    return True
