"""``nexa status``, ``wait``, ``logs``, ``cancel``, ``resubmit``: follow a submitted run."""

import sys
import time
from typing import Any, Callable, List, Optional

from .common import PROJECT_HELP, RUN_HELP, OptionalRun, echo, load_project, nexa_task, parse_float, parse_int


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={"run": RUN_HELP, "json": "Print the status as JSON (tasks with index, state, exit_code...).", "project": PROJECT_HELP},
)
def status(c, run=None, json=False, project=None):
    """status [RUN]: every task of a run (state, exit code, elapsed, node, log, restarts) and counts."""
    import json as _json

    from .. import track

    st = track.status(run, config=load_project(project))
    if json:
        echo(_json.dumps(st.to_json(), indent=2, default=str))
        return
    echo(render_status(st))


def render_status(st: Any) -> str:
    from tabulate import tabulate

    from ..track import format_seconds

    head = f"Run {st.run_id} ({st.backend}"
    head += f", jobs {', '.join(st.job_ids)}" if st.job_ids else ""
    head += f", commit {st.commit[:10]}{' (dirty)' if st.dirty else ''})" if st.commit else ")"
    for entry in st.after:
        how = "waited on by Slurm" if entry.get("decided_by") == "slurm" else "already over at submission"
        head += f"\nAfter {entry.get('run_id')} ({entry.get('kind')}): {how}"
    rows = []
    for t in st.tasks:
        rows.append(
            [t.index]
            + [_short(t.params.get(k, "")) for k in st.keys]
            + [
                t.state,
                "" if t.exit_code is None else t.exit_code,
                format_seconds(t.elapsed),
                t.node or "",
                t.restarts or "",
                t.reason,
                t.log or "",
            ]
        )
    table = tabulate(
        rows, headers=["task"] + list(st.keys) + ["state", "exit", "elapsed", "node", "restarts", "reason", "log"], disable_numparse=True
    )
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
        from tabulate import tabulate

        rows = [[t.index, t.state, "" if t.exit_code is None else t.exit_code, t.reason, t.log or ""] for t in failed]
        echo(tabulate(rows, headers=["task", "state", "exit", "reason", "log"], disable_numparse=True))
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
    from tabulate import tabulate

    rows = [[r.index, r.state, "" if r.exit_code is None else r.exit_code, f"{r.seconds:.2f}", r.log if r.ok else r.err] for r in results]
    echo(tabulate(rows, headers=["task", "state", "exit", "seconds", "log"], disable_numparse=True))
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
    """wait [RUN]: wait until every task of a run has ended, with progress; exit 1 when any failed."""
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
        "dry_run": "Print the scancel command (a local run: the kill of its runner) instead of running it.",
        "project": PROJECT_HELP,
    },
)
def cancel(c, run=None, task=None, dry_run=False, project=None):
    """cancel [RUN]: cancel a run's Slurm jobs, or one task (a local run: its runner stops and records them)."""
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
    """resubmit [RUN] --failed [--local]: submit the failed tasks again as one array (--array=3,7,9), same manifest."""
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
    """The runs under the runs folder, newest first: state, tasks by state, cost so far, age."""
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


TASKS = [status, wait, logs, cancel, resubmit, runs]
