"""Submit a planned sweep as one Slurm job array (offset chunks past MaxArraySize), or run
it here; and ``launch_slurm_sweep``, the Python API over plan + submit.

The run manifest and the cost manifest are rewritten after every accepted chunk, so a
refusal half-way still leaves a true record of what was submitted.
"""

from pathlib import Path
from typing import List, Optional, Union

from .. import runs
from ..config import NexaConfig, SweepDefinition, load_config, load_sweep
from ..cost.book import manifest_document, write_cost_manifest
from ..cost.estimate import check_max_cost
from ..cost.reconcile import reconcile_manifest
from ..errors import ConfigError, ToolError
from ..tools import slurm
from .local import run_local
from .plan import Chunk, SweepArtifacts, plan_sweep


def chunk(count: int, max_array_size: int) -> List[Chunk]:
    """Split ``count`` tasks so every array index stays below ``max_array_size``."""
    size = max(1, max_array_size)
    return [Chunk(offset, min(size, count - offset)) for offset in range(0, count, size)]


def submit_sweep(
    artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig, *, dry_run: bool = False, max_cost: Optional[float] = None
) -> SweepArtifacts:
    """Submit as one array, or as offset chunks when larger than the cluster's MaxArraySize.

    ``max_cost`` (default ``[cost] max_cost``) is checked before any Slurm call: ``Refused``
    submits nothing.
    """
    assert artifacts.cost is not None, "plan_sweep estimates every plan"
    check_max_cost(artifacts.cost, max_cost if max_cost is not None else config.cost.max_cost)
    count = len(artifacts.tasks)
    limit = config.cluster.max_array_size
    if limit is None and dry_run:
        limit = slurm.array_limit(None, dry_run)  # a read-only query: show the chunks a submission makes
    manifest = _manifest(artifacts, defn, backend="slurm")
    if limit is None:
        # Most sweeps fit in one array: submit it as planned, and ask Slurm for MaxArraySize
        # (scontrol show config: one more process and RPC) only when it refuses the array.
        artifacts.chunks = [Chunk(0, count)]
        try:
            _submit_chunk(artifacts, defn, config, manifest, artifacts.chunks[0], dry_run)
        except ToolError as exc:
            if "Invalid job array specification" not in exc.stderr or count == 1:
                raise
            artifacts.chunks = chunk(count, slurm.array_limit(None))
            if len(artifacts.chunks) == 1:
                raise  # the array fits: Slurm refused it for another reason
    else:
        artifacts.chunks = chunk(count, limit)
    for part in artifacts.chunks:
        if part.job_id is None:
            _submit_chunk(artifacts, defn, config, manifest, part, dry_run)
    artifacts.submitted = not dry_run
    return artifacts


def _submit_chunk(artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig, manifest: dict, part: Chunk, dry_run: bool) -> None:
    """``sbatch`` one chunk (``--array`` only when there are several), then record it in the
    run and cost manifests at once: a refusal later still leaves a true record."""
    options = []
    if len(artifacts.chunks) > 1:
        options.append(f"--array={slurm.array_spec(part.count, defn.resources.max_parallel)}")
    part.job_id = slurm.sbatch(str(artifacts.script_paths[0]), options=options, args=[str(part.offset)], dry_run=dry_run)
    artifacts.job_ids.append(part.job_id)
    if not dry_run:
        manifest["chunks"] = [vars(c) for c in artifacts.chunks if c.job_id]
        manifest["job_ids"] = list(artifacts.job_ids)
        runs.write_manifest(artifacts.run_dir, manifest)
        _book(config, artifacts, defn, backend="slurm")


def run_sweep_locally(artifacts: SweepArtifacts, defn: SweepDefinition, config: NexaConfig) -> SweepArtifacts:
    """Run every task here through the same worker, then reconcile the run's cost."""
    manifest = _manifest(artifacts, defn, backend="local")
    runs.write_manifest(artifacts.run_dir, manifest)
    cost_manifest = _book(config, artifacts, defn, backend="local", status="running")
    artifacts.local_results = run_local(artifacts.spec_path, artifacts.run_dir, len(artifacts.tasks), defn.resources.max_parallel)
    manifest["exit_codes"] = {str(r.index): r.exit_code for r in artifacts.local_results}
    runs.write_manifest(artifacts.run_dir, manifest)
    reconcile_manifest(cost_manifest, config.runs_dir)
    return artifacts


def _manifest(artifacts: SweepArtifacts, defn: SweepDefinition, backend: str) -> dict:
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
    )


def _book(config: NexaConfig, artifacts: SweepArtifacts, defn: SweepDefinition, *, backend: str, status: str = "submitted") -> Path:
    """The sweep's cost manifest, written at each accepted chunk."""
    assert artifacts.cost is not None, "plan_sweep estimates every plan"
    doc = manifest_document(
        artifacts.cost,
        run_id=artifacts.run_id,
        name=defn.name,
        kind="sweep",
        campaign=defn.campaign,
        run_dir=artifacts.run_dir,
        job_ids=artifacts.job_ids,
        chunks=[{"offset": c.offset, "count": c.count, "job_id": c.job_id} for c in artifacts.chunks if c.job_id],
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
