"""``sacct``: per-task elapsed time and GPUs from Slurm accounting, when the cluster has it."""

from typing import List, Optional, Sequence

from .. import proc
from ..errors import ToolError, ToolMissing
from ..plan.cost import SacctRow, parse_sacct

FIELDS = "JobID,State,ElapsedRaw,ExitCode,AllocTRES"


def sacct(job_ids: Sequence[str], *, dry_run: bool = False) -> Optional[List[SacctRow]]:
    """Rows for ``job_ids`` (array elements expanded), or None when there is no accounting:
    ``sacct`` missing, or "Slurm accounting storage is disabled" (exit 1, no slurmdbd)."""
    if not job_ids:
        return []
    # -D: every attempt of a requeued job, not only its last one (billed; the last one wins)
    argv = ["sacct", "-n", "-P", "-X", "-D", "-o", FIELDS, "-j", ",".join(job_ids)]
    try:
        result = proc.run(argv, dry_run=dry_run, timeout=60)
    except (ToolMissing, ToolError):
        return None
    return parse_sacct(result.stdout or "")
