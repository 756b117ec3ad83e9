"""Compute-node side: find this array task's argv in spec.json and exec it.

Standard library only, and nothing imported that the task does not need: this runs once per
array task, thousands of times per sweep. It is started either as ``nexa worker`` or, in
generated sbatch scripts, straight from the package folder with ``python3 -S`` (see
``plan.sbatch.WORKER_STUB``), so it must not import the rest of nexa.

Exit codes: the program's own (exec); 2 for a bad spec, index or missing task id.
"""

import json
import os
import sys
import time

USAGE = "usage: nexa worker --spec FILE [--task-id N] [--offset K] [--dry-run]"


class WorkerError(Exception):
    pass


def parse_args(argv):
    opts = {"spec": None, "task_id": None, "offset": 0, "dry_run": False}
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--spec", "--task-id", "--offset"):
            if not eq:
                value = next(it, None)
                if value is None:
                    raise WorkerError(f"{name} needs a value")
            opts[name[2:].replace("-", "_")] = value
        elif arg in ("--dry-run", "-n"):
            opts["dry_run"] = True
        elif arg in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        else:
            raise WorkerError(f"unexpected argument {arg!r}")
    if not opts["spec"]:
        raise WorkerError("--spec FILE is required")
    return opts


def _int(text, what):
    try:
        return int(text)
    except (TypeError, ValueError):
        raise WorkerError(f"{what} must be an integer, got {text!r}") from None


def resolve_index(task_id, offset, environ):
    """``--task-id`` if given, else ``SLURM_ARRAY_TASK_ID`` + ``offset``."""
    if task_id is not None:
        return _int(task_id, "--task-id")
    slurm = environ.get("SLURM_ARRAY_TASK_ID")
    if slurm is None:
        raise WorkerError("no task id: pass --task-id N or run inside a Slurm array (SLURM_ARRAY_TASK_ID)")
    return _int(slurm, "SLURM_ARRAY_TASK_ID") + _int(offset, "--offset")


def load_task(spec_path, index):
    try:
        with open(spec_path, encoding="utf-8") as fh:
            spec = json.load(fh)
    except FileNotFoundError:
        raise WorkerError(f"{spec_path}: spec file not found") from None
    except (OSError, ValueError) as exc:
        raise WorkerError(f"{spec_path}: cannot read spec: {exc}") from None
    tasks = spec.get("tasks") if isinstance(spec, dict) else None
    if not isinstance(tasks, list):
        raise WorkerError(f"{spec_path}: not a nexa spec (no 'tasks' list)")
    if not 0 <= index < len(tasks):
        raise WorkerError(f"{spec_path}: task index {index} out of range (0..{len(tasks) - 1})")
    task = tasks[index]
    if task.get("index") != index or not task.get("argv"):
        raise WorkerError(f"{spec_path}: task {index} is malformed")
    return spec, task


def record_start(run_dir, index):
    """``tasks/<index>.start.json`` in the run folder: start time, host, Slurm ids."""
    folder = os.path.join(run_dir, "tasks")
    os.makedirs(folder, exist_ok=True)
    record = {
        "index": index,
        "start": time.time(),
        "host": os.uname().nodename,
        "job_id": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
    }
    path = os.path.join(folder, f"{index}.start.json")
    tmp = os.path.join(folder, f".{index}.start.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    os.replace(tmp, path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
        index = resolve_index(opts["task_id"], opts["offset"], os.environ)
        spec, task = load_task(opts["spec"], index)
    except WorkerError as exc:
        print(f"nexa worker: error: {exc}", file=sys.stderr)
        return 2
    args = task["argv"]
    if opts["dry_run"]:
        print(json.dumps(args, ensure_ascii=False))
        return 0
    workdir = spec.get("workdir")
    if workdir and os.path.isdir(workdir):
        os.chdir(workdir)
    run_dir = os.environ.get("NEXA_RUN_DIR") or spec.get("run_dir")
    os.environ["NEXA_TASK_INDEX"] = str(index)
    if run_dir:
        os.environ["NEXA_RUN_DIR"] = run_dir
        try:
            record_start(run_dir, index)
        except OSError as exc:
            print(f"nexa worker: warning: cannot record start: {exc}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        print(f"nexa worker: error: cannot run {args[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
