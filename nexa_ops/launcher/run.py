"""Run one training job: here (``local``), under torchrun on this node (``ddp``), or as one
multi-node Slurm job (``slurm``). The library behind ``nexa launch``.

Local and ddp runs stream the program's output to this terminal and tee it into
``<runs>/<run id>/launch.log``; the exit code is the program's (or torchrun's). Signals that
reach nexa (Ctrl-C, ``kill``, Slurm's preemption signals) are forwarded to the program's
process group, so it can clean up as if it had been started directly.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import field
from pathlib import Path
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Union

from .. import pipeline, proc, provenance, runs, toml
from ..config import NexaConfig, Resources, load_config
from ..cost.book import check_writable, manifest_document, write_cost_manifest
from ..cost.estimate import check_max_cost, estimate_cost
from ..cost.pricing import Estimate
from ..errors import ConfigError, ToolError, WaitTimeout
from ..fs import atomic_write_text
from ..resources import read_text
from ..snapshot import Snapshot, take
from ..structs import mutable
from ..tools import nvidia_smi, slurm, torchrun
from ..track import next_pause
from .spec import (
    LaunchFile,
    LaunchSpec,
    count_cuda_visible,
    env_file,
    parse_launch_file,
    render_ddp_script,
    resolve,
    select_env,
)

LOG = "launch.log"
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
TAIL_BYTES = 256 * 1024


@mutable
class LaunchResult:
    """What ``launch`` ran or submitted, and how it ended.

    ``exit_code`` is None for a Slurm job that was submitted but not waited for, and for dry
    runs. ``failures`` names the ranks torchrun reported as failed.
    """

    mode: str
    name: str
    argv: List[str]
    run_dir: Optional[Path] = None
    log_path: Optional[Path] = None
    exit_code: Optional[int] = None
    seconds: float = 0.0
    nproc_per_node: int = 1
    nodes: int = 1
    job_id: Optional[str] = None
    job_state: Optional[str] = None
    script_path: Optional[Path] = None
    script: Optional[str] = None
    env_names: List[str] = field(default_factory=list)
    failures: List[torchrun.RankFailure] = field(default_factory=list)
    dry_run: bool = False
    cost: Optional[Estimate] = None  # for Slurm launches
    upstreams: List[pipeline.Upstream] = field(default_factory=list)  # --after (slurm)
    snapshot: Optional[Snapshot] = None
    dependency: Optional[str] = None  # Slurm's --dependency, when it waits

    @property
    def ok(self) -> bool:
        return self.exit_code in (0, None)

    def failure_message(self) -> str:
        """One line for a failed run: which rank failed (when known), and where the log is."""
        if self.failures:
            what = "; ".join(f.describe() for f in self.failures[:4])
            if len(self.failures) > 4:
                what += f"; and {len(self.failures) - 4} more"
        elif self.job_state and self.job_state != "COMPLETED":
            what = f"job {self.job_id} ended {self.job_state}"
        else:
            what = f"exited with {self.exit_code}"
        return f"{self.name}: {what} (log: {self.log_path})"


def load_launch_file(path: Union[str, Path]) -> LaunchFile:
    """Parse and validate a launch TOML file."""
    return parse_launch_file(toml.load(Path(path)), str(path))


def launch(
    command: Sequence[str] = (),
    *,
    mode: Optional[str] = None,
    nproc_per_node: Optional[int] = None,
    nodes: Optional[int] = None,
    resources: Optional[Resources] = None,
    env: Sequence[str] = (),
    config: Optional[Union[str, Path]] = None,
    project: Optional[Union[NexaConfig, str, Path]] = None,
    name: Optional[str] = None,
    rdzv_port: Optional[int] = None,
    join_timeout: Optional[int] = None,
    max_restarts: Optional[int] = None,
    workdir: Optional[Union[str, Path]] = None,
    wait: bool = False,
    wait_timeout: Optional[float] = None,
    max_cost: Optional[float] = None,
    dry_run: bool = False,
    out: IO[str] = sys.stdout,
    after: Union[None, str, Sequence[Any]] = None,
    snapshot: Optional[bool] = None,
) -> LaunchResult:
    """Run ``command`` locally, under torchrun here, or as one multi-node Slurm job.

    Args:
        command: the training command, word for word (default: the launch file's).
        mode: ``local`` | ``ddp`` | ``slurm`` (default: the launch file's, else local).
        nproc_per_node: processes per node (ddp default: visible GPUs, else 1; slurm
            default: ``resources.gpus_per_node``, else 1).
        nodes: Slurm nodes; overrides ``resources.nodes``.
        resources: Slurm resources (default: the launch file's ``[resources]``).
        env: variable names or globs carried to Slurm ranks, besides PATH, the launch file's
            and ``[launch] env`` of nexa.toml. Local and ddp runs inherit this environment.
        config: a launch TOML file (mode, command, name, env, [resources], ...).
        project: a ``NexaConfig`` or the path of nexa.toml (default: found as the CLI does).
        name: the run name: letters, digits, '.', '_' or '-' only (default: the launch file's,
            else the script's name).
        rdzv_port: rendezvous port, 1-65535 (default: the launch file's, else ``[launch] rdzv_port``
            of nexa.toml, else for ddp a free one, for slurm one from the job id).
        join_timeout: seconds torchrun waits for every rank to join.
        max_restarts: torchrun restarts of the worker group (default 0).
        workdir: where the command runs (default: the current directory).
        wait: for slurm, follow the job until it ends and report its exit code.
        wait_timeout: give up waiting after this many seconds (the job keeps running).
        max_cost: slurm: refuse to submit when the estimate is above this many USD
            (default: ``[cost] max_cost`` of nexa.toml).
        dry_run: print the command (local), the torchrun command (ddp) or the sbatch script
            and submit command (slurm) to ``out``; run, submit and write nothing.
        after: slurm: runs to wait for, ``"RUN[:ok|any|corr]"`` each (a string or a list;
            RUN is a run id, a run folder or the start of one). See docs/pipelines.md.
        snapshot: run from a copy of the project made now, ``<run>/code`` (default:
            ``[project] snapshot`` of nexa.toml).

    Returns:
        ``LaunchResult``; a non-zero ``exit_code`` is not raised (see ``check``).

    Raises:
        ConfigError: bad options (named by their flag, e.g. ``--rdzv-port``), launch file or
            ``[launch]`` of nexa.toml (named by file and key). ToolMissing: torchrun/sbatch not on PATH.
        ToolError: Slurm refused the job (its message included).
        Refused: the cost estimate is above ``max_cost``; an ``ok``/``corr`` upstream run has
            failed tasks.
    """
    cfg = project if isinstance(project, NexaConfig) else load_config(project)
    file = load_launch_file(config) if config else None
    spec = resolve(
        file,
        str(config) if config else "options",
        command=command,
        mode=mode,
        name=name,
        nproc_per_node=nproc_per_node,
        nodes=nodes,
        resources=resources,
        env=env,
        project_env=cfg.launch.env,
        project_rdzv_port=cfg.launch.rdzv_port,
        project_where=cfg.where,
        rdzv_port=rdzv_port,
        join_timeout=join_timeout,
        max_restarts=max_restarts,
    )
    cwd = Path(workdir).resolve() if workdir else Path.cwd()
    afters = pipeline.parse_afters(after)
    if afters and spec.mode != "slurm":
        raise ConfigError("--after goes with --mode slurm: only Slurm can hold a job until another run ends")
    frozen = cfg.snapshot_wanted(snapshot)
    if spec.mode == "slurm":
        upstreams = pipeline.gather(afters, cfg)
        pipeline.check(upstreams, 1, "this launch")
        return _launch_slurm(
            spec,
            cfg,
            cwd,
            wait=wait,
            wait_timeout=wait_timeout,
            max_cost=max_cost,
            dry_run=dry_run,
            out=out,
            upstreams=upstreams,
            frozen=frozen,
        )
    if spec.mode == "ddp":
        nproc = spec.nproc_per_node or visible_gpus() or 1
        argv = torchrun.argv(
            spec.command, nproc_per_node=nproc, port=spec.rdzv_port, join_timeout=spec.join_timeout, max_restarts=spec.max_restarts
        )
    else:
        nproc = 1
        argv = list(spec.command)
    result = LaunchResult(spec.mode, spec.name, argv, nproc_per_node=nproc, dry_run=dry_run)
    if dry_run:
        if frozen:
            take(cfg, cfg.runs_dir / runs.new_run_id(spec.name), cwd, dry_run=True)
        print(proc.quote(argv), file=out, flush=True)
        return result
    program = torchrun.which() if spec.mode == "ddp" else proc.which(argv[0], "the command to launch")
    result.run_dir = runs.create_run_dir(cfg.runs_dir, spec.name)
    result.log_path = result.run_dir / LOG
    if frozen:
        result.snapshot = _snapshot(cfg, result.run_dir, cwd)
        cwd = result.snapshot.workdir
    manifest = _manifest(result, spec, cwd, cfg)
    runs.write_manifest(result.run_dir, manifest)
    started = time.monotonic()
    (result.run_dir / runs.METRICS).mkdir()
    extra = {
        "NEXA_RUN_DIR": str(result.run_dir),
        "NEXA_METRICS_FILE": str(result.run_dir / runs.METRICS / "0.jsonl"),  # a launch is task 0 of its run
        "NEXA_TASK_INDEX": "0",
        "NEXA_TASK_DIR": str(result.run_dir / runs.OUT / "0"),
        "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1"),
    }
    result.exit_code = run_streamed([program] + argv[1:], result.log_path, env=extra, cwd=str(cwd))
    result.seconds = time.monotonic() - started
    if result.exit_code != 0 and spec.mode == "ddp":
        result.failures = torchrun.parse_failures(_tail(result.log_path))
    manifest.update(exit_code=result.exit_code, seconds=round(result.seconds, 3), failures=[vars(f) for f in result.failures])
    runs.write_manifest(result.run_dir, manifest)
    return result


# --- local and ddp --------------------------------------------------------------------


def visible_gpus(environ: Optional[Mapping[str, str]] = None) -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``,
    else 0 (no driver, or nvidia-smi failing counts as none)."""
    environ = os.environ if environ is None else environ
    counted = count_cuda_visible(environ.get("CUDA_VISIBLE_DEVICES"))
    if counted is not None:
        return counted
    return nvidia_smi.count_gpus()


def run_streamed(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Optional[Mapping[str, Optional[str]]] = None,
    cwd: Optional[str] = None,
    stdout: Optional[IO[Any]] = None,
    stderr: Optional[IO[Any]] = None,
) -> int:
    """Run ``argv`` (no shell) with stdout and stderr passed through live AND appended to
    ``log_path``; return its exit code (128+N when killed by signal N, as a shell does).

    The program gets its own process group; the signals in ``FORWARDED`` that reach this
    process are sent on to that group, so Ctrl-C or a ``kill`` of nexa reaches the program
    once, and it may clean up. Its stdin is this one's unless that is a terminal (a
    background process group reading the terminal would be stopped).
    """
    sinks = (_binary(stdout or sys.stdout), _binary(stderr or sys.stderr))
    stdin = subprocess.DEVNULL if _isatty(sys.stdin) else None
    lock = threading.Lock()
    with open(log_path, "ab") as log:
        popen = proc.spawn(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=stdin,
            cwd=cwd,
            preexec_fn=os.setpgrp,  # runs before any thread of ours exists
        )
        restore = _forward_signals(popen.pid)
        try:
            pumps = [
                threading.Thread(target=_pump, args=(pipe, sink, log, lock), daemon=True)
                for pipe, sink in ((popen.stdout, sinks[0]), (popen.stderr, sinks[1]))
            ]
            for pump in pumps:
                pump.start()
            while True:
                try:
                    code = popen.wait()
                    break
                except KeyboardInterrupt:  # only when forwarding is off (not the main thread)
                    _signal_group(popen.pid, signal.SIGINT)
            for pump in pumps:
                pump.join()
        finally:
            restore()
    return 128 - code if code < 0 else code


def _pump(pipe: IO[bytes], sink: IO[bytes], log: IO[bytes], lock: threading.Lock) -> None:
    """Copy one stream to the terminal as it comes, and to the shared log in whole lines, so
    that stdout and stderr never cut into each other's lines in launch.log."""
    fd = pipe.fileno()
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if not cut and len(pending) > 65536:  # a very long line (a progress bar): let it go
            cut = len(pending)
        with lock:
            if cut:
                log.write(pending[:cut])
                log.flush()
            try:
                sink.write(chunk)
                sink.flush()
            except (OSError, ValueError):  # our terminal went away: keep logging
                pass
        pending = pending[cut:]
    if pending:
        with lock:
            log.write(pending)
            log.flush()
    pipe.close()


class _TextSink:
    """Bytes into a text stream that has no ``.buffer`` (e.g. captured in tests)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, data: bytes) -> None:
        self.stream.write(data.decode("utf-8", "replace"))

    def flush(self) -> None:
        self.stream.flush()


def _binary(stream: IO[Any]) -> Any:
    buffer = getattr(stream, "buffer", None)
    return buffer if buffer is not None else _TextSink(stream)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream and stream.isatty())
    except (ValueError, OSError):
        return False


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _forward_signals(pid: int) -> Any:
    """Install forwarders; return a function that puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: Dict[int, Any] = {}
    for name in FORWARDED:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        previous[signum] = signal.signal(signum, lambda s, _f: _signal_group(pid, s))

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def _tail(path: Optional[Path]) -> str:
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - TAIL_BYTES))
        return fh.read().decode("utf-8", "replace")


def _snapshot(cfg: NexaConfig, run_dir: Path, cwd: Path) -> Snapshot:
    """The snapshot, or nothing left behind: a failed copy removes the new run folder."""
    try:
        return take(cfg, run_dir, cwd)
    except BaseException:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _manifest(result: LaunchResult, spec: LaunchSpec, cwd: Path, cfg: NexaConfig) -> Dict[str, Any]:
    """The launch's manifest, with its upstream runs, snapshot and provenance (``code.diff``
    is written beside it when the tree has uncommitted changes)."""
    info = provenance.record(result.run_dir, cfg.root) if result.run_dir else None
    return runs.new_manifest(
        result.run_dir.name if result.run_dir else "",
        spec.name,
        spec.mode,
        kind="launch",
        command=list(spec.command),
        argv=list(result.argv),
        workdir=str(cwd),
        nodes=result.nodes,
        nproc_per_node=result.nproc_per_node,
        log=str(result.log_path) if result.log_path else None,
        env=list(result.env_names),
        job_ids=[result.job_id] if result.job_id else [],
        after=pipeline.record(result.upstreams),
        dependency=result.dependency,
        snapshot=result.snapshot.to_json() if result.snapshot else None,
        provenance=info,
    )


# --- slurm ----------------------------------------------------------------------------


def _launch_slurm(
    spec: LaunchSpec,
    cfg: NexaConfig,
    cwd: Path,
    *,
    wait: bool,
    wait_timeout: Optional[float],
    max_cost: Optional[float],
    dry_run: bool,
    out: IO[str],
    upstreams: Sequence[pipeline.Upstream] = (),
    frozen: bool = False,
) -> LaunchResult:
    estimate = None
    if not dry_run:  # a dry run prints exactly the script and the command, nothing else
        estimate = estimate_cost(spec.resources, cfg, tasks=1)
        print(estimate.table(), file=out, flush=True)
        check_max_cost(estimate, max_cost if max_cost is not None else cfg.cost.max_cost)
    values = select_env(spec.env, os.environ)
    run_dir = cfg.runs_dir / runs.new_run_id(spec.name) if dry_run else runs.create_run_dir(cfg.runs_dir, spec.name)
    log_path = run_dir / "launch-%j.log"
    snap = None
    if frozen:
        snap = take(cfg, run_dir, cwd, dry_run=True) if dry_run else _snapshot(cfg, run_dir, cwd)
        cwd = snap.workdir
    pattern = slurm.filename_pattern(str(run_dir), log_path.name, "run folder")  # a % of the folder as %%
    script = render_ddp_script(
        spec,
        cluster=cfg.cluster,
        run_dir=str(run_dir),
        log_path=pattern,
        workdir=str(cwd),
        env_names=list(values),
        upstream=pipeline.env_lines(upstreams, "0"),
    )
    script_path = run_dir / f"{spec.name}.sbatch"
    (submission,) = pipeline.plan(1, upstreams, 1, array=False)
    options = ["--export=NONE"] + slurm.dependency_options(submission.parts)
    result = LaunchResult(
        "slurm",
        spec.name,
        slurm.sbatch_argv(str(script_path), options),
        run_dir=run_dir,
        log_path=log_path,
        nproc_per_node=spec.nproc_for_slurm(),
        nodes=spec.resources.nodes,
        script_path=script_path,
        script=script,
        env_names=list(values),
        dry_run=dry_run,
        cost=estimate,
        upstreams=list(upstreams),
        snapshot=snap,
        dependency=submission.dependency,
    )
    if dry_run:
        out.write(script)
        out.flush()
        slurm.sbatch(str(script_path), options=options, dry_run=True)
        return result
    check_writable(cfg.runs_dir, run_dir.name)  # before any job exists
    (run_dir / runs.METRICS).mkdir(exist_ok=True)  # $NEXA_METRICS_FILE, exported by the script
    atomic_write_text(run_dir / "launch.env", env_file(values), mode=0o600)
    atomic_write_text(run_dir / "launch_ddp.sh", read_text("bin/launch_ddp.sh"), mode=0o755)
    atomic_write_text(script_path, script, mode=0o755)
    manifest = _manifest(result, spec, cwd, cfg)
    manifest["script"] = str(script_path)
    try:
        result.job_id = slurm.sbatch(str(script_path), options=options)
    except ToolError as exc:
        manifest.update(error=str(exc))
        runs.write_manifest(run_dir, manifest)
        raise
    result.log_path = run_dir / f"launch-{result.job_id}.log"
    manifest.update(job_ids=[result.job_id], log=str(result.log_path))
    runs.write_manifest(run_dir, manifest)
    write_cost_manifest(
        cfg.runs_dir,
        manifest_document(
            estimate, run_id=run_dir.name, name=spec.name, kind="launch", campaign=None, run_dir=run_dir, job_ids=[result.job_id]
        ),
    )
    if wait:
        wait_for_job(result, timeout=wait_timeout)
        manifest.update(exit_code=result.exit_code, state=result.job_state, failures=[vars(f) for f in result.failures])
        runs.write_manifest(run_dir, manifest)
    return result


#: The longest pause between squeue polls while ``launch --wait`` follows its one job.
LAUNCH_POLL = 60.0


def wait_for_job(result: LaunchResult, *, timeout: Optional[float] = None, interval: float = 0.5) -> LaunchResult:
    """Wait until the job leaves the queue, then fill in its state, exit code and the failed
    ranks named in its log.

    Slurm is asked as ``nexa wait`` asks it (``track.next_pause``: 2 s, doubling to a minute:
    one job, and a hard kill that leaves no end record is noticed within a minute),
    and the job's end record (``tasks/0.end.json``, written by its script) is looked for every
    ``interval`` seconds in between: once it is there squeue is asked every ``interval``
    until the job has left, so the end is seen at once without a training run of days
    polling the scheduler every half second."""
    assert result.job_id, "wait_for_job needs a submitted job"
    end_record = result.run_dir / runs.TASKS / "0.end.json" if result.run_dir is not None else None
    started = time.monotonic()
    pause: Optional[float] = None
    next_poll = started
    while True:
        ended = end_record is not None and end_record.exists()
        if ended or time.monotonic() >= next_poll:
            if not slurm.squeue([result.job_id], fmt="%i"):
                break
            pause = interval if ended else next_pause(pause, False, ceiling=LAUNCH_POLL)
            next_poll = time.monotonic() + pause
        if timeout is not None and time.monotonic() - started > timeout:
            raise WaitTimeout(f"job {result.job_id} still running after {timeout:g} s; it was left running (log: {result.log_path})")
        time.sleep(max(0.0, min(interval, next_poll - time.monotonic())))
    result.seconds = time.monotonic() - started
    result.job_state, result.exit_code = slurm.job_outcome(result.job_id)
    if result.exit_code != 0:
        result.failures = torchrun.parse_failures(_tail(result.log_path))
    return result
