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

from .. import runs, worker
from ..config import NexaConfig, SweepDefinition
from ..cost.estimate import load_prices
from ..cost.pricing import Estimate, estimate
from ..cost.schedule import ScheduleCost, schedule_cost
from ..errors import ConfigError
from ..fs import atomic_write_bytes, atomic_write_text
from ..resources import package_root
from ..tools import torchrun
from . import search
from .expand import MAX_TASKS, Task, expand, rung_tasks
from .script import render_array_script, render_promote_script


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
    schedule: Optional[search.Schedule] = None  # a halving sweep's rungs (tasks: every rung's)
    schedule_cost: Optional[ScheduleCost] = None  # its cost table, beside the full grid
    promote_job_ids: List[str] = field(default_factory=list)  # the promotion jobs submitted here
    decisions: List[search.Decision] = field(default_factory=list)  # --local: each rung's

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
    """Expand the sweep and write ``spec.json`` and the sbatch script into the run folder (a
    halving sweep: every rung's tasks, and the promotion script too)."""
    tasks = expand(defn, launcher_prefix(defn))
    if not tasks:
        raise ConfigError("every combination is excluded: nothing to run", str(defn.path or "sweep"), "exclude")
    schedule, costs = None, None
    if defn.search is not None:
        schedule, costs = halving_plan(defn, config, len(tasks))
        tasks = rung_tasks(defn, tasks, schedule)
        cost = costs.estimate
    else:
        cost = estimate(defn.resources, len(tasks), load_prices(config), config.cost, where=config.where)
    if out is not None and not str(out).strip():
        raise ConfigError("--out: expected a folder, got ''")
    run_dir, made = _new_run_dir(config, defn.name, out)
    try:
        artifacts = _write_plan(defn, config, tasks, run_dir, cost, schedule)
    except BaseException:
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise
    artifacts.schedule, artifacts.schedule_cost = schedule, costs
    return artifacts


def halving_plan(defn: SweepDefinition, config: NexaConfig, configurations: int) -> Tuple[search.Schedule, ScheduleCost]:
    """The schedule of a sweep with ``[search]`` over its ``configurations``, and its cost."""
    spec = defn.search
    assert spec is not None
    schedule = search.plan(configurations, spec.budget.param, spec.metric, spec.mode, spec.eta, spec.budget.min, spec.budget.max)
    if schedule.task_count > MAX_TASKS:
        rungs = len(schedule.rungs)
        message = f"{configurations:,} configurations x {rungs} rungs: more than {MAX_TASKS:,} tasks is not a sweep nexa plans"
        raise ConfigError(message, str(defn.path or "sweep"), "search.budget")
    full = estimate(defn.resources, configurations, load_prices(config), config.cost, where=config.where)
    return schedule, schedule_cost(full, schedule)


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
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot make the run folder {out}: {exc.strerror}") from None
    return run_dir, made


def _first_missing(path: Path) -> Optional[Path]:
    """The topmost folder of ``path`` that does not exist yet (None: it all does)."""
    path = path.resolve()
    return next((p for p in reversed([path, *path.parents]) if not p.exists()), None)


def _write_plan(
    defn: SweepDefinition, config: NexaConfig, tasks: List[Task], run_dir: Path, cost: Estimate, schedule: Optional[search.Schedule] = None
) -> SweepArtifacts:
    log_dir = log_dir_of(config, run_dir)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the log folder {log_dir}: {exc.strerror}", config.where, "cluster.log_dir") from None
    (run_dir / runs.TASKS).mkdir(exist_ok=True)
    (run_dir / runs.METRICS).mkdir(exist_ok=True)  # $NEXA_METRICS_FILE of every task: made once, here
    workdir = config.root
    spec_path = run_dir / runs.SPEC
    plan = schedule.as_json() if schedule else None
    text = json.dumps(runs.spec_document(defn.name, defn.campaign, defn.command, workdir, run_dir, tasks, plan), ensure_ascii=False)
    atomic_write_text(spec_path, text + "\n")
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
        trials=schedule.n if schedule else None,
    )
    script_path = atomic_write_text(run_dir / f"{defn.name}.sbatch", script, mode=0o755)
    scripts = [script_path]
    if schedule is not None and defn.search is not None:
        (run_dir / runs.RUNGS).mkdir(exist_ok=True)
        (run_dir / runs.TRIALS).mkdir(exist_ok=True)
        promote = render_promote_script(
            name=defn.name,
            res=defn.resources,
            cluster=config.cluster,
            partition=defn.search.promote_partition,
            run_dir=str(run_dir),
            worker_path=worker_path(config),
            python=config.cluster.python,
        )
        scripts.append(atomic_write_text(run_dir / f"{defn.name}.promote.sbatch", promote, mode=0o755))
    return SweepArtifacts(defn.name, run_dir.name, run_dir, spec_path, scripts, tasks, cost=cost)


def log_dir_of(config: NexaConfig, run_dir: Path) -> Path:
    """Where the run's Slurm logs go: ``[cluster] log_dir``, else ``<run>/logs``."""
    return Path(config.cluster.log_dir).expanduser().resolve() if config.cluster.log_dir else run_dir / runs.LOGS


def launcher_prefix(defn: SweepDefinition) -> List[str]:
    """``launcher = "torchrun"``: each task runs under a single-node torchrun (``--standalone``,
    so tasks sharing a node each get their own free port); ``python train.py`` stays word for
    word (``--no_python``) and a bare ``train.py`` is run by torchrun's Python."""
    if defn.launcher.kind != "torchrun":
        return []
    nproc = defn.launcher.nproc_per_node or max(1, defn.resources.gpus_per_node)
    return torchrun.prefix(defn.command, nproc_per_node=nproc)
