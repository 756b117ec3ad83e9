"""Plan a sweep: expand it and write the run folder (spec, the worker's index, the script).

Everything that can be checked is checked before the run folder exists (the cost settings
included); should writing still fail, a run folder made here is removed again, so a failed
plan leaves nothing behind.
"""

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple

from .. import envfile, runs, worker
from ..config import NexaConfig, SweepDefinition
from ..cost.estimate import load_prices
from ..cost.pricing import Estimate, estimate
from ..errors import ConfigError
from ..fs import atomic_write_bytes, atomic_write_text
from ..resources import package_root
from ..tools import torchrun
from .expand import Task, expand
from .script import render_array_script

#: The sweep's ``env`` variables and their values at planning, sourced by every task.
ENV_FILE = "sweep.env"


@dataclass
class Chunk:
    """One array submission: tasks ``offset .. offset+count-1`` as indices ``0..count-1``."""

    offset: int
    count: int
    job_id: Optional[str] = None


@dataclass
class SweepArtifacts:
    """What ``launch_slurm_sweep`` planned, wrote and submitted."""

    name: str
    run_id: str
    run_dir: Path
    spec_path: Path
    script_paths: List[Path]
    tasks: List[Task]
    chunks: List[Chunk] = field(default_factory=list)
    job_ids: List[str] = field(default_factory=list)
    local_results: List[Any] = field(default_factory=list)
    cost: Optional[Estimate] = None
    submitted: bool = False
    env_names: List[str] = field(default_factory=list)  # the sweep's `env` variables carried to every task

    @property
    def job_count(self) -> int:
        """Number of array tasks (one per sweep task)."""
        return len(self.tasks)


def worker_path(config: NexaConfig) -> str:
    """Where compute nodes import the worker from.

    ``[cluster] pyz_path`` when set; else this nexa.pyz when running from one (it sits on
    the shared filesystem, while its extraction cache is often node-local); else the folder
    holding the ``nexa_ops`` package.
    """
    if config.cluster.pyz_path:
        return os.path.expanduser(config.cluster.pyz_path) + "/site-packages"
    from ..pyz import running_pyz  # lazy: the build module's imports cost start-up time

    pyz = running_pyz()
    if pyz is not None:
        return f"{pyz}/site-packages"
    return str(package_root())


def plan_sweep(defn: SweepDefinition, config: NexaConfig, out: Optional[Path] = None) -> SweepArtifacts:
    """Expand the sweep and write ``spec.json`` and the sbatch script into the run folder."""
    tasks = expand(defn, launcher_prefix(defn))
    if not tasks:
        raise ConfigError("every combination is excluded: nothing to run", str(defn.path or "sweep"), "exclude")
    cost = estimate(defn.resources, len(tasks), load_prices(config), config.cost, where=config.where)
    if out is not None and not str(out).strip():
        raise ConfigError("--out: expected a folder, got ''")
    reuse = out is not None and _holds_this_plan(Path(out).resolve(), _spec_text(defn, config, tasks, Path(out).resolve()))
    run_dir, made = _new_run_dir(config, defn.name, out)
    try:
        return _write_plan(defn, config, tasks, run_dir, cost, reuse)
    except BaseException:
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _spec_text(defn: SweepDefinition, config: NexaConfig, tasks: List[Task], run_dir: Path) -> str:
    """``spec.json``'s exact content for this plan in ``run_dir``."""
    doc = runs.spec_document(defn.name, defn.campaign, defn.command, config.root, run_dir, tasks)
    return json.dumps(doc, ensure_ascii=False) + "\n"


def _holds_this_plan(run_dir: Path, text: str) -> bool:
    """Whether ``--out`` already holds this very plan (``spec.json`` the same byte for byte):
    then it is reused as it is. A folder holding another spec, or a manifest without this
    spec, is refused: rewriting its spec would make the pending tasks of a queued array run
    the new commands."""
    spec, manifest = run_dir / runs.SPEC, run_dir / runs.MANIFEST
    if not (os.path.lexists(str(spec)) or os.path.lexists(str(manifest))):
        return False
    try:
        old: Optional[bytes] = spec.read_bytes()
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise ConfigError(f"--out {run_dir}: cannot read its spec.json: {exc.strerror}") from None
    if old == text.encode("utf-8"):
        return True
    what = "the spec of another plan (spec.json differs)" if old is not None else "a run (manifest.json)"
    raise ConfigError(f"--out {run_dir}: already holds {what}; its queued tasks would run the new commands: choose a new folder")


def _new_run_dir(config: NexaConfig, name: str, out: Optional[Path]) -> Tuple[Path, Optional[Path]]:
    """The run folder, and the topmost folder this call created (None: it existed)."""
    if out is None:
        made = _first_missing(config.runs_dir)
        try:
            run_dir = runs.create_run_dir(config.runs_dir, name)
        except OSError as exc:
            message = f"cannot make a run folder in {config.runs_dir}: {exc.strerror}"
            raise ConfigError(message, config.where, "cluster.runs_dir") from None
        return run_dir, made or run_dir
    run_dir = Path(out).resolve()
    made = _first_missing(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True, mode=runs.RUN_DIR_MODE)
    except OSError as exc:
        raise ConfigError(f"--out: cannot make the run folder {out}: {exc.strerror}") from None
    if made is None:  # it existed: what is in it decides what the tasks run
        st = run_dir.stat()
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            why = "belongs to another user" if st.st_uid != os.geteuid() else f"is writable by others (mode {st.st_mode & 0o7777:04o})"
            raise ConfigError(f"--out {run_dir}: {why}: others could change what its tasks run; choose your own folder (or chmod go-w it)")
    return run_dir, made


def _first_missing(path: Path) -> Optional[Path]:
    """The topmost folder of ``path`` that does not exist yet (None: it all does)."""
    path = path.resolve()
    return next((p for p in reversed([path, *path.parents]) if not p.exists()), None)


def _write_plan(
    defn: SweepDefinition, config: NexaConfig, tasks: List[Task], run_dir: Path, cost: Estimate, reuse: bool = False
) -> SweepArtifacts:
    """Write the plan into ``run_dir``; with ``reuse`` (the folder holds this very spec) the
    spec is kept as it is and the index rewritten only when it does not match it."""
    log_dir = Path(config.cluster.log_dir).expanduser().resolve() if config.cluster.log_dir else run_dir / runs.LOGS
    try:
        log_dir.mkdir(parents=True, exist_ok=True, mode=runs.RUN_DIR_MODE)
    except OSError as exc:
        raise ConfigError(f"cannot make the log folder {log_dir}: {exc.strerror}", config.where, "cluster.log_dir") from None
    (run_dir / runs.TASKS).mkdir(exist_ok=True, mode=runs.RUN_DIR_MODE)
    workdir = config.root
    spec_path = run_dir / runs.SPEC
    if not reuse:
        atomic_write_text(spec_path, _spec_text(defn, config, tasks, run_dir))
    if not reuse or worker.verify_index(str(spec_path)) is not None:
        # The worker's fast path: one task's argv in a few reads, no json import on the node.
        index = worker.index_bytes(str(spec_path), str(workdir), str(run_dir), [t.argv for t in tasks])
        atomic_write_bytes(run_dir / worker.INDEX_NAME, index)
    script = render_array_script(
        name=defn.name,
        res=defn.resources,
        cluster=config.cluster,
        count=len(tasks),
        spec_path=str(spec_path),
        run_dir=str(run_dir),
        log_dir=str(log_dir),
        workdir=str(workdir),
        worker_path=worker_path(config),
        python=config.cluster.python,
        env_file=str(run_dir / ENV_FILE) if defn.env else "",
    )
    script_path = run_dir / f"{defn.name}.sbatch"
    env_values = envfile.select_prefixed(defn.env, os.environ)
    if reuse and (run_dir / runs.MANIFEST).exists():  # submitted: its script is what ran
        try:
            same = script_path.read_text(encoding="utf-8") == script
        except (OSError, ValueError):
            same = False
        if not same:
            raise ConfigError(f"--out {run_dir}: already submitted with another sbatch script ({script_path.name}): choose a new folder")
    else:
        if defn.env:  # before the script that sources it
            header = "The sweep's `env` variables, with their values when it was planned (sourced by every task)."
            atomic_write_text(run_dir / ENV_FILE, envfile.env_file(env_values, header), mode=envfile.MODE)
        atomic_write_text(script_path, script, mode=0o755)
    artifacts = SweepArtifacts(defn.name, run_dir.name, run_dir, spec_path, [script_path], tasks, cost=cost)
    artifacts.env_names = list(env_values)
    return artifacts


def launcher_prefix(defn: SweepDefinition) -> List[str]:
    """``launcher = "torchrun"``: each task runs under a single-node torchrun (``--standalone``,
    so tasks sharing a node each get their own free port); ``python train.py`` stays word for
    word (``--no_python``) and a bare ``train.py`` is run by torchrun's Python."""
    if defn.launcher.kind != "torchrun":
        return []
    nproc = defn.launcher.nproc_per_node or max(1, defn.resources.gpus_per_node)
    return torchrun.prefix(defn.command, nproc_per_node=nproc)
