"""``nexa status``, ``wait``, ``logs``, ``cancel``, ``resubmit``, ``runs``, ``resume``: follow a submitted run."""

import sys
import time
from typing import Any, Callable, Dict, List, Optional

from .common import (
    PROJECT_HELP,
    RUN_HELP,
    OptionalRun,
    color_on,
    echo,
    load_project,
    nexa_task,
    paint_state,
    parse_float,
    parse_int,
    show_path,
    show_value,
    table,
)

#: Above this many tasks (shown), ``status`` prints one line per state unless --all is given.
SUMMARY_ABOVE = 50


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "json": "Print the status as JSON (tasks with index, state, exit_code...); --state picks the tasks.",
        "state": "Only tasks in these states: a bucket (pending, running, done, failed) or a state "
        "(COMPLETED, TIMEOUT...), any case, comma-separated.",
        "summary": f"One line per state (count and task indices) instead of a row per task; the default above {SUMMARY_ABOVE} tasks.",
        "all": f"A row per task however many there are (no summary above {SUMMARY_ABOVE} tasks).",
        "project": PROJECT_HELP,
    },
)
def status(c, run=None, json=False, state=None, summary=False, all=False, project=None):
    """Show every task of a run: state, exit code, node, log.

    Then the counts by state. Big runs get one line per state (--summary; --all for every task).
    """

    from .. import track
    from ..errors import ConfigError
    from ..runs import parse_states

    if summary and all:
        raise ConfigError("choose one of --summary and --all")
    wanted = parse_states(state)
    cfg = load_project(project)
    st = track.status(run, config=cfg)
    if json:
        doc = st.to_json()
        if wanted is not None:
            doc["tasks"] = [t for t in doc["tasks"] if _wanted(t["state"], wanted)]
        echo(status_json(doc))
        return
    shown = render_status(
        st, root=cfg.root, color=color_on(), states=wanted, summary=True if summary else False if all else None, ref=run and st.run_id
    )
    echo(shown)


def status_json(doc: Any) -> str:
    """The status document indented, its tasks one per line: as readable, and written by
    json's C encoder (``indent`` makes json use its pure-Python one: 10,000 tasks)."""
    import json

    tasks = doc.pop("tasks")
    head = json.dumps(doc, indent=2, default=str)
    if not tasks:
        return head[:-2] + ',\n  "tasks": []\n}'
    rows = ",\n".join("    " + json.dumps(task, default=str) for task in tasks)
    return head[:-2] + ',\n  "tasks": [\n' + rows + "\n  ]\n}"


def _wanted(state: str, wanted: Any) -> bool:
    from ..runs import bucket

    return state in wanted or bucket(state) in wanted


def render_status(
    st: Any, root: Any = None, color: bool = False, states: Any = None, summary: Optional[bool] = None, ref: Optional[str] = None
) -> str:
    """The status as ``nexa status`` prints it (pure: data in, text out).

    ``root``: paths are shown relative to it (the project root). ``ref``: how to name the
    run on a command line (None: it is the latest run, named by nothing). ``states``: only tasks in
    these states or buckets (``runs.parse_states``). ``summary``: one line per state;
    None means above ``SUMMARY_ABOVE`` tasks. Columns no task has a value for are left out."""
    head = f"Run {st.run_id} ({st.backend}"
    head += f", jobs {', '.join(st.job_ids)}" if st.job_ids else ""
    head += f", commit {st.commit[:10]}{' (dirty)' if st.dirty else ''})" if st.commit else ")"
    for entry in st.after:
        how = "waited on by Slurm" if entry.get("decided_by") == "slurm" else "already over at submission"
        head += f"\nAfter {entry.get('run_id')} ({entry.get('kind')}): {how}"
    tasks = [t for t in st.tasks if states is None or _wanted(t.state, states)]
    lines = [head]
    auto = summary is None and len(tasks) > SUMMARY_ABOVE
    if summary or auto:
        lines.append(_summary_table(tasks, color))
    elif tasks:
        folder = _log_folder(tasks)
        lines.append(_task_table(st, tasks, root, color, with_log=folder is None))
        if folder is not None:
            run = f" {ref}" if ref else ""
            lines.append(f"logs in {show_path(folder, root)}/; nexa logs{run} -t N prints one")
    else:
        lines.append("(no task in the states asked for)")
    counts = ", ".join(f"{n} {paint_state(state, color)}" for state, n in st.counts.items())
    lines.append(f"{counts}  |  {st.summary()}")
    if auto:
        lines.append(f"({len(tasks)} tasks: one line per state; --all for every task, --state failed for the failed ones)")
    if st.schedule is not None:
        lines += ["", render_schedule(st.schedule)]
    return "\n".join(lines)


def _log_folder(tasks: Any) -> Any:
    """The one folder every task's log is in (the run's logs/), else None (then each task
    shows its own log path)."""
    import os

    folders = {os.path.dirname(str(t.log)) for t in tasks if t.log}
    return folders.pop() if len(folders) == 1 and all(t.log for t in tasks) else None


def _task_table(st: Any, tasks: Any, root: Any, color: bool, with_log: bool = True) -> str:
    from ..track import format_seconds

    place = st.schedule.schedule.locate if st.schedule is not None else None  # a halving run: task -> (rung, trial)
    where = ["task", "rung", "trial"] if place else ["task"]
    columns = where + list(st.keys) + ["state", "exit", "elapsed", "node", "restarts", "reason", "log"]
    rows = []
    for t in tasks:
        rows.append(
            [t.index]
            + (list(place(t.index)) if place else [])
            + [show_value(t.params[k]) if k in t.params else "" for k in st.keys]
            + [
                paint_state(t.state, color),
                "" if t.exit_code is None else t.exit_code,
                format_seconds(t.elapsed),
                t.node or "",
                str(t.restarts or ""),
                t.reason,
                show_path(t.log, root) if t.log and with_log else "",
            ]
        )
    keep = [i for i, name in enumerate(columns) if name in ("task", "state") or any(str(row[i]) != "" for row in rows)]
    numbers = ("task", "rung", "trial", "exit", "elapsed", "restarts")
    right = [keep.index(i) for i, name in enumerate(columns) if name in numbers and i in keep]
    return table([columns[i] for i in keep], [[row[i] for i in keep] for row in rows], right=right)


def render_schedule(sched: Any) -> str:
    """A halving run's rungs: budget, trials, tasks by state, and the decision made."""
    plan = sched.schedule
    head = f"Successive halving by {plan.metric} ({plan.mode}), eta {plan.eta}, {plan.param} {plan.min} -> {plan.max}: {sched.state}"
    rows = []
    for r in sched.rungs:
        b = r.buckets
        counts = [b.get(k, "") for k in ("pending", "running", "done", "failed")] if b else ["", "", "", ""]
        trials = f"{len(r.trials)}" if r.state != "planned" else f"({r.planned})"
        rows.append([r.rung, r.budget, trials, *counts, r.state, r.note])
    text = table(
        ["rung", plan.param, "trials", "pending", "running", "done", "failed", "state", "decision"], rows, right=[0, 1, 2, 3, 4, 5, 6]
    )
    told = sched.message and any(sched.message == r.note or sched.message == r.note.split(" (")[0] for r in sched.rungs)
    return f"{head}\n{text}" + (f"\n{sched.message}" if sched.message and not told else "")


def _summary_table(tasks: Any, color: bool) -> str:
    from ..runs import BUCKETS, bucket

    by_state: Dict[str, List[int]] = {}
    for t in tasks:
        by_state.setdefault(t.state, []).append(t.index)
    order = sorted(by_state, key=lambda s: (BUCKETS.index(bucket(s)), s))
    rows = [[paint_state(s, color), len(by_state[s]), index_ranges(by_state[s])] for s in order]
    return table(["state", "tasks", "which"], rows, right=[1])


def index_ranges(indices: List[int], width: int = 60) -> str:
    """``0-3, 7, 9-12``; cut with ``...`` past ``width`` characters."""
    parts: List[str] = []
    items = sorted(indices)
    start = prev = items[0] if items else 0
    for i in items[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    text = ", ".join(parts) if items else ""
    return text if len(text) <= width else text[: text.rfind(", ", 0, width - 4)] + ", ..."


def progress_printer(stream: Any = None, every: float = 60.0) -> Callable[[Any], None]:
    """On a TTY one line rewritten in place; otherwise a line when the counts change and at
    least every ``every`` seconds (cron, CI logs)."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    started = time.monotonic()
    last = {"text": None, "at": 0.0}

    def show(st: Any) -> None:
        from ..track import format_seconds

        text = f"{st.run_id}: {st.summary()}"
        now = time.monotonic()
        if tty:
            stream.write(f"\r\x1b[K{text}  [{format_seconds(now - started)}]")
            if st.finished:
                stream.write("\n")
            stream.flush()
        elif text != last["text"] or now - last["at"] >= every:
            stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            stream.flush()
            last["text"], last["at"] = text, now

    return show


def wait_and_report(run: Any, config: Any, poll: Optional[float] = None, timeout: Optional[float] = None, every: float = 60.0) -> None:
    """Wait with progress, print the top 5 by their metrics (when they wrote some) and the
    failed tasks, exit 1 when any failed (shared with sweep --wait). ``poll`` None: 300 s."""
    from invoke import Exit

    from .. import track

    poll = track.DEFAULT_POLL if poll is None else poll
    st = track.wait(run, poll=poll, timeout=timeout, progress=progress_printer(every=every), config=config)
    from .results import print_top

    print_top(st.run_dir, config, status=st)
    if st.schedule is not None:
        return _halving_report(st)
    failed = [t for t in st.tasks if t.bucket == "failed"]
    if failed:
        on, root = color_on(), getattr(config, "root", None)
        rows = [
            [t.index, paint_state(t.state, on), "" if t.exit_code is None else t.exit_code, t.reason, show_path(t.log, root)]
            for t in failed
        ]
        echo(table(["task", "state", "exit", "reason", "log"], rows, right=[0, 2]))
        again = f"nexa resubmit {st.run_dir} --failed" + (" --local" if st.backend == "local" else "")
        raise Exit(f"nexa: {len(failed)} of {len(st.tasks)} task(s) failed: {again}", code=1)
    echo(f"{st.run_id}: all {len(st.tasks)} task(s) completed")


# --- a local run's progress and outcome (sweep --local, resubmit --local) ------------------


def local_progress(stream: Any) -> Callable[[Any], None]:
    """``--local`` progress: on a terminal the one line ``nexa wait`` shows, rewritten in
    place; in a pipe a line per finished task."""
    import time

    from .track import progress_printer

    if hasattr(stream, "isatty") and stream.isatty():
        return progress_printer(stream)

    def show(p: Any) -> None:
        r = p.last
        if r is None:
            return
        code = "" if r.exit_code is None else f"exit {r.exit_code}, "
        stream.write(f"{time.strftime('%H:%M:%S')} task {r.index} {r.state} ({code}{r.seconds:.1f} s)  [{p.summary()}]\n")
        stream.flush()

    return show


def finish_local(results: List[Any], stopped_by: Optional[str], run_dir: Any, cfg: Any) -> None:
    """The results table, the first failure's stderr, and the exit: 128 + N when signal N
    stopped the run, 1 when a task failed or was cancelled."""
    import signal

    from invoke import Exit

    from ..errors import Interrupted
    from ..sweep.local import STOP_SIGNALS

    failed = _print_local(results)
    ref = run_ref(run_dir, cfg)
    _print_first_failure(results, ref)
    if stopped_by not in STOP_SIGNALS:
        from .results import print_top

        print_top(run_dir, cfg)
    if stopped_by in STOP_SIGNALS:
        stopped = sum(1 for r in results if r.state == "INTERRUPTED")
        again = f"nexa resubmit {ref} --failed --local"
        message = f"interrupted by SIG{stopped_by}: {stopped} task(s) interrupted and recorded; run them again here: {again}"
        raise Interrupted(message, int(getattr(signal, f"SIG{stopped_by}")))
    if stopped_by == "cancel":
        raise Exit(f"nexa: {ref}: cancelled (nexa cancel); {failed} of {len(results)} task(s) did not complete", code=1)
    if failed:
        raise Exit(f"nexa: {failed} of {len(results)} task(s) failed: nexa resubmit {ref} --failed --local", code=1)


def run_ref(run_dir: Any, cfg: Any) -> str:
    """How to name the run on a command line: its id when it is in the runs folder."""
    import shlex
    from pathlib import Path

    path = Path(run_dir).resolve()
    return shlex.quote(path.name if path.parent == cfg.runs_dir else str(path))


def _print_local(results: List[Any]) -> int:
    on = color_on()
    rows = [
        [r.index, paint_state(r.state, on), "" if r.exit_code is None else r.exit_code, f"{r.seconds:.2f}", r.log if r.ok else r.err]
        for r in results
    ]
    echo(table(["task", "state", "exit", "seconds", "log"], rows, right=[0, 2, 3]))
    failed = sum(1 for r in results if not r.ok)
    others = {}
    for r in results:
        if r.state in ("INTERRUPTED", "CANCELLED"):
            others[r.state.lower()] = others.get(r.state.lower(), 0) + 1
    extra = "".join(f", {n} {state}" for state, n in sorted(others.items()))
    echo(f"{len(rows) - failed} succeeded, {failed} failed" + (f" ({extra[2:]})" if extra else ""))
    return failed


def _print_first_failure(results: List[Any], ref: str) -> None:
    """The cause is usually in the first failed task's stderr: show its end, and the command
    that shows all of it."""
    import sys

    from ..sweep.local import tail

    first = next((r for r in results if r.state == "FAILED"), None)
    if first is None:
        return
    lines, where = tail(first.err), first.err
    if not lines:
        lines, where = tail(first.log), first.log
    err = sys.stderr
    if lines:
        err.write(f"nexa: task {first.index} failed (exit {first.exit_code}); the end of {where}:\n")
        err.write("".join(f"    {line}\n" for line in lines))
    else:
        err.write(f"nexa: task {first.index} failed (exit {first.exit_code}) without any output\n")
    err.write(f"nexa: all of it: nexa logs {ref} --task {first.index}\n")
    err.flush()


# --- a halving run's end (wait, sweep --local, resume) -----------------------------------------


def finish_halving(
    results: List[Any], decisions: List[Any], stopped_by: Optional[str], run_dir: Any, cfg: Any, quiet: bool = False
) -> None:
    """The end of a halving run's rungs here (sweep --local, resume): the tasks, each rung's
    decision, the top results; exit 0 with a winner (failed trials are never promoted and do
    not fail it), 128 + N when signal N stopped it, else 1. ``quiet``: no text on stdout (--json)."""
    import signal
    from pathlib import Path

    from invoke import Exit

    from .. import runs
    from ..errors import Interrupted
    from ..sweep import rungs
    from ..sweep.local import STOP_SIGNALS

    run_dir = Path(run_dir)
    ref = run_ref(run_dir, cfg)
    schedule = rungs.schedule_of(runs.load_run(run_dir).spec)
    param = schedule.param if schedule is not None else "budget"
    if not quiet:
        _print_local(results)
        for d in decisions:
            echo(f"rung {d.rung} ({param}={d.budget}): {d.summary()}")
    if stopped_by in STOP_SIGNALS:
        stopped = sum(1 for r in results if r.state == "INTERRUPTED")
        message = f"interrupted by SIG{stopped_by}: {stopped} task(s) interrupted and recorded; continue here: nexa resume {ref}"
        raise Interrupted(message, int(getattr(signal, f"SIG{stopped_by}")))
    if stopped_by == "cancel":
        raise Exit(f"nexa: {ref}: cancelled (nexa cancel); nexa resume {ref} continues it", code=1)
    if not quiet:
        from .results import print_top

        print_top(run_dir, cfg)
    last = decisions[-1] if decisions else None
    if last is not None and last.winner is not None:
        if not quiet:
            echo(f"{run_dir.name}: {last.summary()} at {param}={last.budget}")
        return
    _print_first_failure(results, ref)
    why = last.summary() if last is not None else "no rung was decided"
    raise Exit(f"nexa: {run_dir.name}: the schedule ended without a winner: {why}", code=1)


def _halving_report(st: Any) -> None:
    """The end of a halving run: its rungs; exit 0 with a winner, else 1. Trials that failed
    are listed: they were never promoted, and do not fail a schedule that found its winner."""
    from invoke import Exit

    echo(render_schedule(st.schedule))
    failed = [t for t in st.tasks if t.bucket == "failed"]
    if failed:
        place = st.schedule.schedule.locate
        listed = ", ".join(f"trial {place(t.index)[1]} (rung {place(t.index)[0]}, {t.state})" for t in failed)
        echo(f"{len(failed)} task(s) failed and were not promoted: {listed}")
    if st.schedule.state == "finished":
        echo(f"{st.run_id}: schedule finished: {st.schedule.message}")
        return
    raise Exit(f"nexa: {st.run_id}: schedule {st.schedule.state}: {st.schedule.message} (nexa resume {st.run_dir} continues it)", code=1)


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "poll": "Longest pause between Slurm polls in seconds (they start 2 s apart and double while Slurm brings no news; default 300).",
        "timeout": "Give up after this many seconds (exit 124).",
        "every": "Without a TTY: print a progress line at least this often, in seconds (default 60).",
        "project": PROJECT_HELP,
    },
)
def wait(c, run=None, poll=None, timeout=None, every=None, project=None):
    """Wait until every task of a run has ended, with progress.

    A halving run: every rung. Exits 1 when any task failed (a halving run: when it ends
    without a winner), 124 on --timeout.
    """
    wait_and_report(
        run,
        load_project(project),
        poll=parse_float(poll, "--poll", minimum=0) or None,
        timeout=parse_float(timeout, "--timeout", minimum=0),
        every=parse_float(every, "--every", minimum=0) or 60.0,
    )


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "task": "Task index (default: the first failed task, else the first running, else 0).",
        "follow": "Keep printing as the task writes, until it ends (Ctrl-C to stop).",
        "project": PROJECT_HELP,
    },
)
def logs(c, run=None, task=None, follow=False, project=None):
    """Print a task's output, or follow it as it grows.

    stdout, then stderr to stderr; --follow streams both until the task ends.
    """
    from .. import track
    from ..errors import ConfigError

    cfg = load_project(project)
    found = track.logs(run, parse_int(task, "--task"), config=cfg)
    if found.out is None:
        raise ConfigError(f"task {found.index} has no log yet ({found.state}): it has not been submitted")
    streams = [sys.stdout, sys.stderr]
    if not follow:
        missing = True
        for i, path in enumerate([found.out, found.err]):
            if path is not None and path.exists():
                missing = False
                streams[i].write(path.read_bytes().decode("utf-8", "replace"))
                streams[i].flush()
        if missing:
            echo(f"task {found.index} ({found.state}): no output yet at {found.out}")
        return
    print(f"==> task {found.index} ({found.state}): {found.out}", file=sys.stderr, flush=True)
    done = track.task_finished(run, found.index, config=cfg)
    for i, text in track.follow([found.out, found.err], done=done):
        streams[i].write(text)
        streams[i].flush()


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "task": "Cancel only this task index (default: every job of the run).",
        "dry_run": "Print the scancel command (a local run: the kill of its runner) instead of running it.",
        "project": PROJECT_HELP,
    },
)
def cancel(c, run=None, task=None, dry_run=False, project=None):
    """Cancel a run's Slurm jobs, or one task.

    A task that already ended is not an error; a local run's runner stops and records them.
    A halving run: its current rung and promotion job (nexa resume continues it).
    """
    from .. import control

    result = control.cancel(run, parse_int(task, "--task"), dry_run=dry_run, config=load_project(project))
    if result.finished:
        echo(f"{result.run_id}: task {result.finished[0]} had already ended; nothing to cancel")
    elif dry_run:
        return
    elif result.runner is not None:
        tasks = ", ".join(str(i) for i in result.tasks)
        echo(f"{result.run_id}: cancelled task(s) {tasks} (local runner pid {result.runner})")
        if result.unrecorded:
            waiting = ", ".join(str(i) for i in result.unrecorded)
            echo(f"{result.run_id}: task(s) {waiting} still stopping; nexa status {result.run_id} shows when they are recorded")
    else:
        echo(f"{result.run_id}: cancelled {', '.join(result.job_ids) or 'nothing'}")


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "failed": "Resubmit the failed, timed-out, cancelled and interrupted tasks (required: nothing else is resubmitted).",
        "local": "A run that ran locally: run those tasks again here, in the foreground, as `sweep --local` does.",
        "wait": "Then wait for them, as `nexa wait`.",
        "dry_run": "Print the sbatch commands (--local: each task's command) instead of running anything.",
        "project": PROJECT_HELP,
    },
)
def resubmit(c, run=None, failed=False, local=False, wait=False, dry_run=False, project=None):
    """Submit the failed tasks of a run again (--failed, --local).

    One array of just those tasks (--array=3,7,9), recorded in the same manifest.
    """
    import sys

    from .. import control
    from ..errors import ConfigError

    if not failed:
        raise ConfigError("resubmit needs --failed (the only selection there is)")
    if local and wait:
        raise ConfigError("--wait goes without --local (--local always waits)")
    cfg = load_project(project)
    progress = None
    if local and not dry_run:
        progress = local_progress(sys.stderr)
    result = control.resubmit_failed(run, dry_run=dry_run, config=cfg, local=local, progress=progress)
    for line in result.warnings:
        print(f"nexa: warning: {line}", file=sys.stderr, flush=True)
    if not result.indices:
        echo(f"{result.run_id}: no failed tasks; nothing to resubmit")
        return
    if dry_run:
        return
    if local:
        from .. import runs

        finish_local(result.local_results, result.stopped_by, runs.resolve_run(run, cfg), cfg)
        echo(f"{result.run_id}: all {len(result.indices)} task(s) run again here completed")
        return
    arrays = "; ".join(f"job {ch['job_id']}: offset {ch['offset']} array {ch['array']}" for ch in result.chunks)
    echo(f"{result.run_id}: resubmitted {len(result.indices)} task(s) {result.indices} ({arrays})")
    if wait:
        wait_and_report(run, cfg)


@nexa_task(
    help={
        "campaign": "Only runs of this campaign.",
        "state": "Only runs in this state: planned, pending, running, done or failed.",
        "limit": "At most this many runs, the newest (default: all).",
        "json": "Print the runs as JSON (run_id, name, campaign, backend, state, buckets, actual_usd, age_seconds...).",
        "project": PROJECT_HELP,
    }
)
def runs(c, campaign=None, state=None, limit=None, json=False, project=None):
    """List the runs, newest first: tasks by state, cost, age.

    The runs under the runs folder, with name, campaign and backend.
    """
    import json as _json
    import time

    from tabulate import tabulate

    from ..run_list import format_age, list_runs

    cfg = load_project(project)
    found = list_runs(cfg, campaign=campaign, state=state, limit=parse_int(limit, "--limit", minimum=1))
    now = time.time()
    if json:
        echo(_json.dumps([r.to_json(now) for r in found.runs], indent=2))
        return
    if not found.runs:
        echo(f"no runs in {cfg.runs_dir}" + (" matching the filters" if campaign or state else ""))
        return
    rows = [
        [r.run_id, r.name, r.campaign or "", r.backend, r.state, _tasks_text(r), _cost_text(r), format_age(now - r.created)]
        for r in found.runs
    ]
    echo(tabulate(rows, headers=["run", "name", "campaign", "backend", "state", "tasks", "cost", "age"], disable_numparse=True))


def _tasks_text(r: Any) -> str:
    b = r.buckets
    parts = [f"{b['done']}/{r.tasks} done"]
    shown = ("failed", "running") if r.state in ("pending", "planned") else ("failed", "running", "pending")
    parts += [f"{b[k]} {k}" for k in shown if b[k]]
    return ", ".join(parts)


def _cost_text(r: Any) -> str:
    """Actual spend so far as last reconciled; else the estimate, marked as one."""
    if r.actual_usd is not None:
        return f"${r.actual_usd:,.2f}"
    if r.estimated_usd is not None:
        return f"~${r.estimated_usd:,.2f} est."
    return "-"


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "wait": "Then follow the schedule to its end, as `nexa wait`.",
        "dry_run": "Print the sbatch commands (or what would run); submit, decide and write nothing.",
        "json": "Print what was done as JSON (action, message, indices, job_ids, promote_job_id, decision).",
        "project": PROJECT_HELP,
    },
)
def resume(c, run=None, wait=False, dry_run=False, json=False, project=None):
    """Continue a halving run from its last complete rung.

    After cancel, a failed promotion job, or an interrupted --local run.
    """
    import json as _json
    import sys

    from ..sweep import halving

    cfg = load_project(project)
    progress = None if dry_run else local_progress(sys.stderr)
    result = halving.resume(run, dry_run=dry_run, config=cfg, progress=progress)
    if json:
        echo(_json.dumps(result.to_json(), indent=2))
    if result.action == "local":  # the rungs ran here: their tasks, decisions and end, as sweep --local
        finish_halving(result.results, [result.decision] if result.decision else [], result.stopped_by, result.run_dir, cfg, quiet=json)
    elif not json:
        echo(f"{result.run_id}: {result.message}")
    if wait and not dry_run and result.action not in ("nothing", "local"):
        wait_and_report(run or result.run_id, cfg)


TASKS = [status, wait, logs, cancel, resubmit, runs, resume]
