"""``nexa status``, ``wait``, ``logs``, ``cancel``, ``resubmit``: follow a submitted run."""

import sys
import time
from typing import Any, Callable, Optional

from .common import PROJECT_HELP, RUN_HELP, OptionalRun, echo, load_project, nexa_task, parse_float, parse_int


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={"run": RUN_HELP, "json": "Print the status as JSON (tasks with index, state, exit_code...).", "project": PROJECT_HELP},
)
def status(c, run=None, json=False, project=None):
    """status [RUN]: every task of a run (state, exit code, elapsed, node, log, restarts) and counts."""
    from .. import track

    st = track.status(run, config=load_project(project))
    if json:
        echo(status_json(st.to_json()))
        return
    echo(render_status(st))


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


def render_status(st: Any) -> str:
    from ..text import align  # tabulate's look at a tenth of its cost: 10,000 rows
    from ..track import format_seconds

    head = f"Run {st.run_id} ({st.backend}"
    head += f", jobs {', '.join(st.job_ids)})" if st.job_ids else ")"
    rows = []
    for t in st.tasks:
        rows.append(
            [str(t.index)]
            + [_short(t.params.get(k, "")) for k in st.keys]
            + [
                t.state,
                "" if t.exit_code is None else str(t.exit_code),
                format_seconds(t.elapsed),
                t.node or "",
                str(t.restarts or ""),
                t.reason,
                t.log or "",
            ]
        )
    table = align([["task"] + list(st.keys) + ["state", "exit", "elapsed", "node", "restarts", "reason", "log"]] + rows)
    counts = ", ".join(f"{n} {state}" for state, n in st.counts.items())
    return f"{head}\n{table}\n{counts}  |  {st.summary()}"


def _short(value: Any, width: int = 24) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


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
    failed = [t for t in st.tasks if t.bucket == "failed"]
    if failed:
        from tabulate import tabulate

        rows = [[t.index, t.state, "" if t.exit_code is None else t.exit_code, t.reason, t.log or ""] for t in failed]
        echo(tabulate(rows, headers=["task", "state", "exit", "reason", "log"], disable_numparse=True))
        raise Exit(f"nexa: {len(failed)} of {len(st.tasks)} task(s) failed: nexa resubmit {st.run_dir} --failed", code=1)
    echo(f"{st.run_id}: all {len(st.tasks)} task(s) completed")


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
    """wait [RUN]: wait until every task of a run has ended, with progress; exit 1 when any failed."""
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
    """logs [RUN]: print a task's output (stdout, then stderr to stderr); --follow to stream it."""
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
    """cancel [RUN]: cancel a run's Slurm jobs, or one task; a task that already ended is not an error."""
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
    """resubmit [RUN] --failed: submit the failed tasks again as one array (--array=3,7,9), same manifest."""
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
