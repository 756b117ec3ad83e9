"""Actual use: GPU-hours of what ran, from the worker's task records or from sacct.

Pure: records arrive as dicts and accounting as parsed sacct rows, so it is tested without
files or tools. States are the run folder's one vocabulary (``runs.bucket``).
"""

from typing import Any, Dict, Mapping, Sequence, Tuple

from ..runs import bucket, is_final
from ..structs import frozen
from ..tools.slurm import SacctRow, job_number


@frozen
class Actual:
    """What finished tasks really used. ``done`` = ok + failed; ``running`` = started, no end."""

    gpu_hours: float
    usd: float
    ok: int
    failed: int
    running: int
    source: str  # "worker" | "sacct"

    @property
    def done(self) -> int:
        return self.ok + self.failed


def actual_from_records(records: Mapping[int, Mapping[str, Any]], gpus_per_task: int, rate: float) -> Actual:
    """Actual use from the worker's task records (``start`` from ``<i>.start.json``; ``end``
    and ``exit_code`` from ``<i>.end.json``). A task that ended without a start record never
    got to run its program and counts zero time; clocks are trusted to the second."""
    seconds = 0.0
    ok = failed = running = 0
    for rec in records.values():
        end = rec.get("end")
        if end is None:
            if rec.get("start") is not None:
                running += 1
            continue
        start = rec.get("start")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)):
            seconds += max(0.0, float(end) - float(start))
        if rec.get("exit_code") == 0:
            ok += 1
        else:
            failed += 1
    gpu_hours = seconds / 3600.0 * gpus_per_task
    return Actual(gpu_hours, gpu_hours * rate, ok, failed, running, "worker")


def actual_from_sacct(
    rows: Sequence[SacctRow], offsets: Mapping[str, int], gpus_per_task: int, rate: float, *, array: bool = True
) -> Tuple[Actual, Dict[int, str]]:
    """Actual use from accounting: elapsed x allocated GPUs per finished array element.

    ``offsets`` maps each chunk's job id to its first task index; returns the Actual and the
    task index -> state of each finished element. Unlike the worker's records this also
    bills tasks killed at their time limit. For an ``array``, a row without an element
    (``57`` rather than ``57_3``) is skipped: slurmdbd shows an element so for a few seconds,
    until it has recorded which one it is. A plain job (``array=False``) is task 0.
    """
    seconds_gpus = 0.0
    latest: Dict[int, SacctRow] = {}
    # A resubmitted task appears once per job, a requeued one once per attempt (sacct -D):
    # every attempt is billed, the latest one (the higher job id, then sacct's order) says
    # how the task ended.
    for row in sorted(rows, key=lambda r: job_number(r.job_id)):
        base, _, element = row.job_id.partition("_")
        if base not in offsets or "[" in element or (array and not element):
            continue  # a pending range like 12_[3-9], an element not yet recorded as one, another job
        index = offsets[base] + (int(element) if element.isdigit() else 0)
        latest[index] = row
        if is_final(row.state) or row.state == "REQUEUED":  # a requeued attempt ran too
            seconds_gpus += row.elapsed * (row.gpus if row.gpus is not None else gpus_per_task)
    ok = failed = running = 0
    states: Dict[int, str] = {}
    for index, row in latest.items():
        if not is_final(row.state):
            if bucket(row.state) == "running":
                running += 1
            continue
        states[index] = row.state
        if row.state == "COMPLETED" and row.exit_code.split(":")[0] == "0":
            ok += 1
        else:
            failed += 1
    gpu_hours = seconds_gpus / 3600.0
    return Actual(gpu_hours, gpu_hours * rate, ok, failed, running, "sacct"), states
