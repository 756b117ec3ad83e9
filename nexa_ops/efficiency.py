"""How well a run used what it held: seff-style figures per task and for the run.

Per task, from Slurm accounting (``sacct``): CPU efficiency (TotalCPU / (Elapsed x AllocCPUS)),
memory efficiency (peak RSS / requested memory) and time used against the limit; from
Prometheus, when ``[monitor] prometheus_url`` is set, the mean utilisation of the task's GPUs
over its run (through ``nexa_gpu_job_info``, the exporter's GPU -> Slurm job map). The run
line adds the idle GPU-hours (allocated GPU-hours x (1 - utilisation)) and their cost at the
run's rate.

The figures are pure functions of their inputs (``task_figures``, ``run_figures``,
``idle_cost``, ``fold_steps``). ``efficiency`` gathers the inputs: the run's tasks
(``track.status``), sacct, ``scontrol show job``, the worker's records, the cost manifest
and Prometheus. A figure whose input is missing is None and ``unknown`` says why: never a
guess.
"""

import math
import time
from dataclasses import asdict, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from . import runs, track
from .config import TIME_RE, load_config, time_to_hours
from .cost import book
from .errors import NexaError
from .monitor import check_prometheus_url
from .structs import frozen, mutable
from .tools import prometheus, slurm
from .tools.slurm import UsageRow

#: Figures a task or run line can have, in the order the table shows them.
FIGURES = ("cpu_efficiency", "mem_efficiency", "time_used", "gpu_utilization", "idle_gpu_hours")
#: Tasks in these states never ran: they have no figures and are not "unknown".
NOT_STARTED = frozenset({"PENDING", "PLANNED", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING"})
#: Points in the Prometheus subquery over a task's run (a coarser step for long tasks).
MAX_POINTS = 1000


@mutable
class Usage:
    """One task's accounting with its steps folded in (``sacct`` lists ``57_3``,
    ``57_3.batch``, ``57_3.0``... as separate lines)."""

    element: str  # 57_3 (or 58 for a job that is not an array)
    slurm_job_id: str  # the task's own job id: what SLURM_JOB_ID and the GPU map say
    state: str
    elapsed: Optional[int]
    cpu_seconds: Optional[float]
    cpus: Optional[int]
    max_rss: Optional[int]
    req_mem: Optional[int]
    nnodes: Optional[int]
    timelimit: Optional[int]
    gpus: Optional[int]
    start: Optional[float]  # Unix seconds
    end: Optional[float]


@mutable
class TaskEfficiency:
    index: int
    job_id: Optional[str]  # the array element, 57_3
    slurm_job_id: Optional[str]  # its own job id, 58
    state: str
    elapsed: Optional[float] = None
    cpus: Optional[int] = None
    cpu_seconds: Optional[float] = None
    cpu_efficiency: Optional[float] = None
    max_rss_bytes: Optional[int] = None
    req_mem_bytes: Optional[int] = None
    mem_efficiency: Optional[float] = None
    time_limit: Optional[float] = None
    time_used: Optional[float] = None
    gpus: Optional[int] = None
    gpu_hours: Optional[float] = None
    gpu_utilization: Optional[float] = None
    idle_gpu_hours: Optional[float] = None
    unknown: Dict[str, str] = field(default_factory=dict)  # figure -> why it is missing

    @property
    def started(self) -> bool:
        return self.state not in NOT_STARTED


@mutable
class RunEfficiency:
    run_id: str
    run_dir: Path
    name: str
    backend: str
    job_ids: List[str]
    tasks: List[TaskEfficiency]
    cpu_efficiency: Optional[float] = None
    mem_efficiency: Optional[float] = None  # the highest task's: what the request must cover
    time_used: Optional[float] = None  # the longest task's share of its limit
    gpu_hours: Optional[float] = None
    gpu_utilization: Optional[float] = None
    idle_gpu_hours: Optional[float] = None
    rate_usd_per_gpu_hour: Optional[float] = None
    idle_usd: Optional[float] = None
    counted: Dict[str, Tuple[int, int]] = field(default_factory=dict)  # figure -> (tasks with it, tasks that ran)
    unknown: Dict[str, str] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        out["counted"] = {k: {"known": v[0], "ran": v[1]} for k, v in self.counted.items()}
        return out


@frozen
class IdleGpu:
    """A run's idle GPU time and its cost (for ``cost.report``); None where unknown."""

    gpu_hours: Optional[float]
    idle_gpu_hours: Optional[float]
    idle_usd: Optional[float]
    gpu_utilization: Optional[float]
    why_unknown: str = ""


# --- pure figures -----------------------------------------------------------------------


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    if num is None or den is None or not den > 0:
        return None
    return num / den


def cpu_efficiency(cpu_seconds: Optional[float], elapsed: Optional[float], cpus: Optional[int]) -> Optional[float]:
    """TotalCPU / (Elapsed x AllocCPUS), as seff computes it."""
    if elapsed is None or not cpus:
        return None
    return _ratio(cpu_seconds, elapsed * cpus)


def mem_efficiency(max_rss: Optional[int], req_mem: Optional[int], nnodes: Optional[int]) -> Optional[float]:
    """Peak RSS of the largest step against the memory requested per node."""
    if req_mem is None or not req_mem > 0:
        return None
    return _ratio(max_rss, req_mem / max(1, nnodes or 1))


def idle_cost(gpu_hours: Optional[float], utilization: Optional[float], rate: Optional[float]) -> Tuple[Optional[float], Optional[float]]:
    """``(idle GPU-hours, their USD)``: allocated GPU-hours x (1 - utilisation), at ``rate``
    USD per GPU-hour. Either is None when an input is."""
    if gpu_hours is None or utilization is None:
        return None, None
    idle = gpu_hours * (1.0 - min(1.0, max(0.0, utilization)))
    return idle, (idle * rate if rate is not None else None)


def job_gpu_utilization(per_gpu: Sequence[float], allocated: Optional[int]) -> Optional[float]:
    """Mean utilisation over the task's GPUs: each GPU seen in Prometheus with the task's
    process contributes its mean; an allocated GPU on which the task never ran a process
    contributes 0 (it was held and idle)."""
    if not per_gpu:
        return None
    return min(1.0, sum(per_gpu) / max(len(per_gpu), allocated or 0))


def _parse_time(text: Optional[str]) -> Optional[float]:
    """sacct's local ``2024-05-01T12:00:03`` -> Unix seconds."""
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def fold_steps(rows: Sequence[UsageRow]) -> Dict[str, Usage]:
    """Per element: the allocation line's state, elapsed, CPUs, request, limit and GPUs; CPU
    time summed over the steps (or the allocation line's total, whichever is larger: sacct
    already adds the steps up there on some versions); the peak RSS of any step."""
    usage: Dict[str, Usage] = {}
    steps: Dict[str, List[UsageRow]] = {}
    for row in rows:
        if row.is_step:
            steps.setdefault(row.job_id.split(".", 1)[0], []).append(row)
        elif "[" not in row.job_id:  # 57_[3-9]: elements still pending
            usage[row.job_id] = Usage(
                element=row.job_id,
                slurm_job_id=row.job_id_raw,
                state=row.state,
                elapsed=row.elapsed,
                cpu_seconds=row.total_cpu,
                cpus=row.alloc_cpus,
                max_rss=row.max_rss,
                req_mem=row.req_mem,
                nnodes=row.nnodes,
                timelimit=row.timelimit,
                gpus=row.gpus,
                start=_parse_time(row.start),
                end=_parse_time(row.end),
            )
    for element, own in steps.items():
        task = usage.get(element)
        if task is None:
            continue
        step_cpu = [r.total_cpu for r in own if r.total_cpu is not None]
        if step_cpu:
            task.cpu_seconds = max(task.cpu_seconds or 0.0, sum(step_cpu))
        rss = [r.max_rss for r in own if r.max_rss is not None] + ([task.max_rss] if task.max_rss is not None else [])
        task.max_rss = max(rss) if rss else None
    return usage


def task_figures(
    index: int,
    state: str,
    *,
    job_id: Optional[str] = None,
    slurm_job_id: Optional[str] = None,
    usage: Optional[Usage] = None,
    elapsed: Optional[float] = None,
    time_limit: Optional[float] = None,
    gpus: Optional[int] = None,
    gpu_utilization: Optional[float] = None,
    why: Optional[Dict[str, str]] = None,
) -> TaskEfficiency:
    """One task's figures. ``usage`` (accounting) wins over ``elapsed`` (the worker's records)
    and ``time_limit``/``gpus`` (the script and the cost manifest). ``why`` says, per figure,
    why its input is missing; every figure left None gets a reason in ``unknown``."""
    why = dict(why or {})
    task = TaskEfficiency(index=index, job_id=job_id, slurm_job_id=slurm_job_id, state=state)
    if not task.started:
        return task
    if usage is not None:
        task.slurm_job_id = usage.slurm_job_id or slurm_job_id
        task.state = usage.state or state
        if usage.elapsed is not None:
            elapsed = float(usage.elapsed)
        task.cpus, task.cpu_seconds = usage.cpus, usage.cpu_seconds
        task.max_rss_bytes, task.req_mem_bytes = usage.max_rss, usage.req_mem
        if "cpu_efficiency" not in why:
            task.cpu_efficiency = cpu_efficiency(usage.cpu_seconds, elapsed, usage.cpus)
            why["cpu_efficiency"] = "sacct recorded no CPU time, elapsed time or CPU count for it"
        if "mem_efficiency" not in why:
            task.mem_efficiency = mem_efficiency(usage.max_rss, usage.req_mem, usage.nnodes)
            if usage.req_mem is None or not usage.req_mem > 0:
                why["mem_efficiency"] = "no memory request to compare with (ReqMem is 0)"
            else:
                why["mem_efficiency"] = "sacct recorded no MaxRSS for its steps"
        if usage.timelimit is not None:
            time_limit = float(usage.timelimit)
        if usage.gpus is not None:
            gpus = usage.gpus
    task.elapsed, task.time_limit, task.gpus = elapsed, time_limit, gpus
    task.time_used = _ratio(elapsed, time_limit)
    why.setdefault("time_used", "no elapsed time" if elapsed is None else "no time limit (UNLIMITED, or none in the script)")
    if gpus is not None and elapsed is not None:
        task.gpu_hours = gpus * elapsed / 3600.0
    if gpus != 0:
        task.gpu_utilization = gpu_utilization
        task.idle_gpu_hours, _ = idle_cost(task.gpu_hours, gpu_utilization, None)
        if gpus is None:
            why.setdefault("gpu_hours", "allocated GPUs unknown")
        elif elapsed is None:
            why.setdefault("gpu_hours", "no elapsed time")
        why.setdefault("gpu_utilization", "no data")
        why.setdefault("idle_gpu_hours", why.get("gpu_hours") if task.gpu_hours is None else "GPU utilisation unknown")
    why.setdefault("cpu_efficiency", "no data")
    why.setdefault("mem_efficiency", "no data")
    names = FIGURES + ("gpu_hours",)
    task.unknown = {k: why[k] for k in names if k in why and getattr(task, k) is None and not (gpus == 0 and "gpu" in k)}
    return task


def run_figures(tasks: Sequence[TaskEfficiency], *, rate: Optional[float], rate_why: str = "") -> Dict[str, Any]:
    """The run line: CPU efficiency over all the CPU time allocated, the highest memory
    efficiency, the longest time used, GPU-hours, utilisation weighted by GPU-hours, and the
    idle GPU-hours with their cost. Each figure is over the tasks that have it: ``counted``
    says how many of how many; ``unknown`` why a figure has no task at all."""
    ran = [t for t in tasks if t.started]
    out: Dict[str, Any] = {name: None for name in FIGURES + ("gpu_hours", "idle_usd")}
    out["counted"], out["unknown"] = {}, {}
    if not ran:
        out["unknown"] = {name: "no task has started" for name in FIGURES}
        return out

    def known(name: str, pool: List[TaskEfficiency]) -> List[TaskEfficiency]:
        have = [t for t in pool if getattr(t, name) is not None]
        out["counted"][name] = (len(have), len(pool))
        if pool and not have:
            reasons = [t.unknown[name] for t in pool if name in t.unknown]
            text = reasons[0] if reasons else "no data"
            out["unknown"][name] = text + (f" ({len(reasons)} of {len(pool)} tasks)" if len(pool) > 1 and len(set(reasons)) > 1 else "")
        return have

    cpu = [t for t in known("cpu_efficiency", ran) if t.elapsed and t.cpus]
    if cpu:
        out["cpu_efficiency"] = _ratio(sum(t.cpu_seconds or 0.0 for t in cpu), sum((t.elapsed or 0.0) * (t.cpus or 0) for t in cpu))
    mem = known("mem_efficiency", ran)
    out["mem_efficiency"] = max(t.mem_efficiency or 0.0 for t in mem) if mem else None
    used = known("time_used", ran)
    out["time_used"] = max(t.time_used or 0.0 for t in used) if used else None
    gpu_tasks = [t for t in ran if t.gpus != 0]
    if not gpu_tasks:  # no GPU allocated: nothing idle, nothing to know
        out["gpu_hours"], out["idle_gpu_hours"], out["idle_usd"] = 0.0, 0.0, 0.0
        return out
    hours = known("gpu_hours", gpu_tasks)
    out["gpu_hours"] = sum(t.gpu_hours or 0.0 for t in hours) if len(hours) == len(gpu_tasks) else None
    if out["gpu_hours"] is None and hours:
        out["unknown"]["gpu_hours"] = next(t.unknown.get("gpu_hours", "no data") for t in gpu_tasks if t.gpu_hours is None)
    util = known("gpu_utilization", gpu_tasks)
    weight = sum(t.gpu_hours or 0.0 for t in util)
    if util:
        if weight > 0:
            out["gpu_utilization"] = sum((t.gpu_hours or 0.0) * (t.gpu_utilization or 0.0) for t in util) / weight
        else:
            out["gpu_utilization"] = sum(t.gpu_utilization or 0.0 for t in util) / len(util)
    idle = known("idle_gpu_hours", gpu_tasks)
    if idle:
        out["idle_gpu_hours"] = sum(t.idle_gpu_hours or 0.0 for t in idle)
        if rate is None:
            out["unknown"]["idle_usd"] = rate_why or "the run's rate is unknown"
        else:
            out["idle_usd"] = out["idle_gpu_hours"] * rate
    else:
        out["unknown"]["idle_usd"] = "idle GPU-hours unknown"
    return out


# --- gathering the inputs (Slurm, records, cost manifest, Prometheus) ------------------------


def gpu_query(slurm_job_id: str, start: float, end: float) -> Tuple[str, float]:
    """The PromQL for a task's per-GPU mean utilisation over ``[start, end]``, and the time to
    evaluate it at.

    At each point of a subquery over the run, a GPU counts the utilisation it had while the
    task had a process on it (``nexa_gpu_job_info``, joined on the exporter target and GPU;
    dcgm-exporter's ``hpc_job`` label likewise), and 0 when the exporter knew the GPU's
    processes and the task's was not among them. Points where the node's exporter had no
    process list (nvidia-smi failed or timed out, the target was down) are left out of the
    mean, not counted as idle."""
    window = max(1, int(math.ceil(end - start)))
    step = max(1, int(math.ceil(window / MAX_POINTS)))
    job = slurm_job_id.replace("\\", "\\\\").replace('"', '\\"')
    held = (
        f'max by (instance, gpu) (nexa_gpu_job_info{{slurm_job_id="{job}"}})'
        " * on (instance, gpu) group_left () max by (instance, gpu) (nvidia_smi_utilization_gpu_ratio)"
        f' or max by (instance, gpu) (DCGM_FI_DEV_GPU_UTIL{{hpc_job="{job}"}}) / 100'
    )
    # nvidia_smi_compute_apps exists only when the compute-apps query (the job map) worked
    known = "max by (instance) (nvidia_smi_compute_apps * 0 + 1) or max by (instance) (DCGM_FI_DEV_GPU_UTIL * 0 + 1)"
    expr = f"sum_over_time(({held})[{window}s:{step}s]) / on (instance) group_left () count_over_time(({known})[{window}s:{step}s])"
    return expr, end


def _manifest(cfg: Any, run_dir: Path, run_id: str) -> Tuple[Dict[str, Any], str]:
    """The run's cost manifest (``<runs_dir>/manifests/cost_<run_id>.json``), or {} and why."""
    for runs_dir in dict.fromkeys([cfg.runs_dir, run_dir.parent]):
        path = book.manifest_path(runs_dir, run_id)
        if not path.exists():
            continue
        try:
            doc = book.read_json(path)
        except (OSError, ValueError) as exc:
            return {}, f"{path}: cannot read: {exc}"
        problem = book.manifest_problem(doc)
        if problem:
            return {}, f"{path}: {problem}"
        return doc, ""
    return {}, f"no cost manifest {book.manifest_path(cfg.runs_dir, run_id)}"


def _find(by_element: Dict[str, Any], element: Optional[str], plain: bool) -> Any:
    """``by_element[element]``; for a plain job (``launch``), task 0's ``J_0`` is the job ``J``.
    An array's bare ``J`` is never taken for an element: slurmdbd shows an element so for a
    few seconds, before it has recorded which one it is."""
    if not element:
        return None
    found = by_element.get(element)
    if found is None and plain and element.endswith("_0"):
        found = by_element.get(element[: -len("_0")])
    return found


def _gather_type() -> str:
    try:
        return slurm.show_config().get("JobAcctGatherType", "")
    except NexaError:
        return ""


def efficiency(
    run: Any = None,
    *,
    config: Any = None,
    prometheus_url: Optional[str] = None,
    now: Optional[float] = None,
) -> RunEfficiency:
    """CPU, memory, time and GPU efficiency of a run's tasks, and the run's idle GPU cost.

    Args:
        run: a run folder, a run id under the runs directory, or None for the latest run.
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).
        prometheus_url: where to read GPU utilisation (default: ``[monitor] prometheus_url``;
            neither: GPU utilisation is unknown).
        now: the end of still-running tasks' window (default: the current time).

    Returns:
        ``RunEfficiency``: per task (``TaskEfficiency``) and for the run, each figure or None
        with the reason in ``unknown``.

    Raises:
        ConfigError: no such run, a damaged run folder, or a bad ``prometheus_url``.
    """
    cfg = config or load_config()
    where = cfg.where
    if prometheus_url is not None:
        url: Optional[str] = check_prometheus_url(prometheus_url, "command line", "--prometheus-url")
    elif cfg.monitor.prometheus_url is not None:
        url = check_prometheus_url(cfg.monitor.prometheus_url, where, "monitor.prometheus_url")
    else:
        url = None
    now = time.time() if now is None else now
    path = runs.resolve_run(run, cfg)
    st = track.status(path, config=cfg)
    folder = runs.load_run(path)
    doc, manifest_why = _manifest(cfg, path, st.run_id)
    rate = doc.get("rate_usd_per_gpu_hour")
    rate = float(rate) if isinstance(rate, (int, float)) and math.isfinite(rate) and rate >= 0 else None
    gpus_from_manifest: Optional[int] = None
    if isinstance(doc.get("gpus_per_node"), int):
        gpus_from_manifest = int(doc.get("nodes") or 1) * int(doc["gpus_per_node"])
    limit_text = folder.directive("time")
    script_limit: Optional[float] = None
    if limit_text:
        if TIME_RE.match(limit_text) and time_to_hours(limit_text) > 0:
            script_limit = time_to_hours(limit_text) * 3600

    plain = doc.get("kind") == "launch"  # one job, not an array: sacct and scontrol name it J, not J_0
    why: Dict[str, str] = {}
    usage: Dict[str, Usage] = {}
    raw_ids: Dict[str, str] = {}
    slurm_ids = [j for j in dict.fromkeys(t.job_id.split("_", 1)[0] for t in st.tasks if t.job_id)]
    if st.backend != "slurm":
        for name in ("cpu_efficiency", "mem_efficiency"):
            why[name] = f"a {st.backend} run: CPU and memory figures come from Slurm accounting"
        why["gpu_utilization"] = f"a {st.backend} run: GPUs are mapped to Slurm jobs only"
    else:
        rows, sacct_why = slurm.sacct_usage(slurm_ids)
        if rows is None:
            for name in ("cpu_efficiency", "mem_efficiency"):
                why[name] = f"needs Slurm accounting ({sacct_why})"
        else:
            usage = fold_steps(rows)
            gather = _gather_type()
            if gather.endswith("/none"):
                for name in ("cpu_efficiency", "mem_efficiency"):
                    why[name] = f"Slurm does not gather job usage here (JobAcctGatherType={gather})"
        if any(t.job_id and _find(usage, t.job_id, plain) is None and t.state not in NOT_STARTED for t in st.tasks):
            raw_ids = slurm.own_job_ids(slurm_ids)
        if url is None:
            why["gpu_utilization"] = f"set [monitor] prometheus_url in {where} (or --prometheus-url) to read it from Prometheus"
    if rate is None:
        rate_why = manifest_why or "the cost manifest has no rate_usd_per_gpu_hour"
    else:
        rate_why = ""

    records = runs.task_records(path)
    prometheus_down = ""
    tasks: List[TaskEfficiency] = []
    for row in st.tasks:
        use = _find(usage, row.job_id, plain)
        task_why = dict(why)
        if use is None and st.backend == "slurm" and "cpu_efficiency" not in why and row.state not in NOT_STARTED:
            for name in ("cpu_efficiency", "mem_efficiency"):
                task_why[name] = "sacct has no record of it (yet: slurmdbd records a few seconds late)"
        own_id = (use.slurm_job_id if use else None) or _find(raw_ids, row.job_id, plain)
        gpus = use.gpus if use and use.gpus is not None else gpus_from_manifest
        if gpus is None:
            task_why["idle_gpu_hours"] = f"allocated GPUs unknown ({manifest_why or 'no gpus_per_node in the cost manifest'})"
        elapsed = float(use.elapsed) if use and use.elapsed is not None else row.elapsed
        utilization: Optional[float] = None
        if st.backend == "slurm" and url is not None and gpus != 0 and row.state not in NOT_STARTED:
            start = use.start if use else None
            end = use.end if use else None
            if start is None:
                start = (records.get(row.index) or {}).get("start")
            if end is None and start is not None and elapsed is not None:
                end = start + elapsed
            if end is None and start is not None:
                end = now
            if own_id is None:
                task_why["gpu_utilization"] = "its own Slurm job id is unknown (no accounting, and slurmctld has forgotten the job)"
            elif start is None or end is None:
                task_why["gpu_utilization"] = "when it ran is unknown"
            elif prometheus_down:
                task_why["gpu_utilization"] = prometheus_down
            else:
                expr, at = gpu_query(own_id, float(start), float(end))
                answer = prometheus.query(url, expr, at)
                if answer.series is None:
                    task_why["gpu_utilization"] = answer.error
                    if answer.error.startswith("cannot reach") or "did not answer" in answer.error:
                        prometheus_down = answer.error  # the same for every other task: ask once
                elif not answer.series:
                    task_why["gpu_utilization"] = (
                        f"Prometheus has no nexa_gpu_job_info for job {own_id} while it ran "
                        "(no process on its GPUs, or no exporter scraped its node)"
                    )
                else:
                    values = [float(s["value"][1]) for s in answer.series]
                    utilization = job_gpu_utilization([v for v in values if math.isfinite(v)], gpus)
        tasks.append(
            task_figures(
                row.index,
                row.state,
                job_id=row.job_id,
                slurm_job_id=own_id,
                usage=use,
                elapsed=elapsed,
                time_limit=script_limit,
                gpus=gpus,
                gpu_utilization=utilization,
                why=task_why,
            )
        )
    line = run_figures(tasks, rate=rate, rate_why=rate_why)
    return RunEfficiency(
        run_id=st.run_id,
        run_dir=path,
        name=st.name,
        backend=st.backend,
        job_ids=list(st.job_ids),
        tasks=tasks,
        cpu_efficiency=line["cpu_efficiency"],
        mem_efficiency=line["mem_efficiency"],
        time_used=line["time_used"],
        gpu_hours=line["gpu_hours"],
        gpu_utilization=line["gpu_utilization"],
        idle_gpu_hours=line["idle_gpu_hours"],
        rate_usd_per_gpu_hour=rate,
        idle_usd=line["idle_usd"],
        counted=line["counted"],
        unknown=line["unknown"],
    )


def idle_gpu(run: Any = None, *, config: Any = None, prometheus_url: Optional[str] = None) -> IdleGpu:
    """A run's idle GPU-hours and what they cost, for ``cost.report``'s ``idle_usd`` column.

    ``idle_gpu_hours``/``idle_usd`` are None where the utilisation (or the rate) is unknown;
    ``why_unknown`` then says why. Same arguments and errors as ``efficiency``."""
    eff = efficiency(run, config=config, prometheus_url=prometheus_url)
    why = eff.unknown.get("idle_gpu_hours") or eff.unknown.get("idle_usd") or ""
    return IdleGpu(eff.gpu_hours, eff.idle_gpu_hours, eff.idle_usd, eff.gpu_utilization, why)


# --- rendering --------------------------------------------------------------------------

LABELS = {
    "cpu_efficiency": "CPU efficiency",
    "mem_efficiency": "memory efficiency",
    "time_used": "time used of the limit",
    "gpu_utilization": "GPU utilisation",
    "idle_gpu_hours": "idle GPU-hours",
    "gpu_hours": "GPU-hours",
    "idle_usd": "idle cost",
}


def _pct(value: Optional[float]) -> str:
    if value is None:
        return "?"
    return "<1%" if 0 < value < 0.005 else f"{value * 100:.0f}%"


def _num(value: Optional[float], digits: int = 3) -> str:
    return "?" if value is None else f"{value:.{digits}f}"


def render_table(eff: RunEfficiency) -> str:
    """Tasks, the run line, and a footnote per unknown figure (why it is unknown)."""

    head = f"Run {eff.run_id} ({eff.backend}" + (f", jobs {', '.join(eff.job_ids)})" if eff.job_ids else ")")
    rows = []
    for t in eff.tasks:
        if not t.started:
            rows.append([t.index, t.job_id or "", t.state] + [""] * 7)
            continue
        gpu_na = t.gpus == 0
        rows.append(
            [
                t.index,
                t.job_id or "",
                t.state,
                track.format_seconds(t.elapsed) or "?",
                _pct(t.cpu_efficiency),
                _pct(t.mem_efficiency),
                _pct(t.time_used),
                "?" if t.gpus is None else t.gpus,
                "-" if gpu_na else _pct(t.gpu_utilization),
                "-" if gpu_na else _num(t.idle_gpu_hours),
            ]
        )
    headers = ["task", "job", "state", "elapsed", "CPU eff", "mem eff", "time used", "GPUs", "GPU util", "idle GPU-h"]
    table = tabulate(rows, headers=headers, disable_numparse=True)

    def part(name: str, text: str) -> str:
        known, ran = eff.counted.get(name, (0, 0))
        return text + (f" ({known}/{ran} tasks)" if text != "?" and 0 < known < ran else "")

    run_line = (
        f"Run: CPU efficiency {part('cpu_efficiency', _pct(eff.cpu_efficiency))}, "
        f"peak memory efficiency {part('mem_efficiency', _pct(eff.mem_efficiency))}, "
        f"longest time used {part('time_used', _pct(eff.time_used))}, "
        f"{_num(eff.gpu_hours)} GPU-hours at {part('gpu_utilization', _pct(eff.gpu_utilization))} GPU utilisation: "
        f"idle {part('idle_gpu_hours', _num(eff.idle_gpu_hours))} GPU-hours"
        + ("" if eff.idle_usd is None else f" = ${eff.idle_usd:,.2f}")
        + ("" if eff.rate_usd_per_gpu_hour is None else f" at ${eff.rate_usd_per_gpu_hour:g}/GPU-hour")
    )
    shown = {k: v for k, v in eff.unknown.items() if not (k == "idle_usd" and "idle_gpu_hours" in eff.unknown)}
    notes = [f"  {LABELS.get(k, k)} unknown: {v}" for k, v in shown.items()]
    task_notes: Dict[str, List[int]] = {}
    for t in eff.tasks:
        for k, v in t.unknown.items():
            if k not in eff.unknown:
                task_notes.setdefault(f"{LABELS.get(k, k)} unknown for task(s) %s: {v}", []).append(t.index)
    notes += ["  " + (text % ",".join(str(i) for i in idx[:10]) + ("..." if len(idx) > 10 else "")) for text, idx in task_notes.items()]
    return "\n".join([head, table, run_line] + (["Unknown (never guessed):"] + notes if notes else []))
