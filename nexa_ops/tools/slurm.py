"""sbatch, scontrol, squeue, scancel: the few Slurm calls nexa needs."""

import re
from typing import Dict, List, Optional, Sequence

from .. import proc
from ..errors import ToolError

HINT = "install the Slurm client or run with --local"


def _explain(code: int, stderr: str) -> str:
    for line in reversed(stderr.strip().splitlines()):
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return ""


def sbatch(script: str, *, options: Sequence[str] = (), args: Sequence[str] = (), dry_run: bool = False) -> str:
    """Submit ``script`` with ``sbatch --parsable``; return the job id ('DRYRUN' when dry)."""
    argv = ["sbatch", "--parsable", *options, script, *args]
    result = proc.run(argv, dry_run=dry_run, hint=HINT, explain=_explain)
    if dry_run:
        return "DRYRUN"
    out = (result.stdout or "").strip().splitlines()
    if not out:
        raise ToolError("sbatch", argv, 0, result.stderr or "", "no job id printed")
    return out[-1].split(";", 1)[0].strip()


def show_config() -> Dict[str, str]:
    """``scontrol show config`` as a dict."""
    out = proc.run(["scontrol", "show", "config"], hint=HINT).stdout or ""
    conf = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            conf[key.strip()] = value.strip()
    return conf


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices must stay below it)."""
    value = show_config().get("MaxArraySize", "1001")
    match = re.match(r"\d+", value)
    return int(match.group()) if match else 1001


def hostnames(nodelist: str) -> List[str]:
    out = proc.run(["scontrol", "show", "hostnames", nodelist], hint=HINT).stdout or ""
    return out.split()


def squeue(job_ids: Sequence[str], fmt: str = "%i|%T|%r|%N") -> List[List[str]]:
    """Rows of ``squeue -h -r`` for these jobs; jobs Slurm has forgotten are just absent."""
    if not job_ids:
        return []
    result = proc.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", fmt], hint=HINT, success_codes=(0, 1))
    return [line.split("|") for line in (result.stdout or "").splitlines() if line.strip()]


def scancel(job_ids: Sequence[str], *, dry_run: bool = False, signal: Optional[str] = None) -> None:
    """Cancel jobs (``123``, ``123_4``); an already finished job is not an error."""
    if job_ids:
        argv = ["scancel"] + ([f"--signal={signal}"] if signal else []) + list(job_ids)
        proc.run(argv, dry_run=dry_run, hint=HINT)


def node_names(partition: Optional[str] = None) -> List[str]:
    """Every node name Slurm knows (of one partition if given), each once, in sinfo order.

    ``sinfo -h -o %N`` prints compressed host lists (``n[1-2]``), one per partition and
    state; ``scontrol show hostnames`` expands them.
    """
    argv = ["sinfo", "-h", "-o", "%N"] + (["-p", partition] if partition else [])
    out = proc.run(argv, hint=HINT, explain=_explain).stdout or ""
    lists = [line.strip() for line in out.splitlines() if line.strip()]
    if not lists:
        return []
    return list(dict.fromkeys(hostnames(",".join(lists))))


def show_job(job_id: str) -> List[Dict[str, str]]:
    """``scontrol -o show job ID``: one dict per job record (each array element, each pending
    range); empty once Slurm has forgotten the job (after MinJobAge)."""
    argv = ["scontrol", "-o", "show", "job", str(job_id)]
    result = proc.run(argv, hint=HINT, explain=_explain, success_codes=(0, 1))
    if result.returncode != 0:
        if "Invalid job id" in (result.stderr or ""):
            return []
        raise ToolError("scontrol", argv, result.returncode, result.stderr or "", _explain(result.returncode, result.stderr or ""))
    return [parse_record(line) for line in (result.stdout or "").splitlines() if line.strip()]


_FIELD_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9/:_.()]*)=")


def parse_record(line: str) -> Dict[str, str]:
    """One ``scontrol -o`` line as a dict; a value runs up to the next `` Key=``, so values
    with spaces (paths, commands) stay whole."""
    record: Dict[str, str] = {}
    matches = list(_FIELD_RE.finditer(line))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        record[match.group(1)] = line[match.end() : end].strip()
    return record
