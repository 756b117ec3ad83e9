"""Plan, write and submit (or run locally) a sweep: the library behind ``nexa sweep``."""

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from . import runs, worker
from .config import NexaConfig, SweepDefinition, load_config, load_sweep
from .errors import ConfigError
from .fs import atomic_write_bytes, atomic_write_text
from .plan import sbatch as plan_sbatch
from .plan.sweep import Task, expand
from .resources import package_root

SPEC_SCHEMA = 1


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
    cost: Optional[Any] = None
    submitted: bool = False

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
    from .pyz import running_pyz

    pyz = running_pyz()
    if pyz is not None:
        return f"{pyz}/site-packages"
    return str(package_root())


def spec_document(defn: SweepDefinition, tasks: List[Task], run_dir: Path, workdir: Path) -> Dict[str, Any]:
    return {
        "schema": SPEC_SCHEMA,
        "name": defn.name,
        "campaign": defn.campaign,
        "command": defn.command,
        "workdir": str(workdir),
        "run_dir": str(run_dir),
        "count": len(tasks),
        "tasks": [{"index": t.index, "params": t.params, "argv": t.argv} for t in tasks],
    }


def index_bytes(spec_path: str, workdir: str, run_dir: str, argvs: List[List[str]]) -> bytes:
    """The ``spec.argv`` content (format in ``worker``) for ``argvs``, tied to ``spec_path``'s
    current size and mtime so that a later edit of the spec makes it stale."""
    st = os.stat(spec_path)
    records = [b"\0".join(os.fsencode(a) for a in [workdir, run_dir]) + b"\0"]
    records += [("\0".join(argv) + "\0").encode("utf-8", "surrogateescape") for argv in argvs]
    offsets, total = [], 0
    for record in records:
        offsets.append(total)
        total += len(record)
    offsets.append(total)
    header = b"%s %d %d %d" % (worker.INDEX_MAGIC, len(argvs), st.st_size, st.st_mtime_ns)
    table = b"".join(b"%015d\n" % o for o in offsets)
    return header.ljust(worker.HEADER - 1) + b"\n" + table + b"".join(records)


def chunk(count: int, max_array_size: int) -> List[Chunk]:
    """Split ``count`` tasks so every array index stays below ``max_array_size``."""
    size = max(1, max_array_size)
    return [Chunk(offset, min(size, count - offset)) for offset in range(0, count, size)]


def plan_sweep(defn: SweepDefinition, config: NexaConfig, out: Optional[Path] = None) -> SweepArtifacts:
    """Expand the sweep and write ``spec.json`` and the sbatch script into the run folder.

    Everything that can be checked is checked before the run folder exists (the cost
    settings included); should writing still fail, a run folder made here is removed again,
    so a failed plan leaves nothing behind.
    """
    from .costs import estimate_cost

    tasks = expand(defn, _launcher_prefix(defn))
    if not tasks:
        raise ConfigError("every combination is excluded: nothing to run", str(defn.path or "sweep"), "exclude")
    estimate = estimate_cost(defn, config, tasks=len(tasks))
    if out is not None and not str(out).strip():
        raise ConfigError("--out: expected a folder, got ''")
    run_dir, made = _new_run_dir(config, defn.name, out)
    try:
        return _write_plan(defn, config, tasks, run_dir, estimate)
    except BaseException:
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _new_run_dir(config: NexaConfig, name: str, out: Optional[Path]) -> Tuple[Path, Optional[Path]]:
    """The run folder, and the topmost folder this call created (None: it existed)."""
    if out is None:
        made = _first_missing(config.runs_dir)
        try:
            run_dir = runs.create_run_dir(config.runs_dir, name)
        except OSError as exc:
            message = f"cannot make a run folder in {config.runs_dir}: {exc.strerror}"
            raise ConfigError(message, _project(config), "cluster.runs_dir") from None
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


def _project(config: NexaConfig) -> str:
    return str(config.path) if config.path else "nexa.toml (defaults)"


def _write_plan(defn: SweepDefinition, config: NexaConfig, tasks: List[Task], run_dir: Path, estimate: Any) -> SweepArtifacts:
    log_dir = Path(config.cluster.log_dir).expanduser().resolve() if config.cluster.log_dir else run_dir / "logs"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the log folder {log_dir}: {exc.strerror}", _project(config), "cluster.log_dir") from None
    (run_dir / "tasks").mkdir(exist_ok=True)
    (run_dir / "metrics").mkdir(exist_ok=True)  # $NEXA_METRICS_FILE of every task: made once, here
    workdir = config.root
    spec_path = run_dir / runs.SPEC
    text = json.dumps(spec_document(defn, tasks, run_dir, workdir), ensure_ascii=False)
    atomic_write_text(spec_path, text + "\n")
    # The worker's fast path: one task's argv in a few reads, no json import on the node.
    index = index_bytes(str(spec_path), str(workdir), str(run_dir), [t.argv for t in tasks])
    atomic_write_bytes(run_dir / worker.INDEX_NAME, index)
    script = plan_sbatch.render_array_script(
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
    )
    script_path = atomic_write_text(run_dir / f"{defn.name}.sbatch", script, mode=0o755)
    artifacts = SweepArtifacts(defn.name, run_dir.name, run_dir, spec_path, [script_path], tasks)
    artifacts.cost = estimate
    return artifacts


def _launcher_prefix(defn: SweepDefinition) -> List[str]:
    """``launcher = "torchrun"``: each task runs under a single-node torchrun (``--standalone``,
    so tasks sharing a node each get their own free port); ``python train.py`` stays word for
    word (``--no_python``) and a bare ``train.py`` is run by torchrun's Python."""
    if defn.launcher.kind != "torchrun":
        return []
    from .tools import torchrun

    nproc = defn.launcher.nproc_per_node or max(1, defn.resources.gpus_per_node)
    return torchrun.prefix(defn.command, nproc_per_node=nproc)


def array_limit(config: NexaConfig, dry_run: bool = False) -> int:
    """MaxArraySize: ``[cluster] max_array_size``, else Slurm's own, also for a dry run (a
    read-only query), so that it shows the chunks a real submission makes. A dry run where
    Slurm cannot be asked assumes Slurm's default, 1001."""
    from .errors import ToolError, ToolMissing
    from .tools import slurm

    if config.cluster.max_array_size:
        return config.cluster.max_array_size
    try:
        return slurm.max_array_size()
    except (ToolMissing, ToolError):
        if dry_run:
            return 1001
        raise


def submit_sweep(
    artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig, *, dry_run: bool = False, max_cost: Optional[float] = None
) -> SweepArtifacts:
    """Submit as one array, or as offset chunks when larger than the cluster's MaxArraySize.

    The manifest (and the cost manifest) is rewritten after every accepted chunk, so a refusal
    half-way still leaves a true record of what was submitted. ``max_cost`` (default
    ``[cost] max_cost``) is checked before any Slurm call: ``Refused`` submits nothing.
    """
    from . import costs
    from .tools import slurm

    if artifacts.cost is None:
        artifacts.cost = costs.estimate_cost(defn, config, tasks=len(artifacts.tasks))
    costs.check_max_cost(artifacts.cost, max_cost if max_cost is not None else config.cost.max_cost)

    artifacts.chunks = chunk(len(artifacts.tasks), array_limit(config, dry_run))
    script = str(artifacts.script_paths[0])
    manifest = _manifest(artifacts, defn, backend="slurm")
    for part in artifacts.chunks:
        options = []
        if len(artifacts.chunks) > 1:
            options.append(f"--array={plan_sbatch.array_spec(part.count, defn.resources.max_parallel)}")
        part.job_id = slurm.sbatch(script, options=options, args=[str(part.offset)], dry_run=dry_run)
        artifacts.job_ids.append(part.job_id)
        if not dry_run:
            manifest["chunks"] = [vars(c) for c in artifacts.chunks if c.job_id]
            manifest["job_ids"] = list(artifacts.job_ids)
            runs.write_manifest(artifacts.run_dir, manifest)
            costs.record_submission(config, artifacts, defn, backend="slurm")
    artifacts.submitted = not dry_run
    return artifacts


def _manifest(artifacts: SweepArtifacts, defn: SweepDefinition, backend: str) -> Dict[str, Any]:
    return {
        "run_id": artifacts.run_id,
        "name": defn.name,
        "campaign": defn.campaign,
        "backend": backend,
        "user": runs.user(),
        "submitted_at": runs.now_iso(),
        "spec": str(artifacts.spec_path),
        "script": str(artifacts.script_paths[0]),
        "tasks": len(artifacts.tasks),
        "job_ids": [],
        "chunks": [],
    }


def run_sweep_locally(artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig) -> SweepArtifacts:
    from . import costs
    from .local import run_local

    manifest = _manifest(artifacts, defn, backend="local")
    runs.write_manifest(artifacts.run_dir, manifest)
    cost_manifest = costs.record_submission(config, artifacts, defn, backend="local", status="running")
    artifacts.local_results = run_local(artifacts.spec_path, artifacts.run_dir, len(artifacts.tasks), defn.resources.max_parallel)
    manifest["exit_codes"] = {str(r.index): r.exit_code for r in artifacts.local_results}
    runs.write_manifest(artifacts.run_dir, manifest)
    costs.reconcile_manifest(cost_manifest, config.runs_dir)
    return artifacts


def launch_slurm_sweep(
    path_or_definition: Union[str, Path, SweepDefinition],
    *,
    submit: bool = False,
    local: bool = False,
    out: Optional[Union[str, Path]] = None,
    max_cost: Optional[float] = None,
    config: Optional[Union[NexaConfig, str, Path]] = None,
    dry_run: bool = False,
) -> SweepArtifacts:
    """Plan a sweep and, with ``submit``, send it to Slurm as one job array.

    Args:
        path_or_definition: a sweep TOML file or an already parsed ``SweepDefinition``.
        submit: submit with ``sbatch --parsable`` (chunked above MaxArraySize).
        local: run the tasks on this machine instead, through the same worker.
        out: the run folder (default: a new folder under the runs directory).
        max_cost: refuse to submit when the estimate exceeds this many USD.
        config: a ``NexaConfig`` or the path of ``nexa.toml`` (default: found as the CLI does).
        dry_run: print the sbatch commands instead of running them.

    Returns:
        ``SweepArtifacts`` with the run folder, spec and script paths, job ids and results.

    Raises:
        ConfigError: the sweep or config is invalid. ToolError: Slurm refused the job.
        Refused: the estimate is above ``max_cost``.
    """
    cfg = config if isinstance(config, NexaConfig) else load_config(config)
    defn = path_or_definition if isinstance(path_or_definition, SweepDefinition) else load_sweep(path_or_definition)
    if submit and local:
        raise ConfigError("choose one of --submit and --local")
    artifacts = plan_sweep(defn, cfg, Path(out) if out is not None else None)
    if submit:
        submit_sweep(artifacts, defn, cfg, dry_run=dry_run, max_cost=max_cost)
    elif local:
        run_sweep_locally(artifacts, defn, cfg)
    return artifacts
