"""Everything nexa says to Slurm and reads back from it: the one home of Slurm's text.

Two halves. The pure half turns data into Slurm's text and back, and is tested without a
cluster: ``--array`` specs, ``#SBATCH`` directives (quoted the way Slurm's own parser reads
them), ``--output`` patterns, exit codes and durations, and the output of squeue, scontrol
and sacct. The other half runs sbatch, squeue, scontrol, sacct, scancel and sinfo through
``proc``. No other module names a Slurm program (the sbatch templates under ``sbatch/`` aside).
"""

import re
from typing import Dict, List, Optional, Sequence, Tuple

from .. import proc
from ..config import ClusterConfig, Resources, time_to_hours
from ..errors import ConfigError, NexaError, ToolError, ToolMissing
from ..structs import frozen, mutable

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


# --- dependencies --------------------------------------------------------------------------

#: ``--after RUN:KIND`` -> Slurm's dependency type. ok: every job ended COMPLETED; any: every
#: job ended, whatever its state; corr: array task i once task i of the other array succeeded.
DEPENDENCY_TYPES = {"ok": "afterok", "any": "afterany", "corr": "aftercorr"}
#: Without it, a dependency that can never be satisfied leaves the job pending for ever
#: (Reason=DependencyNeverSatisfied); with it, Slurm cancels the job with that reason.
KILL_ON_INVALID_DEP = "--kill-on-invalid-dep=yes"
#: squeue/scontrol reasons of a job held by its dependency, and of one Slurm gave up on.
WAITING_REASON = "Dependency"
NEVER_SATISFIED_REASON = "DependencyNeverSatisfied"


def dependency_part(kind: str, targets: Sequence[str]) -> str:
    """``afterok:12:13_4``: one dependency on jobs (``12``) or array elements (``13_4``)."""
    return ":".join([DEPENDENCY_TYPES[kind], *targets])


def dependency_options(parts: Sequence[str]) -> List[str]:
    """The sbatch options for ``parts`` (all must hold: joined with ``,``); none without parts."""
    if not parts:
        return []
    return [f"--dependency={','.join(parts)}", KILL_ON_INVALID_DEP]


def afterany(job_ids: Sequence[str]) -> str:
    """``--dependency=afterany:1:2``: start once every one of these jobs has ended, in any
    state (an array job: all its elements). A halving run's promotion job waits so."""
    return "--dependency=" + dependency_part("any", [str(j) for j in job_ids])


def job_log(folder: str, stem: str) -> str:
    """``--output=<folder>/<stem>-%j.out``: one log per job (``%j``, its id), stderr included;
    the folder written as Slurm reads it (``filename_pattern``)."""
    return "--output=" + filename_pattern(folder, f"{stem}-%j.out", "log folder")


# --- #SBATCH directives -------------------------------------------------------------------
#
# How sbatch (22.05, src/sbatch/opt.c get_argument) reads the text after ``#SBATCH``: several
# arguments per line, split at whitespace; ``"..."`` or ``'...'`` group characters, whitespace
# and ``#`` included; a backslash takes the next character literally, inside quotes too (but
# outside quotes a whitespace character still ends the argument); an unquoted ``#`` makes the
# rest of the line a comment; the line ends at a newline, and an unmatched quote is fatal. So
# every value is written as one argument: left bare when it holds only characters none of
# those rules touch, else in double quotes with ``\`` and ``"`` escaped. Control characters
# (a newline would end the line and start a shell command) are refused.

_WS = " \t\n\v\f\r"  # C's isspace()
_BARE = re.compile(r"[A-Za-z0-9_.,:/@%+=^~\[\]-]*\Z")


def check_line(text: str, what: str) -> str:
    """``text`` if it may appear on one line of a generated script; a control character (a
    line break would end a comment or ``#SBATCH`` line and start a command) is refused."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigError(f"{what}: {text!r} holds a control character (a line break would end a line of the sbatch script): refused")
    return text


def directive_value(text: str, what: str = "#SBATCH value") -> str:
    """``text`` as exactly one argument of an ``#SBATCH`` line, as Slurm's parser reads it."""
    check_line(text, what)
    if _BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def directive_args(text: str) -> List[str]:
    """The arguments sbatch reads from the text after ``#SBATCH`` (see above).

    Raises:
        ValueError: an unmatched quote (sbatch stops with an error).
    """
    args: List[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WS:
            i += 1
        arg: List[str] = []
        quote, escape = "", False
        while i < n and (quote or text[i] not in _WS) and text[i] != "\n":
            c = text[i]
            i += 1
            if escape:
                escape = False
            elif c == "\\":
                escape = True
                continue
            elif quote:
                if c == quote:
                    quote = ""
                    continue
            elif c in "\"'":
                quote = c
                continue
            elif c == "#":  # a comment: the rest of the line is not read
                i = n
                break
            arg.append(c)
        if quote:
            raise ValueError(f"unmatched {quote} in #SBATCH{text}")
        if not arg:  # sbatch stops reading the line at the first empty argument
            return args
        args.append("".join(arg))


def script_args(script_text: str) -> List[str]:
    """Every ``#SBATCH`` argument of a script, in order, up to its first command (where sbatch
    stops reading directives). Lines sbatch would refuse are skipped."""
    args: List[str] = []
    for line in script_text.split("\n"):
        if line.startswith("#SBATCH"):
            try:
                args += directive_args(line[len("#SBATCH") :])
            except ValueError:
                continue
        elif line.strip() and not line.lstrip().startswith("#"):
            break
    return args


def filename_pattern(folder: str, name: str, what: str) -> str:
    """An ``--output``/``--error`` pattern for ``name`` (holding ``%A``, ``%a``, ``%j``...) in
    ``folder``: Slurm expands ``%`` patterns in those two options (not in ``--chdir`` or
    ``--job-name``), so a ``%`` of the folder is written ``%%``. A backslash anywhere turns
    Slurm's expansion off for the whole pattern: such a folder is refused."""
    check_line(folder, what)
    if "\\" in folder:
        raise ConfigError(f"{what}: {folder!r} holds a backslash, with which Slurm would not expand %A/%a/%j in log names: refused")
    return folder.replace("%", "%%") + "/" + name


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
    lines = [f"#SBATCH --{key}={directive_value(value, f'#SBATCH --{key}')}" for key, value in opts]
    lines += [f"#SBATCH {directive_value(item, 'resources.extra')}" for item in res.extra]
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
    """The value of ``--option`` (``--option=value`` or ``--option value``) among the
    script's ``#SBATCH`` arguments, read as sbatch reads them; the last one wins."""
    value = None
    args = script_args(script_text)
    prefix = f"--{option}="
    for i, arg in enumerate(args):
        if arg.startswith(prefix):
            value = arg[len(prefix) :]
        elif arg == f"--{option}" and i + 1 < len(args):
            value = args[i + 1]
    return value


def warn_signal_of(script_text: str) -> str:
    """The warning signal's name (``USR1``) from a script's ``--signal=[B:]SIG@secs``."""
    value = script_directive(script_text, "signal") or ""
    name = value.split(":", 1)[-1].split("@", 1)[0] if value else "USR1"
    return name[3:] if name.startswith("SIG") else (name or "USR1")


_PERCENT = re.compile(r"(\d*)(.?)")


def log_path(pattern: Optional[str], job_id: str, array_task_id: int, name: str = "") -> Optional[str]:
    """An ``--output``/``--error`` pattern as slurmd expands it for one array element:
    ``%%``, ``%A``, ``%a``, ``%x`` (with an optional width, ``%4a``). None when the pattern
    names what is not known here (``%j``, ``%N``, ``%u``...). A pattern with a backslash is not
    expanded by Slurm at all: its backslashes are dropped (``\\\\`` keeps one)."""
    if not pattern:
        return None
    if "\\" in pattern:
        return re.sub(r"\\(.?)", r"\1", pattern)
    out: List[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c != "%" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        if pattern[i + 1] == "%":
            out.append("%")
            i += 2
            continue
        m = _PERCENT.match(pattern, i + 1)
        assert m is not None  # matches the empty string at least
        width, key = min(int(m.group(1) or 0), 10), m.group(2)
        values = {"A": job_id, "a": str(array_task_id), "x": name}
        if key not in values:
            if key and key in "JjNnstu":
                return None  # known to Slurm alone
            out.append(pattern[i : m.end()])  # not a pattern: kept as it is
        else:
            value = values[key]
            out.append(value.zfill(width) if key != "x" else value)
        i = m.end()
    return "".join(out)


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


@mutable
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


#: ``SlurmInfo.source`` values that mean slurmctld still knows the job (a dependency on it
#: means something; on a job it has forgotten, Slurm takes a dependency as satisfied).
LIVE_SOURCES = frozenset({"squeue", "scontrol"})
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
        # Never started (cancelled while pending, or for a dependency that can never be met):
        # Slurm still reports exit status 0 and a run time counted from the epoch, but no
        # node ever held it; none of that means anything.
        started = node is not None
        out[f"{row[0]}_{row[1]}"] = SlurmInfo(
            row[2].split()[0] if row[2] else "UNKNOWN",
            "squeue",
            exit_code=parse_wait_status(row[6]) if started else None,
            restarts=restarts,
            node=node,
            elapsed=parse_duration(row[5]) if started else None,
            reason=reason,
        )
    return out


def job_states(rows: Sequence[Sequence[str]]) -> Dict[str, str]:
    """The plain (non-array) jobs among ``queue_rows`` rows: job id -> state."""
    return {row[0]: (row[2].split()[0] if row[2] else "UNKNOWN") for row in rows if len(row) >= 3 and row[1] == "N/A"}


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


@frozen
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


def sbatch_test_only(script: str, *, options: Sequence[str] = ()) -> None:
    """``sbatch --test-only``: would Slurm accept the script (partition, account, limits)?
    Submits nothing (Slurm uses up a job id); a refusal is a ``ToolError`` with its reason."""
    proc.run(["sbatch", "--test-only", *options, script], hint=HINT, explain=_explain)


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


def queue_rows(job_ids: Sequence[str]) -> List[List[str]]:
    """``squeue -h -r -t all -O SQUEUE_FIELDS`` rows of these jobs: every element of the arrays
    and every plain job slurmctld knows, queued, running or recently ended, in ONE call
    whatever the number of jobs (one REQUEST_JOB_INFO RPC, plus the partition table squeue
    always loads). Jobs Slurm has forgotten are absent. ``from_squeue`` and ``job_states``
    read the rows."""
    if not job_ids:
        return []
    fmt = ",".join(f"{name}:|" for name in SQUEUE_FIELDS)
    argv = ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-O", fmt]
    result = proc.run(argv, hint=HINT, explain=_explain, success_codes=(0, 1))
    if result.returncode != 0:
        if "Invalid job id" in (result.stderr or ""):  # one id, and Slurm has forgotten it
            return []
        raise ToolError("squeue", argv, result.returncode, result.stderr or "", _explain(result.returncode, result.stderr or ""))
    return [line.split("|") for line in (result.stdout or "").splitlines() if line.strip()]


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


def own_job_ids(job_ids: Sequence[str]) -> Dict[str, str]:
    """Array element (``57_3``) or plain job -> the job id it ran as (``58``, its
    ``SLURM_JOB_ID``), for the jobs slurmctld still remembers; the others are left out."""
    out: Dict[str, str] = {}
    for job in job_ids:
        try:
            records = show_job(job)
        except NexaError:
            continue
        for rec in records:
            own, array, task = rec.get("JobId"), rec.get("ArrayJobId"), rec.get("ArrayTaskId")
            if own and array and task and task.isdigit():
                out[f"{array}_{task}"] = own
            elif own and not array:
                out[own] = own
    return out


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


# --- sacct usage figures, for `nexa efficiency`: parsing, then the call ------------------

USAGE_FIELDS = "JobID,JobIDRaw,State,ElapsedRaw,TotalCPU,AllocCPUS,MaxRSS,ReqMem,TimelimitRaw,NNodes,AllocTRES,Start,End"
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)([nc]?)\Z")


@mutable
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
