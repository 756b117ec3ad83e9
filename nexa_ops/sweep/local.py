"""Run a planned sweep on this machine: the same worker and log layout as on Slurm."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .. import proc, runs
from ..fs import atomic_write_json
from ..resources import package_root
from .script import WORKER_STUB


@dataclass
class TaskResult:
    index: int
    exit_code: int
    seconds: float
    log: str


def worker_argv(spec_path: Path, index: int) -> List[str]:
    return [sys.executable, "-S", "-c", WORKER_STUB, str(package_root()), "--spec", str(spec_path), "--task-id", str(index)]


def run_local(
    spec_path: Path,
    run_dir: Path,
    count: int,
    max_parallel: Optional[int] = None,
    log_dir: Optional[Path] = None,
    *,
    indices: Optional[Sequence[int]] = None,
    env_of: Optional[Callable[[int], Dict[str, str]]] = None,
) -> List[TaskResult]:
    """Run tasks 0..count-1 (or just ``indices``), at most ``max_parallel`` at a time
    (default: CPU count); ``env_of(index)`` adds variables to a task's environment (a halving
    sweep's trial variables, as its array script sets them).

    Output goes to ``logs/local_<i>.out|err``; each task's end is recorded like the sbatch
    script does. Ctrl-C stops launching and terminates the running tasks.
    """
    parallel = max(1, max_parallel or os.cpu_count() or 1)
    log_dir = log_dir or run_dir / runs.LOGS
    log_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runs.TASKS).mkdir(parents=True, exist_ok=True)
    (run_dir / runs.METRICS).mkdir(exist_ok=True)  # the worker gives each task $NEXA_METRICS_FILE in it
    env = {"NEXA_RUN_DIR": str(run_dir)}
    pending = list(range(count)) if indices is None else list(indices)
    pending.reverse()
    running: Dict[int, tuple] = {}
    results: List[TaskResult] = []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                index = pending.pop()
                out = open(log_dir / f"local_{index}.out", "wb")
                err = open(log_dir / f"local_{index}.err", "wb")
                task_env = dict(env, **env_of(index)) if env_of else env
                popen = proc.spawn(worker_argv(spec_path, index), env=task_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
                running[index] = (popen, time.monotonic(), out, err)
            for index, (popen, started, out, err) in list(running.items()):
                code = popen.poll()
                if code is None:
                    continue
                out.close()
                err.close()
                del running[index]
                atomic_write_json(
                    run_dir / runs.TASKS / f"{index}.end.json",
                    {"index": index, "exit_code": code, "end": time.time(), "job_id": "local"},
                    indent=None,
                )
                results.append(TaskResult(index, code, time.monotonic() - started, str(log_dir / f"local_{index}.out")))
            if running:
                time.sleep(0.01)
    finally:
        for popen, _, out, err in running.values():
            popen.terminate()
            popen.wait()
            out.close()
            err.close()
    results.sort(key=lambda r: r.index)
    return results
