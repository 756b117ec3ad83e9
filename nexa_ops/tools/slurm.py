"""sbatch, scontrol, squeue, scancel: the few Slurm calls nexa needs."""

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .. import proc
from ..errors import NexaError, ToolError

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


# --- sacct usage figures, for `nexa efficiency` (appended: the coordinator reorganises above) ---

USAGE_FIELDS = "JobID,JobIDRaw,State,ElapsedRaw,TotalCPU,AllocCPUS,MaxRSS,ReqMem,TimelimitRaw,NNodes,AllocTRES,Start,End"
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)([nc]?)\Z")


@dataclass
class UsageRow:
    """One line of ``sacct -n -P -o USAGE_FIELDS``: an array element or job (``57_3``), or one of
    its steps (``57_3.batch``, ``57_3.0``). None where sacct printed nothing usable."""

    job_id: str  # as sacct names it: 57_3, 57_3.batch, 58
    job_id_raw: str  # the job's own id (SLURM_JOB_ID of an array task): 58, 58.batch
    state: str
    elapsed: Optional[int]  # seconds
    total_cpu: Optional[float]  # seconds of CPU time (user + system)
    alloc_cpus: Optional[int]
    max_rss: Optional[int]  # bytes; steps only
    req_mem: Optional[int]  # bytes requested by the whole job (per-node/per-CPU forms multiplied out)
    timelimit: Optional[int]  # seconds; None for steps and UNLIMITED
    nnodes: Optional[int]
    gpus: Optional[int]  # gres/gpu in AllocTRES
    start: Optional[str]  # sacct's local time, 2024-05-01T12:00:03
    end: Optional[str]

    @property
    def is_step(self) -> bool:
        return "." in self.job_id


def parse_cpu_time(text: str) -> Optional[float]:
    """sacct's TotalCPU: ``MM:SS.mmm``, ``HH:MM:SS``, ``D-HH:MM:SS`` -> seconds."""
    text = text.strip()
    if not text:
        return None
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        if not head.isdigit():
            return None
        days = int(head)
    parts = text.split(":")
    if not 2 <= len(parts) <= 3:
        return None
    try:
        seconds = float(parts[-1])
        numbers = [int(p) for p in parts[:-1]]
    except ValueError:
        return None
    minutes = numbers[-1]
    hours = numbers[0] if len(numbers) == 2 else 0
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def parse_size(text: str) -> Optional[int]:
    """sacct's MaxRSS (``1536K``, ``2.50M``, ``0``) -> bytes; None when empty."""
    match = _SIZE_RE.match(text.strip())
    if not match or match.group(3):
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_req_mem(text: str, cpus: Optional[int], nodes: Optional[int]) -> Optional[int]:
    """sacct's ReqMem -> bytes for the whole job. Slurm >= 21.08 prints the job's total
    (``4000M``); older ones a per-node (``4000Mn``) or per-CPU (``500Mc``) amount."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        return None
    amount = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)] * (1 if match.group(2) else 1024**2))  # bare number: MiB
    per = match.group(3)
    if per == "n":
        return amount * nodes if nodes else None
    if per == "c":
        return amount * cpus if cpus else None
    return amount


def _int(text: str) -> Optional[int]:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _when(text: str) -> Optional[str]:
    text = text.strip()
    return text if text and text[0].isdigit() else None  # not Unknown / None


def parse_sacct_usage(text: str) -> List[UsageRow]:
    """Rows of ``sacct -n -P -o USAGE_FIELDS``; lines of another shape are skipped."""
    rows = []
    width = len(USAGE_FIELDS.split(","))
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) != width or not cells[0]:
            continue
        job_id, raw, state, elapsed, cpu, cpus, rss, req_mem, limit, nodes, tres, start, end = cells
        alloc_cpus, nnodes = _int(cpus), _int(nodes)
        minutes = _int(limit)
        gpus = re.search(r"(?:^|,)gres/gpu=(\d+)", tres)
        rows.append(
            UsageRow(
                job_id=job_id,
                job_id_raw=raw,
                state=state.split()[0] if state.strip() else "",
                elapsed=_int(elapsed),
                total_cpu=parse_cpu_time(cpu),
                alloc_cpus=alloc_cpus,
                max_rss=parse_size(rss),
                req_mem=parse_req_mem(req_mem, alloc_cpus, nnodes),
                timelimit=minutes * 60 if minutes is not None else None,
                nnodes=nnodes,
                gpus=int(gpus.group(1)) if gpus else None,
                start=_when(start),
                end=_when(end),
            )
        )
    return rows


def sacct_usage_argv(job_ids: Sequence[str]) -> List[str]:
    """Every element of the jobs and their steps (no -X); the last attempt of a requeued one."""
    return ["sacct", "-n", "-P", "-o", USAGE_FIELDS, "-j", ",".join(job_ids)]


def sacct_usage(job_ids: Sequence[str], *, timeout: float = 60) -> Tuple[Optional[List[UsageRow]], str]:
    """``(rows, "")``, or ``(None, why)`` when the cluster cannot say: sacct missing, or "Slurm
    accounting storage is disabled" (no slurmdbd), or another failure in sacct's own words."""
    if not job_ids:
        return [], ""
    try:
        result = proc.run(sacct_usage_argv(job_ids), hint=HINT, timeout=timeout, success_codes=range(0, 256))
    except ToolError as exc:
        return None, str(exc).splitlines()[0]
    except NexaError as exc:  # sacct not on PATH
        return None, str(exc)
    if result.returncode != 0:
        lines = (result.stderr or "").strip().splitlines()
        why = _explain(result.returncode, result.stderr or "") or (lines[-1] if lines else "no output")
        return None, f"sacct exited with {result.returncode}: {why}"
    return parse_sacct_usage(result.stdout or ""), ""
