"""Pipelines: ``--after RUN[:ok|any|corr]``, a run that starts when another one ended.

Slurm does the waiting (``--dependency``); this module decides what to wait for. It reads
each upstream run the way ``nexa status`` does (``gather``), and then, purely:

- ``check`` refuses what can never start: an ``ok``/``corr`` upstream with failed tasks
  (exit 3), a ``corr`` upstream with another task count (exit 2);
- ``targets`` names the upstream jobs (or array elements) still pending or running. A task
  already over needs no dependency, and that is also how an upstream Slurm has forgotten
  (MinJobAge) is handled: its task records say done or failed, and Slurm itself would take
  a dependency on a job it no longer knows as satisfied;
- ``plan`` cuts the downstream run into submissions. ``aftercorr`` pairs array index i of
  the downstream job with array index i of the upstream job, so a downstream task must be
  submitted at the offset its upstream task was: chunks are cut where the upstream's are.

The downstream tasks find the upstream run folder as ``$NEXA_UPSTREAM_RUN_DIR`` and, for
``corr``, their own upstream task's folder as ``$NEXA_UPSTREAM_TASK_DIR`` (``env_lines``).
"""

import shlex
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from . import runs
from .config import NexaConfig
from .errors import ConfigError, Refused
from .structs import frozen, mutable
from .tools import slurm

if TYPE_CHECKING:  # track is imported where an upstream's status is read: only with --after
    from . import track

KINDS = ("ok", "any", "corr")
SHOWN = 10  # task indices named in a message


@frozen
class After:
    """One ``--after RUN[:KIND]`` as given."""

    run: str
    kind: str = "ok"

    @property
    def text(self) -> str:
        return f"{self.run}:{self.kind}"


def parse_after(text: Any) -> After:
    """``RUN``, ``RUN:ok``, ``RUN:any`` or ``RUN:corr`` (a folder path may hold ``:``; only a
    last part without ``/`` is read as the kind)."""
    if not isinstance(text, str) or not text.strip() or "\0" in text or "\n" in text:
        raise ConfigError(f"--after: expected RUN[:ok|any|corr], got {text!r}")
    run, sep, kind = text.rpartition(":")
    if not sep or "/" in kind:
        return After(text)
    if kind not in KINDS:
        raise ConfigError(f"--after: expected RUN[:ok|any|corr], got kind {kind!r} in {text!r}")
    if not run:
        raise ConfigError(f"--after: expected RUN[:ok|any|corr], got no run in {text!r}")
    return After(run, kind)


def parse_afters(items: Any) -> List[After]:
    """Every ``--after`` (a string or a list of them; None is none)."""
    if items is None:
        return []
    if isinstance(items, (str, After)):
        items = [items]
    return [item if isinstance(item, After) else parse_after(item) for item in items]


@mutable
class UpTask:
    """An upstream task now: its state, whether slurmctld still knows it, its latest job."""

    index: int
    state: str
    live: bool = False
    job_id: Optional[str] = None  # the array job (or plain job) of its latest submission
    element: Optional[int] = None  # its array index there; None for a plain job (a launch)

    @property
    def bucket(self) -> str:
        return runs.bucket(self.state)

    @property
    def target(self) -> str:
        return self.job_id if self.element is None else f"{self.job_id}_{self.element}"  # type: ignore[return-value]


@mutable
class Upstream:
    """An upstream run as read for ``--after``."""

    after: After
    run_dir: Path
    run_id: str
    tasks: List[UpTask]
    #: job id -> True when each of its array elements is still some task's latest submission
    #: (then the whole job can be named; a partly resubmitted job is named element by element)
    whole: Dict[str, bool] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.after.kind

    @property
    def count(self) -> int:
        return len(self.tasks)

    def indices(self, bucket: str) -> List[int]:
        return [t.index for t in self.tasks if t.bucket == bucket]


# --- reading the upstream runs (Slurm and the run folders) ---------------------------------


def gather(afters: Sequence[After], config: NexaConfig) -> List[Upstream]:
    """Each ``--after`` run and the state of its tasks now (``nexa status``'s view).

    Raises:
        ConfigError: no such run, or one that was only planned.
    """
    out = []
    for after in afters:
        path = runs.resolve_run(after.run, config)
        run = runs.load_run(path)
        if not run.manifest:
            raise ConfigError(f"--after {after.text}: {path} was planned but not submitted (nexa sweep --submit)")
        if run.manifest.get("kind") == "launch":
            tasks = [_launch_task(run)]
        else:
            from . import track  # lazy: see the imports

            st = track.status(path, config=config)
            where = run.slots()
            tasks = [_task(row, where.get(row.index)) for row in st.tasks]
        out.append(Upstream(after, path, run.run_id, tasks, whole_jobs(run.manifest) if run.backend == "slurm" else {}))
    return out


def _task(row: "track.TaskRow", slot: Optional[runs.Slot]) -> UpTask:
    return UpTask(
        row.index,
        row.state,
        live=row.source in slurm.LIVE_SOURCES,
        job_id=slot.job_id if slot else None,
        element=slot.array_task_id if slot else None,
    )


def _launch_task(run: runs.Run) -> UpTask:
    """A launch is one task: a plain Slurm job (its state from scontrol while Slurm knows it,
    then from its end record), or a local run (its exit code in the manifest)."""
    manifest = run.manifest
    job_ids = [str(j) for j in manifest.get("job_ids") or []]
    if run.backend != "slurm":
        code = manifest.get("exit_code")
        state = "RUNNING" if code is None else "COMPLETED" if code == 0 else "FAILED"
        return UpTask(0, state)
    if not job_ids:
        return UpTask(0, "PLANNED")
    job = job_ids[-1]
    records = slurm.show_job(job)
    if records:
        return UpTask(0, (records[0].get("JobState") or "UNKNOWN").split()[0], live=True, job_id=job)
    _start, end = runs.current_records(runs.task_records(run.path).get(0, {}), None)
    return UpTask(0, runs.record_state(end) if end else "UNKNOWN", job_id=job)


def whole_jobs(manifest: Dict[str, Any]) -> Dict[str, bool]:
    """Job id -> whether every element of it is still the latest submission of its task."""
    where = runs.slots(manifest)
    out: Dict[str, bool] = {}
    for chunk in manifest.get("chunks") or []:
        job = chunk.get("job_id")
        if not job:
            continue
        offset = int(chunk.get("offset", 0))
        out[str(job)] = all((s is not None and s.job_id == str(job)) for s in (where.get(offset + e) for e in runs.chunk_indices(chunk)))
    return out


# --- deciding (pure) -------------------------------------------------------------------------


def _listed(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:SHOWN])
    return shown + (f" and {len(indices) - SHOWN} more" if len(indices) > SHOWN else "")


def check(upstreams: Sequence[Upstream], count: int, what: str = "this run") -> None:
    """Refuse what Slurm could never start, before anything is written or submitted.

    Raises:
        ConfigError: ``corr`` with another task count than ``count`` (exit 2).
        Refused: ``ok``/``corr`` with failed upstream tasks, or tasks that are neither over
            nor known to Slurm (exit 3).
    """
    for up in upstreams:
        if up.kind == "corr" and up.count != count:
            raise ConfigError(
                f"--after {up.after.text}: {up.run_id} has {up.count} task(s) and {what} {count}: "
                "corr pairs task i with task i, so the counts must be equal"
            )
        failed = up.indices("failed")
        if failed and up.kind != "any":
            raise Refused(
                f"refusing --after {up.after.text}: {up.run_id} task(s) {_listed(failed)} failed, so {what} could never start; "
                f"run `nexa resubmit {up.run_id} --failed` first, or use {up.after.run}:any"
            )
        lost = [t.index for t in up.tasks if t.bucket in ("pending", "running") and not (t.live and t.job_id)]
        if lost:
            raise Refused(
                f"refusing --after {up.after.text}: {up.run_id} task(s) {_listed(lost)} are not over and not in Slurm's queue "
                "(never submitted, or running outside Slurm): nothing to wait for"
            )


def targets(up: Upstream) -> List[str]:
    """What a ``ok``/``any`` dependency names: the jobs with a task still pending or running
    (whole, when no element of it was resubmitted since; else element by element)."""
    out: List[str] = []
    for task in up.tasks:
        if task.bucket not in ("pending", "running") or not task.job_id:
            continue
        name = task.job_id if up.whole.get(task.job_id) or task.element is None else task.target
        if name not in out:
            out.append(name)
    return out


@mutable
class Submission:
    """One downstream sbatch: tasks ``offset + i`` for the array indices ``indices``, held
    by the Slurm dependency ``parts`` (all of them; none: it starts at once)."""

    offset: int
    indices: List[int]
    parts: List[str] = field(default_factory=list)

    @property
    def regular(self) -> bool:
        """Indices ``0..n-1``, as the array script's own ``--array`` directive says."""
        return self.indices == list(range(len(self.indices)))

    @property
    def dependency(self) -> Optional[str]:
        return ",".join(self.parts) or None


def plan(count: int, upstreams: Sequence[Upstream], limit: int, *, array: bool = True) -> List[Submission]:
    """The downstream submissions for ``count`` tasks (``check`` has passed).

    Without ``corr``: the usual chunks below MaxArraySize (``limit``), each waiting on every
    ``ok``/``any`` target. With ``corr``: task t joins the submission of its upstream task's
    job at offset ``t - element`` (``aftercorr`` then pairs them index by index); tasks whose
    upstream tasks are all done go in submissions without a corr dependency. A plain job
    (``array=False``, a launch) waits on the element itself with ``afterok``.

    Raises:
        ConfigError: two ``corr`` upstreams put a task at different array indices.
    """
    shared = [slurm.dependency_part(up.kind, targets(up)) for up in upstreams if up.kind != "corr" and targets(up)]
    corr = [up for up in upstreams if up.kind == "corr"]
    if not corr:
        size = max(1, limit)
        return [Submission(o, list(range(min(size, count - o))), list(shared)) for o in range(0, count, size)]
    groups: Dict[Tuple[int, Tuple[str, ...]], List[int]] = {}
    free: List[int] = []
    for t in range(count):
        offset: Optional[int] = None
        parts: List[str] = []
        for up in corr:
            task = up.tasks[t]
            if task.bucket == "done":
                continue
            if task.element is None or not array:  # a plain upstream job, or a plain downstream job
                parts.append(slurm.dependency_part("ok", [task.target]))
                continue
            here = t - task.element
            if offset is not None and here != offset:
                raise ConfigError(
                    f"--after {up.after.text}: task {t} is array index {task.element} of {up.run_id}'s job {task.job_id} "
                    f"but index {t - offset} of the other corr upstream's: one submission cannot pair with both"
                )
            offset = here
            parts.append(slurm.dependency_part("corr", [task.job_id or ""]))
        if not parts:
            free.append(t)
            continue
        if offset is None:  # only afterok on single elements: a submission of its own
            offset = t
        groups.setdefault((offset, tuple(parts)), []).append(t)
    subs = [Submission(o, [t - o for t in ts], shared + list(parts)) for (o, parts), ts in groups.items()]
    subs += [Submission(o, elements, list(shared)) for o, elements in slurm.group_below_limit(free, limit)]
    return sorted(subs, key=lambda s: s.offset + s.indices[0])


def record(upstreams: Sequence[Upstream]) -> List[Dict[str, Any]]:
    """The manifest's ``after``: each upstream run, the kind, and what was decided from what."""
    out = []
    for up in upstreams:
        waiting = [t for t in up.tasks if t.bucket in ("pending", "running")]
        out.append(
            {
                "run_id": up.run_id,
                "run_dir": str(up.run_dir),
                "kind": up.kind,
                "tasks": up.count,
                # "slurm": Slurm waits for the tasks still pending or running; "records": every
                # task was over (done, or failed for `any`), decided from the run's records
                "decided_by": "slurm" if waiting else "records",
                "waiting": len(waiting),
                "done": len(up.indices("done")),
                "failed": up.indices("failed"),
                "targets": targets(up) if up.kind != "corr" else sorted({t.job_id for t in waiting if t.job_id}),
            }
        )
    return out


def env_lines(upstreams: Sequence[Upstream], index: str) -> str:
    """Shell lines for a run's script: ``$NEXA_UPSTREAM_RUN_DIR`` (the first upstream run
    folder), ``$NEXA_UPSTREAM_RUN_DIRS`` (all, ``:``-separated, in ``--after`` order) and, with
    a ``corr`` upstream, ``$NEXA_UPSTREAM_TASK_DIR``: that run's ``out/<i>`` for this task's
    index ``i`` (``index``: a shell expression)."""
    if not upstreams:
        return "# no upstream run (--after)"
    dirs = [str(up.run_dir) for up in upstreams]
    line = f"export NEXA_UPSTREAM_RUN_DIR={shlex.quote(dirs[0])} NEXA_UPSTREAM_RUN_DIRS={shlex.quote(':'.join(dirs))}"
    corr = next((up for up in upstreams if up.kind == "corr"), None)
    if corr is not None:
        line += f"\nexport NEXA_UPSTREAM_TASK_DIR={shlex.quote(str(corr.run_dir / runs.OUT))}/{index}"
    return line
