"""``nexa status``, ``wait``, ``logs``, ``cancel``, ``resubmit``: follow a submitted run."""

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
    import json as _json

    from .. import track
    from ..errors import ConfigError
    from ..results.load import parse_states

    if summary and all:
        raise ConfigError("choose one of --summary and --all")
    wanted = parse_states(state)
    cfg = load_project(project)
    st = track.status(run, config=cfg)
    if json:
        doc = st.to_json()
        if wanted is not None:
            doc["tasks"] = [t for t in doc["tasks"] if _wanted(t["state"], wanted)]
        echo(_json.dumps(doc, indent=2, default=str))
        return
    shown = render_status(
        st, root=cfg.root, color=color_on(), states=wanted, summary=True if summary else False if all else None, ref=run and st.run_id
    )
    echo(shown)


def _wanted(state: str, wanted: Any) -> bool:
    from ..runs import bucket

    return state in wanted or bucket(state) in wanted


def render_status(
    st: Any, root: Any = None, color: bool = False, states: Any = None, summary: Optional[bool] = None, ref: Optional[str] = None
) -> str:
    """The status as ``nexa status`` prints it (pure: data in, text out).

    ``root``: paths are shown relative to it (the project root). ``ref``: how to name the
    run on a command line (None: it is the latest run, named by nothing). ``states``: only tasks in
    these states or buckets (``results.load.parse_states``). ``summary``: one line per state;
    None means above ``SUMMARY_ABOVE`` tasks. Columns no task has a value for are left out."""
    head = f"Run {st.run_id} ({st.backend}"
    head += f", jobs {', '.join(st.job_ids)})" if st.job_ids else ")"
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
    return "\n".join(lines)


def _log_folder(tasks: Any) -> Any:
    """The one folder every task's log is in (the run's logs/), else None (then each task
    shows its own log path)."""
    import os

    folders = {os.path.dirname(str(t.log)) for t in tasks if t.log}
    return folders.pop() if len(folders) == 1 and all(t.log for t in tasks) else None


def _task_table(st: Any, tasks: Any, root: Any, color: bool, with_log: bool = True) -> str:
    from ..track import format_seconds

    columns = ["task"] + list(st.keys) + ["state", "exit", "elapsed", "node", "restarts", "reason", "log"]
    rows = []
    for t in tasks:
        rows.append(
            [t.index]
            + [show_value(t.params[k]) if k in t.params else "" for k in st.keys]
            + [
                paint_state(t.state, color),
                "" if t.exit_code is None else t.exit_code,
                format_seconds(t.elapsed),
                t.node or "",
                t.restarts or "",
                t.reason,
                show_path(t.log, root) if t.log and with_log else "",
            ]
        )
    keep = [i for i, name in enumerate(columns) if name in ("task", "state") or any(str(row[i]) != "" for row in rows)]
    right = [keep.index(i) for i, name in enumerate(columns) if name in ("task", "exit", "elapsed", "restarts") and i in keep]
    return table([columns[i] for i in keep], [[row[i] for i in keep] for row in rows], right=right)


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


def wait_and_report(run: Any, config: Any, poll: float = 5.0, timeout: Optional[float] = None, every: float = 60.0) -> None:
    """Wait with progress, print the top 5 by their metrics (when they wrote some) and the
    failed tasks, exit 1 when any failed (shared with sweep --wait)."""
    from invoke import Exit

    from .. import track

    st = track.wait(run, poll=poll, timeout=timeout, progress=progress_printer(every=every), config=config)
    from .results import print_top

    print_top(st.run_dir, config, status=st)
    failed = [t for t in st.tasks if t.bucket == "failed"]
    if failed:
        on, root = color_on(), getattr(config, "root", None)
        rows = [
            [t.index, paint_state(t.state, on), "" if t.exit_code is None else t.exit_code, t.reason, show_path(t.log, root)]
            for t in failed
        ]
        echo(table(["task", "state", "exit", "reason", "log"], rows, right=[0, 2]))
        raise Exit(f"nexa: {len(failed)} of {len(st.tasks)} task(s) failed: nexa resubmit {st.run_dir} --failed", code=1)
    echo(f"{st.run_id}: all {len(st.tasks)} task(s) completed")


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "poll": "Longest pause between polls in seconds (polls start at 0.5 s and back off; default 5).",
        "timeout": "Give up after this many seconds (exit 124).",
        "every": "Without a TTY: print a progress line at least this often, in seconds (default 60).",
        "project": PROJECT_HELP,
    },
)
def wait(c, run=None, poll=None, timeout=None, every=None, project=None):
    """Wait until every task of a run has ended, with progress.

    Exits 1 when any task failed, 124 on --timeout.
    """
    wait_and_report(
        run,
        load_project(project),
        poll=parse_float(poll, "--poll", minimum=0) or 5.0,
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
        "dry_run": "Print the scancel command instead of running it.",
        "project": PROJECT_HELP,
    },
)
def cancel(c, run=None, task=None, dry_run=False, project=None):
    """Cancel a run's Slurm jobs, or one task.

    A task that already ended is not an error.
    """
    from .. import control

    result = control.cancel(run, parse_int(task, "--task"), dry_run=dry_run, config=load_project(project))
    if result.finished:
        echo(f"{result.run_id}: task {result.finished[0]} had already ended; nothing to cancel")
    elif not dry_run:
        echo(f"{result.run_id}: cancelled {', '.join(result.job_ids) or 'nothing'}")


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "failed": "Resubmit the failed, timed-out and cancelled tasks (required: nothing else is resubmitted).",
        "wait": "Then wait for them, as `nexa wait`.",
        "dry_run": "Print the sbatch commands instead of submitting.",
        "project": PROJECT_HELP,
    },
)
def resubmit(c, run=None, failed=False, wait=False, dry_run=False, project=None):
    """Submit the failed tasks of a run again (--failed).

    One array of just those tasks (--array=3,7,9), recorded in the same manifest.
    """
    from .. import control
    from ..errors import ConfigError

    if not failed:
        raise ConfigError("resubmit needs --failed (the only selection there is)")
    cfg = load_project(project)
    result = control.resubmit_failed(run, dry_run=dry_run, config=cfg)
    if not result.indices:
        echo(f"{result.run_id}: no failed tasks; nothing to resubmit")
        return
    if dry_run:
        return
    arrays = "; ".join(f"job {ch['job_id']}: offset {ch['offset']} array {ch['array']}" for ch in result.chunks)
    echo(f"{result.run_id}: resubmitted {len(result.indices)} task(s) {result.indices} ({arrays})")
    if wait:
        wait_and_report(run, cfg)


TASKS = [status, wait, logs, cancel, resubmit]
