"""Run a planned sweep's tasks on this machine: the same worker, logs and records as on Slurm.

This process is the run's *runner* (recorded in the manifest, see ``runs.new_runner``). It
starts each task in a process group of its own, writes each task's end record, and never
leaves a task without one:

- SIGINT (Ctrl-C), SIGTERM or SIGHUP stop the run: the signal is passed on to every running
  task's process group, which gets ``GRACE`` seconds to end (a checkpoint) before SIGKILL; a
  second SIGINT kills at once. Tasks not started yet are recorded too. All of them end
  INTERRUPTED, with the signal in the record.
- SIGUSR1 means ``nexa cancel`` left requests in ``<run>/cancel/`` (the whole run, or one
  task): those tasks are stopped (SIGTERM, then SIGKILL) or dropped, and end CANCELLED.

With GPUs (``gpus_per_node`` > 0), each running task gets its own slice of this machine's
GPUs in ``CUDA_VISIBLE_DEVICES``, and no more tasks run at once than there are slices.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import pids, proc, runs
from ..config import NexaConfig
from ..cost.reconcile import reconcile_manifest
from ..errors import ConfigError, ToolError, ToolMissing
from ..fs import atomic_write_json
from ..resources import package_root
from ..structs import mutable
from ..tools import nvidia_smi
from .script import WORKER_STUB

#: Seconds a stopped task gets between the signal passed on and SIGKILL.
GRACE = 10.0
STOP_SIGNALS = ("INT", "TERM", "HUP")
CANCEL_SIGNAL = "USR1"
#: ``<run>/cancel/``: one file per ``nexa cancel`` request, taken by the runner on SIGUSR1.
CANCEL_DIR = "cancel"
POLL = 0.02


@mutable
class TaskResult:
    index: int
    exit_code: Optional[int]  # None: never started
    seconds: float
    log: str  # the task's stdout file
    err: str = ""  # its stderr file
    state: str = "COMPLETED"  # COMPLETED, FAILED, INTERRUPTED or CANCELLED
    gpus: Optional[str] = None  # its CUDA_VISIBLE_DEVICES

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"


@mutable
class Progress:
    """The runner's counts after each change; shaped like ``track.RunStatus`` where the
    progress line reads it (``run_id``, ``summary()``, ``finished``)."""

    run_id: str
    total: int
    pending: int
    running: int
    done: int
    failed: int
    last: Optional[TaskResult] = None  # the task that just ended, if one did

    def summary(self) -> str:
        return f"{self.pending} pending, {self.running} running, {self.done} done, {self.failed} failed ({self.total} tasks)"

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.running == 0


@mutable
class LocalOutcome:
    results: List[TaskResult] = field(default_factory=list)
    stopped_by: Optional[str] = None  # INT, TERM or HUP when a signal stopped the run; "cancel"


def worker_argv(spec_path: Path, index: int) -> List[str]:
    return [sys.executable, "-S", "-c", WORKER_STUB, str(package_root()), "--spec", str(spec_path), "--task-id", str(index)]


# --- GPUs ------------------------------------------------------------------------------------


def machine_gpus(environ: Mapping[str, str]) -> Tuple[List[str], str]:
    """This machine's GPUs as ``CUDA_VISIBLE_DEVICES`` names them, and where that came from:
    ``$CUDA_VISIBLE_DEVICES`` when set (ids or UUIDs, up to an entry CUDA stops at), else the
    indices ``nvidia-smi -L`` lists."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus: List[str] = []
        for item in (g.strip() for g in visible.split(",")):
            if not item or item.startswith("-") or item == "NoDevFiles":
                break  # CUDA reads no further than an invalid entry ("-1" hides every GPU)
            gpus.append(item)
        return gpus, f"CUDA_VISIBLE_DEVICES={visible}"
    try:
        return nvidia_smi.list_gpus(), "nvidia-smi -L"
    except ToolMissing:
        return [], "no CUDA_VISIBLE_DEVICES, no nvidia-smi on PATH"
    except ToolError as exc:
        return [], f"nvidia-smi -L failed: {exc.tail(1) or exc.returncode}"


def slice_gpus(gpus: Sequence[str], per_task: int) -> List[str]:
    """Disjoint ``CUDA_VISIBLE_DEVICES`` values of ``per_task`` GPUs each (a remainder too
    small for a task stays unused)."""
    return [",".join(gpus[i : i + per_task]) for i in range(0, len(gpus) - per_task + 1, per_task)]


def gpu_slots(per_task: int, environ: Mapping[str, str] = os.environ) -> Tuple[Optional[List[str]], Optional[str]]:
    """``(slots, warning)``: the slices local tasks take turns on (None: no GPUs asked for,
    or none found, then ``warning`` says so and tasks run without a slice).

    Raises:
        ConfigError: fewer GPUs here than one task needs.
    """
    if per_task <= 0:
        return None, None
    gpus, source = machine_gpus(environ)
    if not gpus:
        return None, f"each task asks for {per_task} GPU(s) but none were found ({source}): tasks run without a CUDA_VISIBLE_DEVICES slice"
    if len(gpus) < per_task:
        raise ConfigError(f"each task needs {per_task} GPU(s) (resources.gpus_per_node) but this machine has {len(gpus)} ({source})")
    return slice_gpus(gpus, per_task), None


# --- cancel requests -------------------------------------------------------------------------


def request_cancel(run_dir: Path, task: Optional[int]) -> Path:
    """Leave a cancel request for the runner (``task`` None: the whole run); the caller then
    sends it SIGUSR1."""
    name = f"{int(time.time() * 1e6)}-{os.getpid()}-{secrets.token_hex(2)}.json"
    return atomic_write_json(Path(run_dir) / CANCEL_DIR / name, {"task": task}, indent=None)


def take_cancel_requests(run_dir: Path) -> List[Optional[int]]:
    """The tasks asked to be cancelled (None: all), each request read once and removed; a file
    that is not a request is removed too."""
    folder = Path(run_dir) / CANCEL_DIR
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith("."))
    except OSError:
        return []
    out: List[Optional[int]] = []
    for name in names:
        path = folder / name
        try:
            with open(path, encoding="utf-8") as fh:
                task = json.load(fh).get("task")
            if task is None or type(task) is int:
                out.append(task)
        except (OSError, ValueError, AttributeError):
            pass
        try:
            path.unlink()
        except OSError:
            pass
    return out


# --- signals ---------------------------------------------------------------------------------


class Signals:
    """What arrived while the runner ran: the stop signal's name, a second stop (kill now), a
    cancel request. Handlers only set flags; the runner's loop acts on them."""

    def __init__(self) -> None:
        self.stop: Optional[str] = None
        self.force = False
        self.cancel = False
        self._old: Dict[int, Any] = {}

    def install(self) -> "Signals":
        if threading.current_thread() is not threading.main_thread():
            return self  # Python allows handlers in the main thread only: an API caller's thread
        for name in STOP_SIGNALS + (CANCEL_SIGNAL,):
            number = getattr(signal, f"SIG{name}", None)
            if number is not None:
                self._old[number] = signal.signal(number, self._handle)
        return self

    def restore(self) -> None:
        for number, handler in self._old.items():
            signal.signal(number, handler)
        self._old.clear()

    def _handle(self, number: int, _frame: Any) -> None:
        name = signal.Signals(number).name[3:]
        if name == CANCEL_SIGNAL:
            self.cancel = True
        elif self.stop is None:
            self.stop = name
        else:
            self.force = True

    def __enter__(self) -> "Signals":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()


# --- the runner ------------------------------------------------------------------------------


@mutable
class _Running:
    popen: "subprocess.Popen[bytes]"
    started: float
    files: List[Any]
    gpus: Optional[str]
    sent: List[str] = field(default_factory=list)  # signals passed on, in order
    why: Optional[str] = None  # INTERRUPTED or CANCELLED once the runner stopped it
    kill_at: Optional[float] = None  # when a stopped task that has not ended gets SIGKILL

    def stop(self, why: str, name: str) -> None:
        """Pass signal ``name`` on; SIGKILL follows after ``GRACE`` seconds."""
        self.why = self.why or why
        self.send(name)
        if self.kill_at is None:
            self.kill_at = time.monotonic() + GRACE

    def send(self, name: str) -> None:
        """Signal the task's whole process group (torchrun's workers too)."""
        try:
            os.killpg(self.popen.pid, getattr(signal, f"SIG{name}"))
        except (ProcessLookupError, PermissionError):
            return
        if name not in self.sent:
            self.sent.append(name)


def exit_code(returncode: int) -> int:
    """A shell's way: a program killed by signal N exited 128 + N (as the array script records)."""
    return 128 - returncode if returncode < 0 else returncode


def run_local(
    spec_path: Path,
    run_dir: Path,
    indices: Sequence[int],
    max_parallel: Optional[int] = None,
    log_dir: Optional[Path] = None,
    *,
    gpus: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[Progress], None]] = None,
    signals: Optional[Signals] = None,
    env_of: Optional[Callable[[int], Dict[str, str]]] = None,
) -> LocalOutcome:
    """Run the tasks ``indices``, at most ``max_parallel`` at a time (default: CPU count; with
    ``gpus``, the ``CUDA_VISIBLE_DEVICES`` slices, at most one task per slice).
    ``env_of(index)`` adds variables to a task's environment (a halving sweep's trial
    variables, as its array script sets them).

    Output goes to ``logs/local_<i>.out|err``; each task's end is recorded in
    ``tasks/<i>.end.json`` like the sbatch script does, interrupted and cancelled ones included
    (see the module). ``progress`` is called after every change. ``signals``: handlers already
    installed by the caller (default: installed here for the run).
    """
    parallel = max(1, max_parallel or os.cpu_count() or 1)
    free = list(gpus or [])
    if gpus:
        parallel = min(parallel, len(free))
    log_dir = log_dir or run_dir / runs.LOGS
    log_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runs.TASKS).mkdir(parents=True, exist_ok=True)
    (run_dir / runs.METRICS).mkdir(exist_ok=True)  # the worker gives each task $NEXA_METRICS_FILE in it
    own = signals is None
    sig = signals or Signals().install()
    host = pids.hostname()
    pending = list(reversed(list(indices)))  # popped from the end: in order
    running: Dict[int, _Running] = {}
    outcome = LocalOutcome()
    counts = {"done": 0, "failed": 0}
    shown = [0.0]

    def report(last: Optional[TaskResult] = None) -> None:
        shown[0] = time.monotonic()
        if progress:
            try:
                progress(Progress(run_dir.name, len(indices), len(pending), len(running), counts["done"], counts["failed"], last))
            except OSError:
                pass  # the terminal closed or the pipe's reader left: the tasks and their records go on

    def record(index: int, code: Optional[int], task: Optional[_Running], state: Optional[str]) -> None:
        end: Dict[str, Any] = {"index": index, "exit_code": code, "end": time.time(), "job_id": "local"}
        if task is not None:
            end["node"] = host
        if task is not None and task.sent:
            end["signals"] = " ".join(task.sent)
        elif task is None and outcome.stopped_by in STOP_SIGNALS:
            end["signals"] = outcome.stopped_by
        if state and code != 0:
            end["state"] = state
        if task is not None and task.gpus:
            end["gpus"] = task.gpus
        atomic_write_json(run_dir / runs.TASKS / f"{index}.end.json", end, indent=None)
        final = runs.record_state(end)
        seconds = time.monotonic() - task.started if task is not None else 0.0
        out, err = (str(log_dir / f"local_{index}.{ext}") for ext in ("out", "err"))
        result = TaskResult(index, code, seconds, out, err, final, task.gpus if task else None)
        outcome.results.append(result)
        counts["done" if final == "COMPLETED" else "failed"] += 1
        report(result)

    def drop(index: int, state: str) -> None:
        """A task that will not start: recorded as ended, never started."""
        pending.remove(index)
        record(index, None, None, state)

    try:
        report()
        while pending or running:
            if sig.stop and outcome.stopped_by in (None, "cancel"):
                outcome.stopped_by = sig.stop
                for task in running.values():
                    task.stop("INTERRUPTED", sig.stop)
                for index in list(reversed(pending)):
                    drop(index, "INTERRUPTED")
            if sig.cancel:
                sig.cancel = False
                for wanted in take_cancel_requests(run_dir):
                    if wanted is None:
                        outcome.stopped_by = outcome.stopped_by or "cancel"
                    for index in list(reversed(pending)):
                        if wanted in (None, index):
                            drop(index, "CANCELLED")
                    for index, task in running.items():
                        if wanted in (None, index) and task.why is None:
                            task.stop("CANCELLED", "TERM")
            now = time.monotonic()
            for task in running.values():
                if task.kill_at is not None and (sig.force or now > task.kill_at) and "KILL" not in task.sent:
                    task.send("KILL")
            while pending and len(running) < parallel and outcome.stopped_by is None:
                index = pending.pop()
                try:
                    extra = env_of(index) if env_of is not None else {}
                except BaseException:
                    pending.append(index)  # recorded below, like every task not started
                    raise
                slot = free.pop(0) if gpus else None
                files = [open(log_dir / f"local_{index}.{ext}", "wb") for ext in ("out", "err")]
                env = {"NEXA_RUN_DIR": str(run_dir)}
                env.update(extra)
                if slot is not None:
                    env["CUDA_VISIBLE_DEVICES"] = slot
                try:
                    popen = proc.spawn(
                        worker_argv(spec_path, index),
                        env=env,
                        stdout=files[0],
                        stderr=files[1],
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # signals reach it from the runner only, and its whole group
                    )
                except BaseException:
                    for fh in files:
                        fh.close()
                    pending.append(index)
                    raise
                running[index] = _Running(popen, time.monotonic(), files, slot)
                report()
            for index, task in list(running.items()):
                code = task.popen.poll()
                if code is None:
                    continue
                for fh in task.files:
                    fh.close()
                del running[index]
                if task.gpus is not None:
                    free.append(task.gpus)
                record(index, exit_code(code), task, task.why)
            if running:
                if time.monotonic() - shown[0] >= 1.0:
                    report()  # the progress line's clock
                time.sleep(POLL)
    finally:
        # Not a signal but an error in this loop: stop what runs and still record every task.
        for index, task in list(running.items()):
            task.stop("INTERRUPTED", "TERM")
            try:
                task.popen.wait(GRACE)
            except subprocess.TimeoutExpired:
                task.send("KILL")
                task.popen.wait()
            for fh in task.files:
                fh.close()
            del running[index]
            record(index, exit_code(task.popen.returncode), task, task.why)
        for index in list(reversed(pending)):
            drop(index, "INTERRUPTED")
        if own:
            sig.restore()
    outcome.results.sort(key=lambda r: r.index)
    return outcome


# --- a local run, start to end ----------------------------------------------------------


def run_tasks_here(
    run_dir: Path,
    manifest: Dict[str, Any],
    indices: Sequence[int],
    max_parallel: Optional[int],
    gpus: Optional[List[str]],
    config: NexaConfig,
    book: Callable[[], Optional[Path]],
    progress: Optional[Callable[[Progress], None]] = None,
    env_of: Optional[Callable[[int], Dict[str, str]]] = None,
) -> LocalOutcome:
    """Run a local run's tasks ``indices`` with this process as the runner: recorded in the
    manifest first (pid, host, start time), every task recorded as it ends, however the run
    ends (Ctrl-C, SIGTERM, ``nexa cancel``); then the exit codes go into the manifest and the
    cost manifest (``book()`` writes or reopens it and returns its path, or None) is
    reconciled. The signal handlers cover all of it, so an interrupt cannot cut the
    bookkeeping short: a signal before the first task starts ends them all unstarted.
    ``env_of``: as for ``run_local`` (a halving sweep's trial variables)."""
    spec_path = Path(manifest.get("spec") or run_dir / runs.SPEC)
    with Signals() as signals:
        manifest["runner"] = runs.new_runner()
        runs.write_manifest(run_dir, manifest)
        outcome = LocalOutcome()
        cost_manifest = None
        try:
            cost_manifest = book()
            outcome = run_local(
                spec_path, run_dir, indices, max_parallel, gpus=gpus, progress=progress, signals=signals, env_of=env_of
            )
        finally:
            codes = manifest.setdefault("exit_codes", {})
            codes.update({str(r.index): r.exit_code for r in outcome.results})
            runs.write_manifest(run_dir, manifest)
            if cost_manifest is not None:
                reconcile_manifest(cost_manifest, config.runs_dir)
    return outcome


def tail(path: str, lines: int = 10) -> List[str]:
    """The last ``lines`` lines of a log file (empty when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").rstrip("\n").splitlines()[-lines:] if data.strip() else []
