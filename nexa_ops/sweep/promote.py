"""The promotion job of a halving sweep, and the steps it shares with ``nexa sweep`` and
``nexa resume``: submit a rung, submit its promotion job, decide a rung.

A promotion job is a one-CPU Slurm job that waits (``--dependency=afterany``) for every
array job of rung ``k``, then:

1. reads each trial's end record and the last value of the metric in its metrics file;
2. decides who goes on (``search.decide``) and writes ``rungs/<k>.json`` atomically, unless
   a decision is already there (then that one is used: deciding twice gives one decision);
3. submits rung ``k + 1`` as one job array (chunked below MaxArraySize) and the next
   promotion job, each recorded in the manifest at once (``runs.add_submission`` and
   ``runs.set_rung``) and billed in the run's cost manifest; a rung already recorded is
   never submitted again.

All of it holds ``rungs/.lock``, which ``nexa cancel`` takes too: a run cancelled before the
lock is had stops here, with no decision and no next rung. A failure is recorded in
``rungs/<k>.error.json`` and the job exits 1, so ``nexa status`` says so.

It runs on a compute node from the same place as the worker (``nexa.pyz/site-packages`` or
the package folder), with ``python3 -S`` and the standard library only: everything it needs
is in the manifest, written when the sweep was submitted (nexa.toml is not read here).
"""

import os
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import runs
from ..cost.book import check_writable, manifest_path, record_resubmission, update_manifest
from ..errors import NexaError
from ..results import metrics as metrics_files
from ..structs import mutable
from ..tools import slurm
from . import rungs
from .search import Decision, Outcome, Schedule, decide

#: Variables Slurm sets in a job that would leak into the next rung's jobs (say, a stale
#: SLURM_MEM_PER_CPU beside their --mem): the promotion job drops them before submitting,
#: so every rung starts from the environment rung 0 was submitted from.
KEEP_SLURM_VARS = ("SLURM_CONF",)


class PromotionError(NexaError):
    """A rung cannot be decided or continued (no such rung, a run that is not a halving run)."""


@mutable
class Advance:
    """What one promotion step did."""

    rung: int
    decision: Optional[Decision] = None
    cancelled: bool = False
    next_job_ids: Optional[List[str]] = None  # the next rung's arrays submitted now ([]: already there)
    promote_job_id: Optional[str] = None  # the next promotion job submitted now

    def text(self) -> str:
        if self.cancelled:
            return f"rung {self.rung}: the run was cancelled: no decision, no next rung"
        assert self.decision is not None
        lines = [f"rung {self.rung}: {self.decision.summary()}"]
        if self.next_job_ids:
            lines.append(f"rung {self.rung + 1}: submitted job array {', '.join(self.next_job_ids)}")
        elif self.next_job_ids == []:
            lines.append(f"rung {self.rung + 1}: already submitted")
        if self.promote_job_id:
            lines.append(f"rung {self.rung + 1}: promotion job {self.promote_job_id}")
        return "\n".join(lines)


# --- reading a rung --------------------------------------------------------------------------


def schedule_in(manifest: Dict[str, Any]) -> Schedule:
    schedule = rungs.schedule_of(manifest)
    if schedule is None:
        raise PromotionError("not a halving run: its manifest has no readable search schedule")
    return schedule


def entry_of(manifest: Dict[str, Any], rung: int) -> Optional[Dict[str, Any]]:
    return next((e for e in manifest.get("rungs") or [] if isinstance(e, dict) and e.get("rung") == rung), None)


def outcomes(run_dir: Path, schedule: Schedule, manifest: Dict[str, Any], rung: int, trials: Sequence[int]) -> List[Outcome]:
    """Each trial's state (from its end record; records of an earlier submission of the same
    task do not count) and the last value it reported of the schedule's metric."""
    where = runs.slots(manifest) if manifest.get("backend") == "slurm" else {}
    warn = slurm.warn_signal_of(_script_text(manifest))
    out = []
    for trial in trials:
        index = schedule.index(rung, trial)
        _, end = runs.current_records(runs.task_record(run_dir, index), where.get(index))
        state = runs.record_state(end, warn) if "exit_code" in end else None
        found = metrics_files.summarise(metrics_files.read(metrics_files.metrics_path(run_dir, index)))
        out.append(Outcome(trial, state, found.last.get(schedule.metric)))
    return out


def _script_text(manifest: Dict[str, Any]) -> str:
    try:
        with open(str(manifest.get("script") or ""), encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def decide_rung(run_dir: Path, manifest: Dict[str, Any], rung: int, by: str) -> Decision:
    """Rung ``rung``'s decision: the one on disk, else made now and written. Hold ``rungs.locked``."""
    found = rungs.read_decision(run_dir, rung)
    if found is not None:
        return found
    schedule = schedule_in(manifest)
    entry = entry_of(manifest, rung)
    if entry is None:
        raise PromotionError(f"rung {rung} was never submitted: nothing to decide")
    results = outcomes(run_dir, schedule, manifest, rung, [int(t) for t in entry.get("trials") or []])
    return rungs.write_decision(run_dir, decide(schedule, rung, results, decided_at=runs.now_iso(), by=by))


# --- submitting ------------------------------------------------------------------------------


#: One submission: tasks ``offset + i`` for the array indices, held by the Slurm dependency
#: parts (``tools.slurm.dependency_part``; none: it starts at once).
Group = Tuple[int, List[int], List[str]]


def submit_rung(
    run_dir: Path,
    manifest: Dict[str, Any],
    rung: int,
    trials: Sequence[int],
    *,
    by: str,
    by_job: Optional[str] = None,
    dry_run: bool = False,
    on_chunk: Optional[Callable[[Dict[str, Any], Dict[int, Dict[str, Any]]], None]] = None,
    groups: Optional[Sequence[Group]] = None,
    commands: Optional[List[List[str]]] = None,
) -> Dict[str, Any]:
    """Submit ``trials`` of ``rung`` as one job array (several when the task indices span
    more than MaxArraySize), recording each accepted array in the manifest at once (the
    first one adds the rung's entry); return the entry (``promote_job_id`` still unset).
    ``on_chunk(chunk, replaced)`` bills each array (default: add it to the cost manifest);
    ``groups`` and ``commands`` as for ``submit_indices``."""
    schedule = schedule_in(manifest)
    entry: Dict[str, Any] = {
        "rung": rung,
        "budget": schedule.rungs[rung].budget,
        "trials": sorted(int(t) for t in trials),
        "job_ids": [],
        "promote_job_id": None,
        "submitted_at": runs.now_iso(),
        "by": by,
        "by_job": by_job,
        "submitting_since": time.time(),
    }
    indices = [schedule.index(rung, t) for t in entry["trials"]]
    entry["job_ids"] = submit_indices(
        run_dir, manifest, indices, dry_run=dry_run, entry=entry, on_chunk=on_chunk, groups=groups, commands=commands
    )
    return entry



def submit_indices(
    run_dir: Path,
    manifest: Dict[str, Any],
    indices: Sequence[int],
    *,
    dry_run: bool = False,
    entry: Dict[str, Any],
    resubmit: Optional[int] = None,
    on_chunk: Optional[Callable[[Dict[str, Any], Dict[int, Dict[str, Any]]], None]] = None,
    groups: Optional[Sequence[Group]] = None,
    commands: Optional[List[List[str]]] = None,
) -> List[str]:
    """Submit these task indices with the run's array script (``--array=<list>`` at an
    offset, as ``nexa resubmit`` does), add each array to ``entry`` and the manifest, and
    bill it. ``resubmit``: the tasks ran before (their old records are kept for the bill).
    ``groups``: the submissions already cut (rung 0 of a run with ``--after``: by
    ``pipeline.plan``, with their dependencies), else cut below MaxArraySize here.
    ``commands``: each sbatch command is added to it (a dry run's ``artifacts.commands``).
    The cost book is checked first, as for every submission (``cost.book.check_writable``)."""
    search = manifest["search"]
    throttle = search.get("max_parallel")
    limit = int(search.get("array_limit") or slurm.DEFAULT_MAX_ARRAY_SIZE)
    job_ids: List[str] = []
    where = runs.slots(manifest)
    if not dry_run:
        _check_book(manifest)
    cut = list(groups) if groups is not None else [(o, e, []) for o, e in slurm.group_below_limit(indices, limit)]
    for offset, elements, parts in cut:
        submitted_at = time.time()
        options = [f"--array={slurm.list_spec(elements, throttle)}", *slurm.dependency_options(parts)]
        if commands is not None:
            commands.append(slurm.sbatch_argv(str(manifest["script"]), options, [str(offset)]))
        job_id = slurm.sbatch(str(manifest["script"]), options=options, args=[str(offset)], dry_run=dry_run)
        job_ids.append(job_id)
        if dry_run:
            continue
        chunk = {
            "offset": offset,
            "count": len(elements),
            "job_id": job_id,
            "array": slurm.list_spec(elements),
            "submitted_at": submitted_at,
            "rung": entry["rung"],
        }
        if parts:
            chunk["dependency"] = ",".join(parts)
        if resubmit is not None:
            chunk["resubmit"] = resubmit
        replaced = {}
        if resubmit is not None:
            for element in elements:
                start, end = runs.current_records(runs.task_record(run_dir, offset + element), where.get(offset + element))
                replaced[offset + element] = {**start, **end}
        entry.setdefault("job_ids", []).append(job_id)
        if not any(e is entry for e in manifest.setdefault("rungs", [])):
            runs.set_rung(run_dir, manifest, entry)
        runs.add_submission(run_dir, manifest, chunk)  # writes the entry's new job id with the chunk
        (on_chunk or partial(_bill, manifest))(chunk, replaced)
    return job_ids


def submit_promotion(
    run_dir: Path,
    manifest: Dict[str, Any],
    entry: Dict[str, Any],
    after: Sequence[str],
    *,
    dry_run: bool = False,
    commands: Optional[List[List[str]]] = None,
) -> str:
    """Submit rung ``entry``'s promotion job, to start once every job in ``after`` has ended
    (``afterany``: failed and cancelled tasks count as ended), and record it. ``commands``:
    the sbatch command is added to it."""
    search = manifest["search"]
    rung = int(entry["rung"])
    options = [slurm.job_log(search["log_dir"], f"promote-{rung}")]
    if after:
        options.insert(0, slurm.afterany(after))
    if commands is not None:
        commands.append(slurm.sbatch_argv(str(search["promote_script"]), options, [str(rung)]))
    job_id = slurm.sbatch(str(search["promote_script"]), options=options, args=[str(rung)], dry_run=dry_run)
    if not dry_run:
        earlier = entry.get("promote_job_id")
        if earlier and earlier != job_id:
            entry.setdefault("earlier_promote_job_ids", []).append(earlier)
        entry["promote_job_id"] = job_id
        entry.pop("submitting_since", None)
        runs.set_rung(run_dir, manifest, entry)
    return job_id


def _check_book(manifest: Dict[str, Any]) -> None:
    """The run's cost manifest can still be written (where it has one): else nothing is
    submitted, as ``nexa sweep --submit`` checks before its first array."""
    folder = manifest.get("search", {}).get("runs_dir")
    if folder and manifest_path(Path(folder), str(manifest.get("run_id"))).is_file():
        check_writable(Path(folder), str(manifest.get("run_id")))


def _bill(manifest: Dict[str, Any], chunk: Dict[str, Any], replaced: Dict[int, Dict[str, Any]]) -> None:
    """Add a rung's array to the run's cost manifest (where it has one), like a resubmission."""
    folder = manifest.get("search", {}).get("runs_dir")
    if folder:
        record_resubmission(Path(folder), str(manifest.get("run_id")), [chunk], replaced)


def _settle_cost(manifest: Dict[str, Any]) -> None:
    """At the end of the schedule the cost manifest's task count becomes the tasks that really
    ran (the estimate counted every rung full), so reconciling can call the run finished."""
    folder = manifest.get("search", {}).get("runs_dir")
    path = manifest_path(Path(folder), str(manifest.get("run_id"))) if folder else None
    if path is None or not path.is_file():
        return
    count = len({(e.get("rung"), t) for e in manifest.get("rungs") or [] if isinstance(e, dict) for t in e.get("trials") or []})

    def change(doc: Dict[str, Any]) -> Dict[str, Any]:
        if doc:
            doc["tasks"] = count
        return doc

    update_manifest(path, change)


# --- one step of the schedule ----------------------------------------------------------------


def advance(run_dir: Path, rung: int, *, by: str, by_job: Optional[str] = None, submit: bool = True) -> Advance:
    """Decide ``rung`` (or reuse its decision) and, with ``submit``, make sure the next rung
    and its promotion job are submitted, each exactly once. Stops at once when the run was
    cancelled. Holds ``rungs/.lock`` throughout."""
    run_dir = Path(run_dir)
    with rungs.locked(run_dir):
        manifest = runs.read_manifest(run_dir)
        problem = runs.run_manifest_problem(manifest)
        if problem:
            raise PromotionError(f"{run_dir / runs.MANIFEST}: not a nexa run manifest: {problem}")
        if manifest.get("cancelled"):
            return Advance(rung, cancelled=True)
        return step(run_dir, manifest, rung, by=by, by_job=by_job, submit=submit)


def step(run_dir: Path, manifest: Dict[str, Any], rung: int, *, by: str, by_job: Optional[str] = None, submit: bool = True) -> Advance:
    """``advance`` for a caller that holds ``rungs.locked`` and has read ``manifest``."""
    decision = decide_rung(run_dir, manifest, rung, by)
    result = Advance(rung, decision)
    if decision.final:
        _settle_cost(manifest)
        return result
    if not submit or manifest.get("backend") != "slurm":  # a local run goes on in its own loop
        return result
    entry = entry_of(manifest, rung + 1)
    if entry is None:
        entry = submit_rung(run_dir, manifest, rung + 1, decision.promoted, by=by, by_job=by_job)
        result.next_job_ids = list(entry["job_ids"])
    else:
        result.next_job_ids = []
    if not entry.get("promote_job_id"):
        result.promote_job_id = submit_promotion(run_dir, manifest, entry, entry.get("job_ids") or [])
    return result


# --- the job's entry point -------------------------------------------------------------------

USAGE = "usage: python3 -S -c <script.PROMOTE_STUB> NEXA_PATH --run RUN_DIR --rung K"


def parse_args(argv: Sequence[str]) -> Dict[str, str]:
    opts: Dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--run", "--rung"):
            if not eq:
                value = next(it, "")
            opts[name[2:]] = value
        elif arg in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        else:
            raise PromotionError(f"unexpected argument {arg!r}; {USAGE}")
    if not opts.get("run") or not opts.get("rung", "").isdigit():
        raise PromotionError(f"--run DIR and --rung K are required; {USAGE}")
    return opts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Decide one rung and continue the schedule; exit 1 (with ``rungs/<k>.error.json``) on failure."""
    argv = sys.argv[1:] if argv is None else argv
    job = os.environ.get("SLURM_JOB_ID")
    for key in list(os.environ):
        if key.startswith(("SLURM_", "SLURMD_")) and key not in KEEP_SLURM_VARS:
            del os.environ[key]
    try:
        opts = parse_args(argv)
    except PromotionError as exc:
        print(f"nexa promote: error: {exc}", file=sys.stderr)
        return 2
    run_dir, rung = Path(opts["run"]), int(opts["rung"])
    by = f"promotion job {job}" if job else "nexa promote"
    started = time.time()
    try:
        result = advance(run_dir, rung, by=by, by_job=job)
    except Exception as exc:  # noqa: BLE001 - every failure must leave its record
        if not isinstance(exc, (NexaError, OSError)):
            traceback.print_exc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        try:
            rungs.write_error(run_dir, rung, {"at": runs.now_iso(), "job_id": job, "by": by, "error": message})
        except OSError as again:
            print(f"nexa promote: error: cannot record the failure: {again}", file=sys.stderr)
        print(f"nexa promote: error: rung {rung}: {message}", file=sys.stderr)
        return 1
    print(f"{result.text()}\n({time.time() - started:.2f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
