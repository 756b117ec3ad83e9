"""Compute-node side: find this array task's argv in spec.json and exec it.

The array script first looks the task up itself, in ``spec.nul`` (written here, read with
bash builtins: see ``NUL_NAME``), and starts this worker only when it cannot use that file.

Standard library only, and nothing imported that the task does not need: this runs once per
array task, thousands of times per sweep. It is started either as ``nexa worker`` or, in
generated sbatch scripts, straight from the package folder with ``python3 -S`` (see
``sweep.script.BATCH_STUB``), so it must not import the rest of nexa.
It runs on whatever ``python3`` the compute nodes have, CPython 3.6 (RHEL 8) included, and
never imports ``dataclasses``: the stub puts nexa.pyz's site-packages first on ``sys.path``,
where on 3.7+ the 3.6-only backport would shadow the standard library's (see
docs/zipapp-python.md).

Imported from nexa.pyz, this module would be compiled again by every task: zipimport keeps
no bytecode. So the array script's stub keeps the compiled worker in the run folder
(``.nexa-worker.<cache tag>.pyc``, written by :func:`save_code` on first use) and later
tasks load it with ``marshal``: no zip directory to read, no compile, no package import.

The argv comes from ``spec.argv``, a binary index that ``nexa sweep`` writes beside
``spec.json``: reading one task from it costs a few system calls and one small import
(``binascii``, for CRC-32; ``json`` alone would double the worker's start-up). The index
carries its own length, a CRC-32 of every record, a CRC-32 of its whole body and the SHA-256
of ``spec.json`` as planned, so a cut, damaged or outdated index is never trusted: the worker
then reads ``spec.json``, but only when that still is the planned spec (its SHA-256 matches);
otherwise it refuses (exit 2). A spec changed after planning is refused too: queued tasks
never run a command other than the one that was planned and shown.

Exit codes: the program's own (exec); 2 for a bad spec, index or missing task id.
"""

import marshal
import os
import sys
import time

#: ``spec.argv``, version 2: a ``HEADER``-byte line
#: ``NEXA-ARGV 2 <count> <file length> <spec size> <spec mtime_ns> <spec sha256> <body crc32>
#: <header crc32>`` (spaces, then a newline, pad it; the last field is the CRC-32 of the text
#: before it), then ``count + 2`` table entries ``<offset, 15 digits> <crc32, 8 hex>\n``, then
#: the records: record 0 holds the working directory and the run folder, record ``i + 1``
#: task ``i``'s argv; every item ends with NUL, which no argv item can contain. Entry ``k``
#: gives record ``k``'s offset (from the first record) and CRC-32; the last entry the end.
INDEX_NAME = "spec.argv"
INDEX_MAGIC = b"NEXA-ARGV 2"
LEGACY_MAGIC = b"NEXA-ARGV 1 "  # written by nexa before the checksums: ignored, spec.json is read
HEADER = 160
ENTRY = 25


def spec_digest(spec_path):
    """SHA-256 (hex) of the spec file's bytes."""
    import hashlib  # only when planning, or when the index cannot vouch for the spec

    digest = hashlib.sha256()
    with open(spec_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_bytes(spec_path, workdir, run_dir, argvs, digest=None):
    """The ``spec.argv`` content for ``argvs`` (written by ``nexa sweep`` right after the spec):
    tied to ``spec_path``'s content (SHA-256, ``digest`` when the caller has it), size and
    mtime; the worker refuses it, and a spec that no longer matches it, whenever one of them
    has changed."""
    from binascii import crc32

    st = os.stat(spec_path)
    digest = digest or spec_digest(spec_path)
    records = [b"\0".join(os.fsencode(a) for a in [workdir, run_dir]) + b"\0"]
    records += [("\0".join(argv) + "\0").encode("utf-8", "surrogateescape") for argv in argvs]
    table, total = [], 0
    for record in records:
        table.append(b"%015d %08x\n" % (total, crc32(record)))
        total += len(record)
    table.append(b"%015d %08x\n" % (total, 0))
    body = b"".join(table) + b"".join(records)
    fields = b"%s %d %d %d %d %s %08x" % (
        INDEX_MAGIC, len(argvs), HEADER + len(body), st.st_size, st.st_mtime_ns, digest.encode(), crc32(body)
    )
    header = b"%s %08x" % (fields, crc32(fields))
    if len(header) >= HEADER:  # pragma: no cover - 20-digit numbers would be needed
        raise ValueError("spec.argv header too long")
    return header.ljust(HEADER - 1) + b"\n" + body


#: ``spec.nul``: every task's argv for the array script's own lookup, with bash builtins only
#: (``mapfile -d ''``, bash >= 4.4), so that a task starts no Python before its program. Every
#: item ends with NUL, which no argv item can contain: item 0 is ``NEXA-NUL 1 <count> <spec
#: sha256>``, item ``i + 1`` is task ``i``'s ``<first item> <argc>``, and each task's argv is
#: followed by the item ``.<i>``: a file cut short, shifted or another plan's is seen, and the
#: script then runs this worker, which checks ``spec.argv`` and decides.
NUL_NAME = "spec.nul"
NUL_MAGIC = "NEXA-NUL 1"


def nul_bytes(digest, argvs):
    """The ``spec.nul`` content for ``argvs`` of the spec whose SHA-256 is ``digest``."""
    head = [f"{NUL_MAGIC} {len(argvs)} {digest}".encode()]
    entries, body, first = [], [], 1 + len(argvs)
    for i, argv in enumerate(argvs):
        entries.append(b"%d %d" % (first, len(argv)))
        body += [a.encode("utf-8", "surrogateescape") for a in argv]
        body.append(b".%d" % i)
        first += len(argv) + 1
    return b"".join(item + b"\0" for item in head + entries + body)


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


class Damaged(Exception):
    """``spec.argv`` is not what nexa wrote: ``reason``, and the SHA-256 of the spec as
    planned when its header is intact (``digest``; then spec.json may stand in for it)."""

    def __init__(self, reason, digest=None):
        super().__init__(reason)
        self.reason = reason
        self.digest = digest


def _mine(st):
    """Owned by this user and writable by no one else: safe to act on."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _record(fh, data_start, number, size, crc32):
    """Record ``number``'s items (bytes), checked against its CRC-32 in the table."""
    fh.seek(HEADER + ENTRY * number)
    pair = fh.read(2 * ENTRY)
    if len(pair) != 2 * ENTRY or pair[15:16] != b" " or pair[24:25] != b"\n" or pair[ENTRY + 15 : ENTRY + 16] != b" ":
        raise ValueError("bad table entry")
    start, crc, end = int(pair[:15]), int(pair[16:24], 16), int(pair[ENTRY : ENTRY + 15])
    if not 0 <= start < end <= size - data_start:
        raise ValueError(f"record {number} out of bounds")
    fh.seek(data_start + start)
    data = fh.read(end - start)
    if crc32(data) != crc or not data.endswith(b"\0"):
        raise ValueError(f"record {number} does not match its checksum")
    return data.split(b"\0")[:-1]


def load_indexed(spec_path, index):
    """``(workdir, run_dir, argv)`` as bytes from ``spec.argv``; None when there is none (or
    one written by a nexa without checksums): then the caller reads spec.json.

    Raises:
        Damaged: the index is cut, damaged or not one nexa wrote.
        WorkerError: no such task; spec.json changed after planning; files that another
            user owns or may write.
    """
    path = os.path.join(os.path.dirname(spec_path), INDEX_NAME)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Damaged(f"cannot read it: {exc.strerror}") from None
    with fh:
        st = os.fstat(fh.fileno())
        if not _mine(st):
            raise WorkerError(f"{path}: not owned by you, or writable by others: refusing to run what it says")
        head = fh.read(HEADER)
        if head.startswith(LEGACY_MAGIC):
            return None
        from binascii import crc32

        text, _, check = head.rstrip(b" \n").rpartition(b" ")
        fields = text.split(b" ")
        try:
            if len(fields) != 8 or b" ".join(fields[:2]) != INDEX_MAGIC or int(check, 16) != crc32(text):
                raise ValueError
            if head != (text + b" " + check).ljust(HEADER - 1) + b"\n" or len(check) != 8:
                raise ValueError
            count, length, spec_size, spec_mtime = (int(f) for f in fields[2:6])
        except ValueError:
            raise Damaged("its header is damaged") from None
        digest = fields[6].decode("ascii", "replace")
        if st.st_size != length:
            raise Damaged(f"{st.st_size} bytes, {length} expected", digest)
        try:
            spec_st = os.stat(spec_path)
        except FileNotFoundError:
            raise WorkerError(f"{spec_path}: spec file not found") from None
        except OSError as exc:
            raise WorkerError(f"{spec_path}: cannot read spec: {exc.strerror}") from None
        if not _mine(spec_st):
            raise WorkerError(f"{spec_path}: not owned by you, or writable by others: refusing to run what it says")
        if (spec_st.st_size, spec_st.st_mtime_ns) != (spec_size, spec_mtime) and spec_digest(spec_path) != digest:
            raise WorkerError(f"{spec_path}: changed after planning (it no longer matches {INDEX_NAME}): plan the sweep again")
        if not 0 <= index < count:
            raise WorkerError(f"{spec_path}: task index {index} out of range (0..{count - 1})")
        data_start = HEADER + ENTRY * (count + 2)
        try:
            head_items = _record(fh, data_start, 0, length, crc32)
            argv = _record(fh, data_start, index + 1, length, crc32)
            if len(head_items) != 2 or not argv[0]:
                raise ValueError(f"record {index + 1} is not an argv")
        except ValueError as exc:
            raise Damaged(str(exc), digest) from None
        return head_items[0], head_items[1], argv


def verify_index(spec_path):
    """What is wrong with the ``spec.argv`` beside ``spec_path`` (missing, damaged, stale),
    or None when it is intact and matches the spec: the whole-file check."""
    from binascii import crc32

    path = os.path.join(os.path.dirname(spec_path), INDEX_NAME)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    fields = data[:HEADER].split()
    if len(fields) != 9 or b" ".join(fields[:2]) != INDEX_MAGIC:
        return f"{path}: not a nexa index (version 2)"
    try:
        if int(fields[3]) != len(data) or int(fields[7], 16) != crc32(data[HEADER:]):
            return f"{path}: damaged"
    except ValueError:
        return f"{path}: damaged"
    try:
        if spec_digest(spec_path) != fields[6].decode("ascii", "replace"):
            return f"{spec_path}: does not match {path}"
    except OSError as exc:
        return f"cannot read {spec_path}: {exc.strerror}"
    return None


def load_task(spec_path, index):
    """``(workdir, run_dir, argv)`` from spec.json, every field it uses checked."""
    import json

    try:
        with open(spec_path, "rb") as fh:
            if not _mine(os.fstat(fh.fileno())):
                raise WorkerError(f"{spec_path}: not owned by you, or writable by others: refusing to run what it says")
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


def create_exclusive(folder, prefix, mode=0o644):
    """A new file in ``folder`` that nobody else prepared: a name no one can guess, created
    with O_EXCL|O_NOFOLLOW (a file or symbolic link planted there is never opened). Returns
    ``(fd, path)``."""
    while True:
        tmp = os.path.join(folder, f"{prefix}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        os.fchmod(fd, mode)  # not the umask's choice: never writable by the group or others
        return fd, tmp


def _write_replace(folder, prefix, data, path, mode=0o644):
    """Write ``data`` to a fresh temp file (see ``create_exclusive``) and rename it onto ``path``."""
    fd, tmp = create_exclusive(folder, prefix, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def record_start(run_dir, index):
    """``tasks/<index>.start.json`` in the run folder: start time, host, Slurm ids."""
    folder = os.path.join(run_dir, "tasks")
    os.makedirs(folder, mode=0o755, exist_ok=True)
    env = os.environ
    restarts = env.get("SLURM_RESTART_COUNT", "0")
    host, job = _json_str(os.uname().nodename), _json_str(env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID"))
    record = (
        f'{{"index": {index}, "start": {time.time()!r}, "host": {host}, "job_id": {job}, '
        f'"array_task_id": {_json_str(env.get("SLURM_ARRAY_TASK_ID"))}, "restart_count": {int(restarts) if restarts.isdigit() else 0}}}\n'
    )
    _write_replace(folder, f".{index}.start", record.encode("utf-8"), os.path.join(folder, f"{index}.start.json"))


def save_code(path):
    """Write this module's code object to ``path`` (atomically, mode 0644) for the stub to load.

    Only a cache: any failure (a read-only run folder, a loader without ``get_code``) leaves
    the next task to import and compile as this one did. The stub loads only a cache that
    this user owns and no one else may write.
    """
    try:
        code = __loader__.get_code(__name__)
        folder, name = os.path.split(path)
        _write_replace(folder or ".", f".{name}", marshal.dumps(code), path)
    except (OSError, ImportError, AttributeError, TypeError):
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


def _load(spec_path, index):
    """The task from the index; from spec.json when there is no index, or when the index
    is damaged but the spec is exactly the one planned (its SHA-256 is in the header)."""
    try:
        return load_indexed(spec_path, index) or load_task(spec_path, index)
    except Damaged as exc:
        path = os.path.join(os.path.dirname(spec_path), INDEX_NAME)
        try:
            intact = exc.digest is not None and spec_digest(spec_path) == exc.digest
        except OSError:
            intact = False
        if not intact:
            why = f"{path}: damaged ({exc.reason}) and {spec_path} cannot be checked against it"
            raise WorkerError(f"{why}: plan the sweep again") from None
        print(f"nexa worker: warning: {path}: damaged ({exc.reason}); reading the spec, which is intact", file=sys.stderr)
        return load_task(spec_path, index)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
        index = resolve_index(opts["task_id"], opts["offset"], os.environ)
        found = _load(opts["spec"], index)
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
        # The program appends its metrics here (nexa results); the folder was made with the run.
        os.environ["NEXA_METRICS_FILE"] = f"{run_dir}/metrics/{index}.jsonl"
        os.environ["NEXA_TASK_DIR"] = f"{run_dir}/out/{index}"  # runs.OUT: the task's own folder, made by the program
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
