"""Compute-node side: find this array task's argv in spec.json and exec it.

Standard library only, and nothing imported that the task does not need: this runs once per
array task, thousands of times per sweep. It is started either as ``nexa worker`` or, in
generated sbatch scripts, straight from the package folder with ``python3 -S`` (see
``sweep.script.BATCH_STUB``), so it must not import the rest of nexa.

Imported from nexa.pyz, this module would be compiled again by every task: zipimport keeps
no bytecode. So the array script's stub keeps the compiled worker in the run folder
(``.nexa-worker.<cache tag>.pyc``, written by :func:`save_code` on first use) and later
tasks load it with ``marshal``: no zip directory to read, no compile, no package import.

The argv comes from ``spec.argv``, a binary index that ``nexa sweep`` writes beside
``spec.json``: reading one task from it costs a few system calls and no import (``json``
alone would double the worker's start-up). When the index is missing or older than the spec,
the worker reads ``spec.json`` instead.

Exit codes: the program's own (exec); 2 for a bad spec, index or missing task id.
"""

import marshal
import os
import sys
import time

#: ``spec.argv``: a 64-byte header ``NEXA-ARGV 1 <count> <spec size> <spec mtime_ns>``, then
#: ``count + 2`` offsets (15 digits and a newline each), then the records: record 0 holds the
#: working directory and the run folder, record ``i + 1`` task ``i``'s argv; every item ends
#: with NUL, which no argv item can contain.
INDEX_NAME = "spec.argv"
INDEX_MAGIC = b"NEXA-ARGV 1"
HEADER = 64
OFFSET = 16


def index_bytes(spec_path, workdir, run_dir, argvs):
    """The ``spec.argv`` content for ``argvs`` (written by ``nexa sweep``), tied to
    ``spec_path``'s current size and mtime so that a later edit of the spec makes it stale."""
    st = os.stat(spec_path)
    records = [b"\0".join(os.fsencode(a) for a in [workdir, run_dir]) + b"\0"]
    records += [("\0".join(argv) + "\0").encode("utf-8", "surrogateescape") for argv in argvs]
    offsets, total = [], 0
    for record in records:
        offsets.append(total)
        total += len(record)
    offsets.append(total)
    header = b"%s %d %d %d" % (INDEX_MAGIC, len(argvs), st.st_size, st.st_mtime_ns)
    table = b"".join(b"%015d\n" % o for o in offsets)
    return header.ljust(HEADER - 1) + b"\n" + table + b"".join(records)


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


def _record(fh, data_start, number):
    fh.seek(HEADER + OFFSET * number)
    pair = fh.read(2 * OFFSET)
    start, end = int(pair[:OFFSET]), int(pair[OFFSET:])
    fh.seek(data_start + start)
    return fh.read(end - start).split(b"\0")[:-1]


def load_indexed(spec_path, index):
    """``(workdir, run_dir, argv)`` as bytes from ``spec.argv``, or None when it is absent,
    foreign or stale (then the caller reads spec.json)."""
    path = os.path.join(os.path.dirname(spec_path), INDEX_NAME)
    try:
        st = os.stat(spec_path)
        with open(path, "rb") as fh:
            fields = fh.read(HEADER).split()
            if b" ".join(fields[:2]) != INDEX_MAGIC or fields[3:5] != [b"%d" % st.st_size, b"%d" % st.st_mtime_ns]:
                return None
            count = int(fields[2])
            if not 0 <= index < count:
                raise WorkerError(f"{spec_path}: task index {index} out of range (0..{count - 1})")
            data_start = HEADER + OFFSET * (count + 2)
            workdir, run_dir = _record(fh, data_start, 0)
            return workdir, run_dir, _record(fh, data_start, index + 1)
    except (OSError, ValueError, IndexError):
        return None


def load_task(spec_path, index):
    """``(workdir, run_dir, argv)`` from spec.json, every field it uses checked."""
    import json

    try:
        with open(spec_path, "rb") as fh:
            spec = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise WorkerError(f"{spec_path}: spec file not found") from None
    except OSError as exc:
        raise WorkerError(f"{spec_path}: cannot read spec: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, absurdly nested
        raise WorkerError(f"{spec_path}: not valid JSON: {str(exc).splitlines()[0][:120]}") from None
    tasks = spec.get("tasks") if type(spec) is dict else None
    if type(tasks) is not list:
        raise WorkerError(f"{spec_path}: not a nexa spec (no 'tasks' list)")
    if not 0 <= index < len(tasks):
        raise WorkerError(f"{spec_path}: task index {index} out of range (0..{len(tasks) - 1})")
    task = tasks[index]
    if type(task) is not dict or type(task.get("index")) is not int or task["index"] != index:
        raise WorkerError(f'{spec_path}: tasks[{index}] must be an object with "index": {index}')
    argv = task.get("argv")
    if type(argv) is not list or not argv or not all(type(a) is str and "\0" not in a for a in argv) or not argv[0]:
        shown = json.dumps(argv, ensure_ascii=False)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise WorkerError(f"{spec_path}: tasks[{index}].argv must be a non-empty list of strings, got {shown}")
    for key in ("workdir", "run_dir"):
        if spec.get(key) is not None and type(spec[key]) is not str:
            raise WorkerError(f"{spec_path}: {key} must be a string")
    return spec.get("workdir") or "", spec.get("run_dir") or "", argv


def _json_str(value):
    """A JSON string for ids and host names, without importing json."""
    if value is None:
        return "null"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in text) + '"'


def record_start(run_dir, index):
    """``tasks/<index>.start.json`` in the run folder: start time, host, Slurm ids."""
    folder = os.path.join(run_dir, "tasks")
    os.makedirs(folder, exist_ok=True)
    env = os.environ
    restarts = env.get("SLURM_RESTART_COUNT", "0")
    host, job = _json_str(os.uname().nodename), _json_str(env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID"))
    record = (
        f'{{"index": {index}, "start": {time.time()!r}, "host": {host}, "job_id": {job}, '
        f'"array_task_id": {_json_str(env.get("SLURM_ARRAY_TASK_ID"))}, "restart_count": {int(restarts) if restarts.isdigit() else 0}}}\n'
    )
    path = os.path.join(folder, f"{index}.start.json")
    tmp = os.path.join(folder, f".{index}.start.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(record)
    os.replace(tmp, path)


def save_code(path):
    """Write this module's code object to ``path`` (atomically) for the stub to load.

    Only a cache: any failure (a read-only run folder, a loader without ``get_code``) leaves
    the next task to import and compile as this one did.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        code = __loader__.get_code(__name__)
        with open(tmp, "wb") as fh:
            fh.write(marshal.dumps(code))
        os.replace(tmp, path)
    except (OSError, ImportError, AttributeError, TypeError):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def exec_program(args):
    """``os.execvp`` without its import of ``warnings`` (a third of the worker's own
    start-up): a name without a slash is searched on PATH; the first error other than
    "not there" (say, permission denied) is the one raised, as execvp does."""
    program = os.fsdecode(args[0])
    if "/" in program:
        os.execv(program, args)
    first = None
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execv(os.path.join(folder, program), args)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            first = first or exc
    raise first or FileNotFoundError(2, "No such file or directory", program)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
        index = resolve_index(opts["task_id"], opts["offset"], os.environ)
        found = load_indexed(opts["spec"], index) or load_task(opts["spec"], index)
    except WorkerError as exc:
        print(f"nexa worker: error: {exc}", file=sys.stderr)
        return 2
    workdir, run_dir, args = found
    workdir, run_dir = os.fsdecode(workdir), os.fsdecode(run_dir)  # the index gives bytes
    if opts["dry_run"]:
        import json

        print(json.dumps([a.decode("utf-8", "surrogateescape") if isinstance(a, bytes) else a for a in args], ensure_ascii=False))
        return 0
    if workdir and os.path.isdir(workdir):
        os.chdir(workdir)
    run_dir = os.environ.get("NEXA_RUN_DIR") or run_dir
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
        exec_program(args)
    except OSError as exc:
        print(f"nexa worker: error: cannot run {os.fsdecode(args[0])!r}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
