"""Plan a sweep: expand it and write the run folder (spec, the worker's index, the script).

Everything that can be checked is checked before the run folder exists (the cost settings
included); should writing still fail, a run folder made here is removed again, so a failed
plan leaves nothing behind. A dry run plans in memory: the same checks, the run folder it
would make, and nothing written at all (so it never becomes the latest run).
"""

import errno
import json
import os
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from .. import envfile, pipeline, runs, worker
from ..config import NexaConfig, SweepDefinition
from ..cost.estimate import load_prices
from ..cost.pricing import Estimate, estimate
from ..errors import ConfigError
from ..fs import atomic_write_bytes, atomic_write_text
from ..resources import package_root, running_pyz
from ..structs import mutable
from .expand import MAX_TASKS, Task, expand, plan_warnings, rung_tasks
from .script import render_array_script, render_promote_script

if TYPE_CHECKING:
    # The halving modules are imported by halving_plan (a halving sweep only), the snapshot
    # module where a snapshot is taken: each would add to every plan's start-up.
    from ..cost.schedule import ScheduleCost
    from ..snapshot import Snapshot
    from . import search

#: The sweep's ``env`` variables and their values at planning, sourced by every task.
ENV_FILE = "sweep.env"


@mutable
class Chunk:
    """One array submission: tasks ``offset .. offset+count-1`` as indices ``0..count-1``,
    or ``offset + i`` for each index ``i`` in ``array`` (cut to an upstream run's chunks)."""

    offset: int
    count: int
    job_id: Optional[str] = None
    array: Optional[str] = None  # the indices, when not 0..count-1
    dependency: Optional[str] = None  # Slurm's --dependency, when it waits (--after)

    def manifest(self) -> dict:
        """The manifest's chunk: no null fields."""
        return {k: v for k, v in vars(self).items() if v is not None}


@mutable
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
    warnings: List[str] = field(default_factory=list)  # one line each, for stderr
    written: bool = True  # False for a dry run: the paths are where the files would go
    stopped_by: Optional[str] = None  # a local run stopped by a signal: its name (INT, TERM...)
    commands: List[List[str]] = field(default_factory=list)  # a dry run's sbatch commands
    upstreams: List[pipeline.Upstream] = field(default_factory=list)  # --after, as read when planned
    snapshot: "Optional[Snapshot]" = None
    env_names: List[str] = field(default_factory=list)  # the sweep's `env` variables carried to every task
    schedule: Optional["search.Schedule"] = None  # a halving sweep's rungs (tasks: every rung's)
    schedule_cost: Optional["ScheduleCost"] = None  # its cost table, beside the full grid
    promote_job_ids: List[str] = field(default_factory=list)  # the promotion jobs submitted here
    decisions: List["search.Decision"] = field(default_factory=list)  # --local: each rung's

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
    pyz = running_pyz()
    if pyz is not None:
        return f"{pyz}/site-packages"
    return str(package_root())


def plan_sweep(
    defn: SweepDefinition,
    config: NexaConfig,
    out: Optional[Path] = None,
    *,
    upstreams: Sequence[pipeline.Upstream] = (),
    snapshot: bool = False,
    dry_run: bool = False,
) -> SweepArtifacts:
    """Expand the sweep and write ``spec.json`` and the sbatch script into the run folder
    (``dry_run``: check and plan the same, write nothing). ``warnings`` says what looks like
    a mistake: an exclude rule that matches nothing, no parameters, a missing script.

    ``upstreams`` (``--after``, read by ``pipeline.gather``) are checked against the task
    count first and give the script its ``$NEXA_UPSTREAM_*`` variables; ``snapshot`` copies
    the project into ``<run>/code`` (a dry run prints the copy command) and the tasks run
    there.

    A halving sweep (``[search]``) plans every rung's tasks (task ``rung * n + trial``), its
    ``schedule`` and ``schedule_cost``, and the promotion script too; its upstreams are
    checked against its configurations (rung 0 is what waits on them)."""
    used = [False] * len(defn.exclude)
    tasks = expand(defn, launcher_prefix(defn), used)
    if not tasks:
        raise ConfigError("every combination is excluded: nothing to run", str(defn.path or "sweep"), "exclude")
    pipeline.check(upstreams, len(tasks), "this sweep")
    schedule, costs = None, None
    if defn.search is not None:
        schedule, costs = halving_plan(defn, config, len(tasks))
        tasks = rung_tasks(defn, tasks, schedule)
        cost = costs.estimate
    else:
        cost = estimate(defn.resources, len(tasks), load_prices(config), config.cost, where=config.where)
    if out is not None and not str(out).strip():
        raise ConfigError("--out: expected a folder, got ''")
    warnings = plan_warnings(defn, used)
    missing = missing_script(defn.command, config.root)
    if missing:
        warnings.append(f"{defn.path or 'sweep'}: command: {missing}")
    if dry_run:
        if out is not None:  # refused as a real plan would be; nothing is written either way
            text = None if snapshot else _spec_text(defn, tasks, Path(out).resolve(), config.root, schedule)
            _holds_this_plan(Path(out).resolve(), text)
        artifacts = _plan_in_memory(defn, config, tasks, out, cost, schedule)
        if snapshot:
            from ..snapshot import take

            artifacts.snapshot = take(config, artifacts.run_dir, config.root, dry_run=True)
    else:
        target = Path(out).resolve() if out is not None else None
        # A snapshot's spec names a new copy: an --out holding any plan is then another plan.
        planned = None if snapshot or target is None else _spec_text(defn, tasks, target, config.root, schedule)
        reuse = target is not None and _holds_this_plan(target, planned)
        run_dir, made = _new_run_dir(config, defn.name, out)
        try:
            snap = None
            if snapshot:
                from ..snapshot import take

                snap = take(config, run_dir, config.root)
            workdir = snap.workdir if snap else config.root
            artifacts = _write_plan(defn, config, tasks, run_dir, cost, workdir, upstreams, reuse, schedule)
            artifacts.snapshot = snap
        except BaseException:
            if made:
                import shutil  # here: only a failed plan needs it, and it costs every plan a millisecond

                shutil.rmtree(made, ignore_errors=True)
            raise
    artifacts.upstreams = list(upstreams)
    artifacts.warnings = warnings
    artifacts.schedule, artifacts.schedule_cost = schedule, costs
    return artifacts


def halving_plan(defn: SweepDefinition, config: NexaConfig, configurations: int) -> Tuple["search.Schedule", "ScheduleCost"]:
    """The schedule of a sweep with ``[search]`` over its ``configurations``, and its cost."""
    from ..cost.schedule import schedule_cost  # lazy: see the imports
    from . import search

    spec = defn.search
    assert spec is not None
    schedule = search.plan(configurations, spec.budget.param, spec.metric, spec.mode, spec.eta, spec.budget.min, spec.budget.max)
    if schedule.task_count > MAX_TASKS:
        rungs = len(schedule.rungs)
        message = f"{configurations:,} configurations x {rungs} rungs: more than {MAX_TASKS:,} tasks is not a sweep nexa plans"
        raise ConfigError(message, str(defn.path or "sweep"), "search.budget")
    full = estimate(defn.resources, configurations, load_prices(config), config.cost, where=config.where)
    return schedule, schedule_cost(full, schedule)


#: What a task's script looks like in its command (``train.py`` in ``python train.py``).
SCRIPT_SUFFIXES = (".py", ".sh", ".bash", ".jl", ".r", ".pl", ".rb", ".lua", ".js")


def script_path(command: List[str]) -> Optional[str]:
    """The file a command runs: its first word with a script suffix (``python -u train.py``,
    ``torchrun --nproc_per_node 2 train.py``), else the program itself when it is a path
    (``./run``); None for ``python -m module`` and ``-c`` code."""
    for word in command:
        if word in ("-m", "-c"):
            return None
        if not word.startswith("-") and word.lower().endswith(SCRIPT_SUFFIXES):
            return word
    return command[0] if command and "/" in command[0] else None


def missing_script(command: List[str], workdir: Path) -> Optional[str]:
    """A warning when the command's script is not there from the tasks' working directory
    (from ``src/``, ``python train.py`` fails in every task), else None."""
    word = script_path(command)
    if word is None:
        return None
    path = Path(os.path.expanduser(word))
    if (path if path.is_absolute() else workdir / path).exists():
        return None
    return f"{word} not found in {workdir} (the tasks' working directory, the project root): the tasks will fail to start"


def _plan_in_memory(
    defn: SweepDefinition, config: NexaConfig, tasks: List[Task], out: Optional[Path], cost: Estimate, schedule: Optional["search.Schedule"]
) -> SweepArtifacts:
    """A dry run's plan: where the run folder would be, checked as a real plan would be
    (the folders can be made), with nothing created."""
    if out is None:
        problem = cannot_make(config.runs_dir)
        if problem:
            raise ConfigError(f"cannot make a run folder in {config.runs_dir}: {problem}", config.where, "cluster.runs_dir")
        run_dir = config.runs_dir / runs.new_run_id(defn.name)
    else:
        problem = cannot_make(Path(out))
        if problem:
            raise ConfigError(f"--out: cannot make the run folder {out}: {problem}")
        run_dir = Path(out).resolve()
    if config.cluster.log_dir:
        log_dir = Path(config.cluster.log_dir).expanduser().resolve()
        problem = cannot_make(log_dir)
        if problem:
            raise ConfigError(f"cannot make the log folder {log_dir}: {problem}", config.where, "cluster.log_dir")
    scripts = [run_dir / f"{defn.name}.sbatch"]
    if schedule is not None:
        scripts.append(run_dir / f"{defn.name}.promote.sbatch")
    return SweepArtifacts(defn.name, run_dir.name, run_dir, run_dir / runs.SPEC, scripts, tasks, cost=cost, written=False)


def cannot_make(path: Path) -> Optional[str]:
    """Why ``mkdir -p path`` would fail (the system's words), or None; creates nothing."""
    path = Path(path).absolute()
    if path.exists():
        return None if path.is_dir() else os.strerror(errno.EEXIST)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return os.strerror(errno.ENOTDIR)
            if not os.access(str(parent), os.W_OK | os.X_OK):
                return os.strerror(errno.EACCES)
            return None
    return None


def _spec_text(defn: SweepDefinition, tasks: List[Task], run_dir: Path, workdir: Path, schedule: Optional["search.Schedule"] = None) -> str:
    """``spec.json``'s exact content for this plan in ``run_dir``, its tasks run in ``workdir``
    (a halving sweep's with its schedule)."""
    plan = schedule.as_json() if schedule is not None else None
    doc = runs.spec_document(defn.name, defn.campaign, defn.command, workdir, run_dir, tasks, plan)
    return json.dumps(doc, ensure_ascii=False) + "\n"


def _holds_this_plan(run_dir: Path, text: Optional[str]) -> bool:
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
    if text is not None and old == text.encode("utf-8"):
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
    defn: SweepDefinition,
    config: NexaConfig,
    tasks: List[Task],
    run_dir: Path,
    cost: Estimate,
    workdir: Path,
    upstreams: Sequence[pipeline.Upstream],
    reuse: bool = False,
    schedule: Optional["search.Schedule"] = None,
) -> SweepArtifacts:
    """Write the plan into ``run_dir``, its tasks running in ``workdir``; with ``reuse``
    (the folder holds this very spec) the spec is kept as it is and the index rewritten only
    when it does not match it. A halving sweep gets ``rungs/``, ``trials/`` and its
    promotion script."""
    log_dir = log_dir_of(config, run_dir)
    try:
        log_dir.mkdir(parents=True, exist_ok=True, mode=runs.RUN_DIR_MODE)
    except OSError as exc:
        raise ConfigError(f"cannot make the log folder {log_dir}: {exc.strerror}", config.where, "cluster.log_dir") from None
    (run_dir / runs.TASKS).mkdir(exist_ok=True, mode=runs.RUN_DIR_MODE)
    (run_dir / runs.METRICS).mkdir(exist_ok=True, mode=runs.RUN_DIR_MODE)  # $NEXA_METRICS_FILE of every task: made once, here
    spec_path = run_dir / runs.SPEC
    if not reuse:
        atomic_write_text(spec_path, _spec_text(defn, tasks, run_dir, workdir, schedule))
    digest = worker.spec_digest(str(spec_path))
    argvs = [t.argv for t in tasks]
    if not reuse or worker.verify_index(str(spec_path)) is not None:
        # The worker's fast path: one task's argv in a few reads, no json import on the node.
        index = worker.index_bytes(str(spec_path), str(workdir), str(run_dir), argvs, digest)
        atomic_write_bytes(run_dir / worker.INDEX_NAME, index)
    if not reuse:  # a reused plan keeps its own (without one, an older nexa's, its tasks start the worker)
        atomic_write_bytes(run_dir / worker.NUL_NAME, worker.nul_bytes(digest, argvs))  # the array script's own lookup
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
        # a halving task's upstream task (corr) is its trial's: rung 0 is what waited on it
        upstream=pipeline.env_lines(upstreams, f'"$((index % {schedule.n}))"' if schedule else '"$index"'),
        env_file=str(run_dir / ENV_FILE) if defn.env else "",
        trials=schedule.n if schedule else None,
        spec_digest=digest,
    )
    script_path = run_dir / f"{defn.name}.sbatch"
    scripts = {script_path: script}
    if schedule is not None and defn.search is not None:
        (run_dir / runs.RUNGS).mkdir(exist_ok=True, mode=runs.RUN_DIR_MODE)
        (run_dir / runs.TRIALS).mkdir(exist_ok=True, mode=runs.RUN_DIR_MODE)
        promote = render_promote_script(
            name=defn.name,
            res=defn.resources,
            cluster=config.cluster,
            partition=defn.search.promote_partition,
            run_dir=str(run_dir),
            worker_path=worker_path(config),
            python=config.cluster.python,
        )
        scripts[run_dir / f"{defn.name}.promote.sbatch"] = promote
    env_values = envfile.select_prefixed(defn.env, os.environ)
    if reuse and (run_dir / runs.MANIFEST).exists():  # submitted: its script is what ran
        for path, text in scripts.items():
            try:
                same = path.read_text(encoding="utf-8") == text
            except (OSError, ValueError):
                same = False
            if not same:
                raise ConfigError(f"--out {run_dir}: already submitted with another sbatch script ({path.name}): choose a new folder")
    else:
        if defn.env:  # before the script that sources it
            header = "The sweep's `env` variables, with their values when it was planned (sourced by every task)."
            atomic_write_text(run_dir / ENV_FILE, envfile.env_file(env_values, header), mode=envfile.MODE)
        for path, text in scripts.items():
            atomic_write_text(path, text, mode=0o755)
    artifacts = SweepArtifacts(defn.name, run_dir.name, run_dir, spec_path, list(scripts), tasks, cost=cost)
    artifacts.env_names = list(env_values)
    return artifacts


def log_dir_of(config: NexaConfig, run_dir: Path) -> Path:
    """Where the run's Slurm logs go: ``[cluster] log_dir``, else ``<run>/logs``."""
    return Path(config.cluster.log_dir).expanduser().resolve() if config.cluster.log_dir else run_dir / runs.LOGS


def launcher_prefix(defn: SweepDefinition) -> List[str]:
    """``launcher = "torchrun"``: each task runs under a single-node torchrun (``--standalone``,
    so tasks sharing a node each get their own free port); ``python train.py`` stays word for
    word (``--no_python``) and a bare ``train.py`` is run by torchrun's Python."""
    if defn.launcher.kind != "torchrun":
        return []
    from ..tools import torchrun  # lazy: only torchrun sweeps need it (a plan's start-up counts)

    nproc = defn.launcher.nproc_per_node or max(1, defn.resources.gpus_per_node)
    return torchrun.prefix(defn.command, nproc_per_node=nproc)
