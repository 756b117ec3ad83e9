"""Submit a planned sweep as one Slurm job array (offset chunks past MaxArraySize), or run
it here; and ``launch_slurm_sweep``, the Python API over plan + submit.

The run manifest and the cost manifest are rewritten after every accepted chunk, so a
refusal half-way still leaves a true record of what was submitted.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

from .. import pipeline, runs
from ..config import NexaConfig, SweepDefinition, load_config, load_sweep
from ..cost.estimate import check_max_cost
from ..errors import ConfigError, ToolError
from ..tools import slurm
from .plan import Chunk, SweepArtifacts, plan_sweep

if TYPE_CHECKING:  # .local (threads, subprocess, nvidia-smi) is imported by local runs only
    from .local import Progress

# Imported where a run is submitted or started, not at the top: a plan (the default, and
# every --dry-run) writes no manifest, and the cost book (with actual costs), provenance and
# git are a tenth of a plan's start-up: cost.book, provenance.


def submit_sweep(
    artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig, *, dry_run: bool = False, max_cost: Optional[float] = None
) -> SweepArtifacts:
    """Submit as one array, or as offset chunks when larger than the cluster's MaxArraySize.

    With ``--after`` runs (``artifacts.upstreams``) each submission waits on them through a
    Slurm dependency (``pipeline.plan``: for ``corr`` the chunks are cut where the upstream's
    are). ``max_cost`` (default ``[cost] max_cost``) is checked before any Slurm call:
    ``Refused`` submits nothing. A halving sweep submits its rung 0 (waiting on the upstreams
    as any sweep would) and its first promotion job (``halving.submit_halving``).
    """
    assert artifacts.cost is not None, "plan_sweep estimates every plan"
    if not artifacts.written and not dry_run:
        raise ConfigError(f"{artifacts.run_dir}: a dry run's plan was never written: plan it again without --dry-run")
    if not dry_run:
        _not_submitted(artifacts)
    check_max_cost(artifacts.cost, max_cost if max_cost is not None else config.cost.max_cost)
    if artifacts.schedule is not None:
        # Imported here, not at the top: only a halving sweep needs it, and its modules are a
        # tenth of the start-up of every other submission.
        from .halving import check_promotion, submit_halving
    if artifacts.schedule is not None and not dry_run:
        check_promotion(artifacts)  # a promotion job Slurm would refuse stops it all here, before anything is made
    if not dry_run:
        from ..cost.book import check_writable

        check_writable(config.runs_dir, artifacts.run_id)  # before any job exists
    if artifacts.schedule is not None:
        limit = slurm.array_limit(config.cluster.max_array_size, dry_run)
        manifest = _manifest(artifacts, defn, config, backend="slurm", dry_run=dry_run)
        return submit_halving(artifacts, defn, config, manifest, limit, dry_run=dry_run)
    count = len(artifacts.tasks)
    # Most sweeps fit in one array: without [cluster] max_array_size (and --after) it is sent
    # as one, and MaxArraySize asked of Slurm (scontrol show config: one more process and
    # RPC per submission) only when Slurm refuses it. A dry run asks, to show the chunks.
    optimistic = not config.cluster.max_array_size and not dry_run and not artifacts.upstreams
    limit = max(count, 1) if optimistic else slurm.array_limit(config.cluster.max_array_size, dry_run)
    manifest = _manifest(artifacts, defn, config, backend="slurm", dry_run=dry_run)
    try:
        _submit_chunks(artifacts, defn, config, manifest, limit, dry_run)
    except ToolError as exc:
        if not optimistic or artifacts.job_ids or "Invalid job array specification" not in exc.stderr:
            raise
        limit = slurm.array_limit(None)
        if limit >= count:
            raise  # the array fits: Slurm refused it for another reason
        _submit_chunks(artifacts, defn, config, manifest, limit, dry_run)
    artifacts.submitted = not dry_run
    return artifacts


def _submit_chunks(
    artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig, manifest: Dict[str, Any], limit: int, dry_run: bool
) -> None:
    """``sbatch`` the sweep in chunks of at most ``limit`` tasks (``pipeline.plan``), each
    recorded in the run and cost manifests as soon as Slurm took it: a refusal half-way
    still leaves a true record."""
    submissions = pipeline.plan(len(artifacts.tasks), artifacts.upstreams, limit)
    throttle = defn.resources.max_parallel
    artifacts.chunks = []
    script = str(artifacts.script_paths[0])
    for sub in submissions:
        part = Chunk(sub.offset, len(sub.indices), array=None if sub.regular else slurm.list_spec(sub.indices), dependency=sub.dependency)
        artifacts.chunks.append(part)
        options = []
        if len(submissions) > 1 or not sub.regular:
            spec = slurm.array_spec(part.count, throttle) if sub.regular else slurm.list_spec(sub.indices, throttle)
            options.append(f"--array={spec}")
        options += slurm.dependency_options(sub.parts)
        if dry_run:
            artifacts.commands.append(slurm.sbatch_argv(script, options, [str(part.offset)]))
            slurm.sbatch(script, options=options, args=[str(part.offset)], dry_run=True)  # prints it
            continue
        part.job_id = slurm.sbatch(script, options=options, args=[str(part.offset)])
        artifacts.job_ids.append(part.job_id)
        manifest["chunks"] = [c.manifest() for c in artifacts.chunks if c.job_id]
        manifest["job_ids"] = list(artifacts.job_ids)
        runs.write_manifest(artifacts.run_dir, manifest)
        _book(config, artifacts, defn, backend="slurm")


def run_sweep_locally(
    artifacts: SweepArtifacts,
    defn: SweepDefinition,
    config: NexaConfig,
    *,
    gpus: Optional[List[str]] = None,
    progress: Optional[Callable[["Progress"], None]] = None,
) -> SweepArtifacts:
    """Run every task here through the same worker (see ``local.run_tasks_here``); a run
    stopped by a signal sets ``artifacts.stopped_by``. ``gpus``: the ``CUDA_VISIBLE_DEVICES``
    slices (``[]``: none; default: ``gpu_slots`` for the sweep's ``gpus_per_node``). A
    halving sweep runs its rungs one after another (``halving.run_halving_locally``)."""
    from .local import gpu_slots, run_tasks_here  # lazy: a submission never runs a task here
    slots = gpus
    if slots is None:
        slots, warning = gpu_slots(defn.resources.gpus_per_node)
        if warning:
            artifacts.warnings.append(warning)
    _not_submitted(artifacts)
    from ..cost.book import check_writable

    check_writable(config.runs_dir, artifacts.run_id)
    manifest = _manifest(artifacts, defn, config, backend="local")
    manifest.update(max_parallel=defn.resources.max_parallel, gpus_per_task=defn.resources.gpus_per_node)

    def book() -> Optional[Path]:
        return _book(config, artifacts, defn, backend="local", status="running")

    if artifacts.schedule is not None:
        from .halving import run_halving_locally  # lazy, as in submit_sweep: halving sweeps only

        return run_halving_locally(artifacts, defn, config, manifest, slots, book, progress)
    outcome = run_tasks_here(
        artifacts.run_dir,
        manifest,
        range(len(artifacts.tasks)),
        defn.resources.max_parallel,
        slots,
        config,
        book,
        progress,
    )
    artifacts.local_results, artifacts.stopped_by = outcome.results, outcome.stopped_by
    return artifacts


def _manifest(artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig, backend: str, dry_run: bool = False) -> dict:
    """The run's manifest: the submission, its upstream runs, its snapshot and provenance
    (whose ``code.diff`` is written now, unless this is a dry run)."""
    from .. import provenance

    info, diff = provenance.collect(config.root)
    if not dry_run:
        provenance.save(artifacts.run_dir, info, diff)
    return runs.new_manifest(
        artifacts.run_id,
        defn.name,
        backend,
        campaign=defn.campaign,
        spec=str(artifacts.spec_path),
        script=str(artifacts.script_paths[0]),
        tasks=len(artifacts.tasks),
        job_ids=[],
        chunks=[],
        after=pipeline.record(artifacts.upstreams),
        snapshot=artifacts.snapshot.to_json() if artifacts.snapshot else None,
        provenance=info,
    )


def _not_submitted(artifacts: SweepArtifacts) -> None:
    """A reused run folder (``--out`` holding this very plan) that was already submitted or
    run is not started again: its manifest would lose the first jobs."""
    if (artifacts.run_dir / runs.MANIFEST).exists():
        raise ConfigError(
            f"--out {artifacts.run_dir}: already submitted or run (manifest.json); see `nexa status` and `nexa resubmit`, "
            "or plan into a new folder"
        )


def _book(config: NexaConfig, artifacts: SweepArtifacts, defn: SweepDefinition, *, backend: str, status: str = "submitted") -> Path:
    """The sweep's cost manifest, written at each accepted chunk."""
    assert artifacts.cost is not None, "plan_sweep estimates every plan"
    from ..cost.book import manifest_document, write_cost_manifest

    doc = manifest_document(
        artifacts.cost,
        run_id=artifacts.run_id,
        name=defn.name,
        kind="sweep",
        campaign=defn.campaign,
        run_dir=artifacts.run_dir,
        job_ids=artifacts.job_ids,
        chunks=[{k: v for k, v in c.manifest().items() if k != "dependency"} for c in artifacts.chunks if c.job_id],
        backend=backend,
        status=status,
    )
    return write_cost_manifest(config.runs_dir, doc)


def launch_slurm_sweep(
    path_or_definition: Union[str, Path, SweepDefinition],
    *,
    submit: bool = False,
    local: bool = False,
    out: Optional[Union[str, Path]] = None,
    max_cost: Optional[float] = None,
    config: Optional[Union[NexaConfig, str, Path]] = None,
    dry_run: bool = False,
    after: Union[None, str, Sequence[Any]] = None,
    snapshot: Optional[bool] = None,
) -> SweepArtifacts:
    """Plan a sweep and, with ``submit``, send it to Slurm as one job array. A sweep file
    with ``[search]`` is a halving sweep: rung 0 and its promotion job are submitted, and
    ``artifacts.schedule`` holds the rungs (``docs/halving.md``).

    Args:
        path_or_definition: a sweep TOML file or an already parsed ``SweepDefinition``.
        submit: submit with ``sbatch --parsable`` (chunked above MaxArraySize).
        local: run the tasks on this machine instead, through the same worker.
        out: the run folder (default: a new folder under the runs directory).
        max_cost: refuse to submit when the estimate exceeds this many USD.
        config: a ``NexaConfig`` or the path of ``nexa.toml`` (default: found as the CLI does).
        dry_run: plan in memory (write nothing) and print the sbatch commands instead of running
            them; with ``local``, run nothing.
        after: runs to wait for, ``"RUN[:ok|any|corr]"`` each (a string or a list; RUN is a
            run id, a run folder or the start of a run id); needs ``submit``. See docs/pipelines.md.
        snapshot: run the tasks from a copy of the project made now (default: ``[project]
            snapshot`` of nexa.toml).

    Returns:
        ``SweepArtifacts`` with the run folder, spec and script paths, job ids and results;
        for a halving sweep also ``schedule``, ``schedule_cost``, ``promote_job_ids`` and
        (``local``) ``decisions``.

    Raises:
        ConfigError: the sweep or config is invalid; an ``after`` run that does not exist, or
        a ``corr`` one with another task count. ToolError: Slurm refused the job.
        Refused: the estimate is above ``max_cost``; an ``ok``/``corr`` upstream has failed tasks.
    """
    cfg = config if isinstance(config, NexaConfig) else load_config(config)
    defn = path_or_definition if isinstance(path_or_definition, SweepDefinition) else load_sweep(path_or_definition)
    if submit and local:
        raise ConfigError("choose one of --submit and --local")
    afters = pipeline.parse_afters(after)
    if afters and not submit:
        raise ConfigError("--after goes with --submit: only Slurm can hold tasks until another run ends")
    upstreams = pipeline.gather(afters, cfg)
    artifacts = plan_sweep(
        defn, cfg, Path(out) if out is not None else None, upstreams=upstreams, snapshot=cfg.snapshot_wanted(snapshot), dry_run=dry_run
    )
    if submit:
        submit_sweep(artifacts, defn, cfg, dry_run=dry_run, max_cost=max_cost)
    elif local and not dry_run:
        run_sweep_locally(artifacts, defn, cfg)
    return artifacts
