"""Everything nexa says to Slurm and reads back from it: the one home of Slurm's text.

Two halves. The pure half turns data into Slurm's text and back, and is tested without a
cluster: ``--array`` specs, ``#SBATCH`` directives (quoted the way Slurm's own parser reads
them), ``--output`` patterns, exit codes and durations, and the output of squeue, scontrol
and sacct. The other half runs sbatch, squeue, scontrol, sacct, scancel and sinfo through
``proc``. No other module names a Slurm program (the sbatch templates under ``sbatch/`` aside).
"""

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .. import proc
from ..config import ClusterConfig, Resources, time_to_hours
from ..errors import ToolError, ToolMissing

HINT = "install the Slurm client or run with --local"
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize

# --- array specs --------------------------------------------------------------------------


def array_spec(count: int, max_parallel: Optional[int] = None) -> str:
    """``0-N`` (``0`` for one task), with the ``%P`` throttle when set."""
    text = f"0-{count - 1}" if count > 1 else "0"
    if max_parallel:
        text += f"%{max_parallel}"
    return text


def list_spec(indices: Sequence[int], max_parallel: Optional[int] = None) -> str:
    """``3,7,9`` (runs of 3+ compressed to ``a-b``), with the ``%P`` throttle when set."""
    parts: List[str] = []
    values = sorted(indices)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{values[i]}-{values[j]}")
        else:
            parts.extend(str(v) for v in values[i : j + 1])
        i = j + 1
    text = ",".join(parts)
    if max_parallel:
        text += f"%{max_parallel}"
    return text


def expand_array(spec: str) -> List[int]:
    """``0-3,7,9-13:2%4`` -> indices (the throttle is dropped)."""
    out: List[int] = []
    for part in spec.split("%", 1)[0].split(","):
        part = part.strip()
        if not part:
            continue
        rng, _, step = part.partition(":")
        lo, dash, hi = rng.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (step and not step.isdigit()):
            raise ValueError(f"not an array index spec: {spec!r}")
        out.extend(range(int(lo), int(hi if dash else lo) + 1, int(step or 1)))
    return out


def group_below_limit(indices: Sequence[int], limit: int) -> List[Tuple[int, List[int]]]:
    """Task indices -> ``(offset, array indices)`` submissions, every array index below
    ``limit`` (MaxArraySize caps the index value, not the count). Greedy from the smallest
    index: the fewest submissions."""
    groups: List[Tuple[int, List[int]]] = []
    for index in sorted(set(indices)):
        if groups and index - groups[-1][0] < limit:
            groups[-1][1].append(index - groups[-1][0])
        else:
            groups.append((index, [0]))
    return groups


# --- #SBATCH directives -------------------------------------------------------------------


def directive_value(text: str) -> str:
    """Slurm reads ``#SBATCH`` lines with its own tokenizer: quote values with spaces."""
    return f'"{text}"' if any(c.isspace() for c in text) else text


def directives(
    res: Resources,
    *,
    job_name: str,
    cluster: Optional[ClusterConfig] = None,
    array: Optional[str] = None,
    output: Optional[str] = None,
    error: Optional[str] = None,
    chdir: Optional[str] = None,
) -> List[str]:
    """The ``#SBATCH`` lines for ``res``; cluster defaults fill partition and account."""
    cluster = cluster or ClusterConfig()
    opts = [("job-name", job_name)]
    partition = res.partition or cluster.partition
    account = res.account or cluster.account
    if partition:
        opts.append(("partition", partition))
    if account:
        opts.append(("account", account))
    opts.append(("nodes", str(res.nodes)))
    opts.append(("ntasks-per-node", str(res.ntasks_per_node)))
    if res.gpus_per_node:
        if res.gpu_type:
            opts.append(("gres", f"gpu:{res.gpu_type}:{res.gpus_per_node}"))
        else:
            opts.append(("gpus-per-node", str(res.gpus_per_node)))
    if res.cpus_per_task:
        opts.append(("cpus-per-task", str(res.cpus_per_task)))
    if res.mem:
        opts.append(("mem", res.mem))
    if res.time:
        opts.append(("time", res.time))
    if array:
        opts.append(("array", array))
    if output:
        opts.append(("output", output))
    if error:
        opts.append(("error", error))
    if chdir:
        opts.append(("chdir", chdir))
    lines = [f"#SBATCH --{key}={directive_value(value)}" for key, value in opts]
    lines += [f"#SBATCH {directive_value(item)}" for item in res.extra]
    return lines


def warn_seconds(res: Resources) -> int:
    """Lead time of the warning signal: ``signal_seconds``, but at most half a shorter limit."""
    if res.time:
        limit = int(time_to_hours(res.time) * 3600)
        if 0 < limit <= res.signal_seconds:
            return max(1, limit // 2)
    return res.signal_seconds


def signal_directives(res: Resources) -> List[str]:
    """Warning signal to the batch shell before the limit; requeue and appended logs if asked."""
    lines = [f"#SBATCH --signal=B:{res.signal}@{warn_seconds(res)}"]
    if res.requeue:
        lines += ["#SBATCH --requeue", "#SBATCH --open-mode=append"]
    return lines


def script_directive(script_text: str, option: str) -> Optional[str]:
    """The value of ``#SBATCH --option=value`` in a script (quotes removed), last one wins."""
    value = None
    prefix = f"#SBATCH --{option}="
    for line in script_text.splitlines():
        if line.startswith(prefix):
            value = line[len(prefix) :].strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
    return value


def warn_signal_of(script_text: str) -> str:
    """The warning signal's name (``USR1``) from a script's ``--signal=[B:]SIG@secs``."""
    value = script_directive(script_text, "signal") or ""
    name = value.split(":", 1)[-1].split("@", 1)[0] if value else "USR1"
    return name[3:] if name.startswith("SIG") else (name or "USR1")


def log_path(pattern: Optional[str], job_id: str, array_task_id: int, name: str = "") -> Optional[str]:
    """An ``--output`` pattern with ``%A`` / ``%a`` / ``%x`` filled for one array element."""
    if not pattern:
        return None
    return pattern.replace("%A", job_id).replace("%a", str(array_task_id)).replace("%x", name)


# --- reading Slurm's answers --------------------------------------------------------------


def parse_exit(text: Optional[str]) -> Optional[int]:
    """Slurm's ``ExitCode=code:signal`` -> a shell-style code (128+signal when killed)."""
    if not text:
        return None
    code, _, sig = text.partition(":")
    try:
        if sig and int(sig):
            return 128 + int(sig)
        return int(code)
    except ValueError:
        return None


def parse_duration(text: Optional[str]) -> Optional[float]:
    """``[D-]HH:MM:SS`` / ``MM:SS`` (squeue, scontrol) -> seconds."""
    if not text or text in ("INVALID", "N/A", "UNLIMITED"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + p
    return float(days * 86400 + seconds)


@dataclass
class SlurmInfo:
    """What the scheduler says about one array element (from squeue, scontrol or sacct).

    ``exit_code`` is what Slurm reported, also for a job still running (scontrol says 0
    then): the caller decides whether the state is final."""

    state: str
    source: str
    exit_code: Optional[int] = None
    restarts: int = 0
    node: Optional[str] = None
    elapsed: Optional[float] = None
    reason: str = ""


# What ``status`` asks squeue for every array element: its state and why, where and how long
# it ran, and (for an element that ended, which ``-t all`` keeps while slurmctld remembers
# it: MinJobAge) its exit status and restart count, everything ``scontrol show job`` says.
SQUEUE_FIELDS = ("ArrayJobID", "ArrayTaskID", "State", "Reason", "NodeList", "TimeUsed", "exit_code", "RestartCnt")


def parse_wait_status(text: Optional[str]) -> Optional[int]:
    """squeue's ``exit_code``, a raw wait status (``768``: exit 3; ``9``: killed by signal 9)
    -> a shell-style code (128+signal when killed)."""
    try:
        status = int(text or "")
    except ValueError:
        return None
    return 128 + (status & 0x7F) if status & 0x7F else (status >> 8) & 0xFF


def from_squeue(rows: Sequence[Sequence[str]]) -> Dict[str, SlurmInfo]:
    """Rows of ``squeue -r -O`` with ``SQUEUE_FIELDS`` keyed by ``<array job>_<index>``
    (plain jobs, whose task id is N/A, are left out)."""
    out: Dict[str, SlurmInfo] = {}
    for row in rows:
        if len(row) < len(SQUEUE_FIELDS) or not row[1].isdigit():
            continue
        node = row[4] if row[4] and not row[4].startswith("(") else None
        reason = row[3] if row[3] not in ("None", "(null)") else ""
        restarts = int(row[7]) if row[7].isdigit() else 0
        out[f"{row[0]}_{row[1]}"] = SlurmInfo(
            row[2].split()[0] if row[2] else "UNKNOWN",
            "squeue",
            exit_code=parse_wait_status(row[6]),
            restarts=restarts,
            node=node,
            elapsed=parse_duration(row[5]),
            reason=reason,
        )
    return out


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


def outcome(records: Sequence[Dict[str, str]]) -> Tuple[Optional[str], Optional[int]]:
    """``(JobState, exit code)`` of a plain job from its ``scontrol -o show job`` records;
    ``(None, None)`` when there is none (Slurm has forgotten the job)."""
    for rec in records:
        state = rec.get("JobState")
        if state and ":" in rec.get("ExitCode", ""):
            return state.split()[0], parse_exit(rec["ExitCode"])
    return None, None


SACCT_FIELDS = "JobID,State,ElapsedRaw,ExitCode,AllocTRES"


@dataclass(frozen=True)
class SacctRow:
    """One line of ``sacct -n -P -X -o JobID,State,ElapsedRaw,ExitCode,AllocTRES``."""

    job_id: str
    state: str
    elapsed: int
    exit_code: str
    alloc_tres: str

    @property
    def gpus(self) -> Optional[int]:
        match = re.search(r"(?:^|,)gres/gpu=(\d+)", self.alloc_tres)
        return int(match.group(1)) if match else None


def parse_sacct(text: str) -> List[SacctRow]:
    rows = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5 or not parts[0]:
            continue
        try:
            elapsed = int(parts[2] or 0)
        except ValueError:
            continue
        rows.append(SacctRow(parts[0], parts[1].split()[0] if parts[1] else "", elapsed, parts[3], parts[4]))
    return rows


def from_sacct(rows: Sequence[SacctRow]) -> Dict[str, SlurmInfo]:
    """sacct rows keyed by array element (plain jobs and pending ranges are left out)."""
    out: Dict[str, SlurmInfo] = {}
    for row in rows:
        if "_" not in row.job_id or "[" in row.job_id:
            continue
        state = row.state.split()[0] if row.state else "UNKNOWN"
        if state == "CANCELLED+":
            state = "CANCELLED"
        out[row.job_id] = SlurmInfo(state, "sacct", exit_code=parse_exit(row.exit_code), elapsed=float(row.elapsed))
    return out


def job_number(job_id: str) -> int:
    """The numeric job id of ``57`` or ``57_3`` (0 for anything else), for ordering."""
    base = job_id.partition("_")[0]
    return int(base) if base.isdigit() else 0


def _explain(code: int, stderr: str) -> str:
    for line in reversed(stderr.strip().splitlines()):
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return ""


# --- calling Slurm ------------------------------------------------------------------------


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


def sbatch_argv(script: str, options: Sequence[str] = (), args: Sequence[str] = ()) -> List[str]:
    """The command ``sbatch`` runs, for showing it before submitting."""
    return ["sbatch", "--parsable", *options, script, *args]


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
    value = show_config().get("MaxArraySize", str(DEFAULT_MAX_ARRAY_SIZE))
    match = re.match(r"\d+", value)
    return int(match.group()) if match else DEFAULT_MAX_ARRAY_SIZE


def array_limit(configured: Optional[int], dry_run: bool = False) -> int:
    """MaxArraySize: ``configured`` (``[cluster] max_array_size``), else Slurm's own, also
    for a dry run (a read-only query), so that it shows the chunks a real submission makes.
    A dry run where Slurm cannot be asked assumes Slurm's default, 1001."""
    if configured:
        return configured
    try:
        return max_array_size()
    except (ToolMissing, ToolError):
        if dry_run:
            return DEFAULT_MAX_ARRAY_SIZE
        raise


def hostnames(nodelist: str) -> List[str]:
    out = proc.run(["scontrol", "show", "hostnames", nodelist], hint=HINT).stdout or ""
    return out.split()


def array_tasks(job_ids: Sequence[str]) -> Dict[str, SlurmInfo]:
    """Every element of these array jobs slurmctld knows, queued, running or recently ended,
    in ONE squeue call whatever the number of jobs (one REQUEST_JOB_INFO RPC, plus the
    partition table squeue always loads). Elements Slurm has forgotten are absent."""
    if not job_ids:
        return {}
    fmt = ",".join(f"{name}:|" for name in SQUEUE_FIELDS)
    argv = ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-O", fmt]
    result = proc.run(argv, hint=HINT, explain=_explain, success_codes=(0, 1))
    if result.returncode != 0:
        if "Invalid job id" in (result.stderr or ""):  # one id, and Slurm has forgotten it
            return {}
        raise ToolError("squeue", argv, result.returncode, result.stderr or "", _explain(result.returncode, result.stderr or ""))
    return from_squeue([line.split("|") for line in (result.stdout or "").splitlines() if line.strip()])


def squeue(job_ids: Sequence[str], fmt: str = "%i|%T|%r|%N") -> List[List[str]]:
    """Rows of ``squeue -h -r`` for these jobs; jobs Slurm has forgotten are just absent."""
    if not job_ids:
        return []
    result = proc.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", fmt], hint=HINT, success_codes=(0, 1))
    return [line.split("|") for line in (result.stdout or "").splitlines() if line.strip()]


def queued_jobs() -> set:
    """The array job ids (``%F``) of every job in the queue, in one call."""
    out = proc.run(["squeue", "-h", "-r", "-o", "%F"], hint=HINT, timeout=60).stdout or ""
    return {line.strip() for line in out.splitlines() if line.strip()}


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


def job_outcome(job_id: str) -> Tuple[Optional[str], Optional[int]]:
    """``(JobState, exit code)`` of a plain job from ``scontrol show job`` (kept MinJobAge
    seconds after the end); ``(None, None)`` once Slurm has forgotten it."""
    return outcome(show_job(job_id))


def sacct(job_ids: Sequence[str], *, dry_run: bool = False) -> Optional[List[SacctRow]]:
    """Rows for ``job_ids`` (array elements expanded), or None when there is no accounting:
    ``sacct`` missing, or "Slurm accounting storage is disabled" (exit 1, no slurmdbd)."""
    if not job_ids:
        return []
    # -D: every attempt of a requeued job, not only its last one (billed; the last one wins)
    argv = ["sacct", "-n", "-P", "-X", "-D", "-o", SACCT_FIELDS, "-j", ",".join(job_ids)]
    try:
        result = proc.run(argv, dry_run=dry_run, timeout=60)
    except (ToolMissing, ToolError):
        return None
    return parse_sacct(result.stdout or "")
