"""The sweep's array script, from ``sbatch/array.sbatch``: directives, stubs, quoting."""

import shlex
from string import Template
from typing import Optional

from .. import __version__, worker
from ..config import ClusterConfig, Resources
from ..resources import read_text
from ..tools.slurm import array_spec, check_line, directives, filename_pattern, signal_directives

# The worker runs with the standard library only (-S): one tiny import, no invoke, no
# extraction of the zipapp. sys.argv[1] is the folder holding nexa_ops (a checkout or
# nexa.pyz/site-packages, which zipimport reads in place).
WORKER_STUB = "import sys;sys.path.insert(0,sys.argv.pop(1));from nexa_ops.worker import main;sys.exit(main())"
# In the array script, argv[2] is the run folder's bytecode cache of the worker (zipimport
# keeps none; see nexa_ops.worker): the first task imports the worker and saves its code,
# later ones load it with marshal. Only a cache this user owns, that no one else may write,
# and that is a plain file (not a link, not a FIFO) is ever loaded: anything else is ignored
# and the worker imported as on the first task. The worker runs in the background there (so
# the shell can trap Slurm's signals), and bash starts background commands with SIGINT
# ignored: undo that before exec. (_signal, the builtin behind `signal`, costs nothing to
# import; `signal` pulls in enum. posix is the builtin behind os, already loaded.)
BATCH_STUB = """\
import _signal, marshal, posix, sys
_signal.signal(2, _signal.SIG_DFL)
path, cache = sys.argv.pop(1), "%s.%s.pyc" % (sys.argv.pop(1), sys.implementation.cache_tag)
scope = {"__name__": "nexa_worker", "__file__": cache}
try:
    fd = posix.open(cache, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK)
    try:
        st = posix.fstat(fd)
        if st.st_uid != posix.geteuid() or st.st_mode & 0o170022 != 0o100000:
            raise PermissionError(cache)  # not ours alone, or not a plain file: never run it
        code = marshal.loads(posix.read(fd, st.st_size))
    finally:
        posix.close(fd)
    exec(code, scope)
    main = scope["main"]
except Exception:  # no cache yet (first task), another Python's, damaged, or not ours
    sys.path.insert(0, path)
    from nexa_ops import worker
    worker.save_code(cache)
    main = worker.main
sys.exit(main())
"""
# The promotion job of a halving sweep (sweep/promote.py), also with -S from where the worker
# is (argv[1]). That folder goes first on sys.path, as for the worker; but the promotion job
# imports dataclasses, so the standard library's is imported before nexa.pyz's 3.6 backport
# can shadow it (on 3.6 there is none, and the backport is found).
PROMOTE_STUB = """\
import sys
path = sys.argv.pop(1)
try:
    import dataclasses
except ImportError:
    pass
sys.path.insert(0, path)
from nexa_ops.sweep.promote import main
sys.exit(main())
"""
PROMOTE_TIME = "00:10:00"  # one CPU for a few seconds; the limit is generous


# The sweep file's `env`: its variables, with their values when the sweep was planned, are
# in sweep.env (mode 0600) and every task sources it, also where the site submits with
# --export=NONE or `nexa resubmit` runs from another shell.
SWEEP_ENV = """\
# The sweep's `env` variables (sweep.env: their values at planning, readable by you alone).
env_file={env}
if [ -f "$env_file" ] && [ ! -L "$env_file" ] && [ -O "$env_file" ]; then
  # shellcheck source=/dev/null
  . "$env_file"
else
  echo "nexa: $env_file: missing, or not a plain file of yours: not sourced, task $index not run" >&2
  exit 2
fi
"""


def render_array_script(
    *,
    name: str,
    res: Resources,
    cluster: ClusterConfig,
    count: int,
    spec_path: str,
    run_dir: str,
    log_dir: str,
    workdir: str,
    worker_path: str,
    python: str = "python3",
    upstream: str = "# no upstream run (--after)",
    env_file: str = "",
    trials: Optional[int] = None,
    spec_digest: str = "",
) -> str:
    """The whole array script. Every value that reaches the shell is ``shlex.quote``d, every
    ``#SBATCH`` value quoted as Slurm reads it (``tools.slurm.directive_value``), a ``%`` in
    the log folder written ``%%``; a path with a control character is refused (a line break
    would end a comment or directive line and start a command). ``upstream``: the
    ``--after`` variables' lines, quoted by ``pipeline.env_lines``. ``trials``: a halving
    sweep's configuration count; each task then also gets its rung, its trial id and the
    trial's own folder (``NEXA_RUNG``, ``NEXA_TRIAL_ID``, ``NEXA_TRIAL_DIR``).
    ``spec_digest``: the planned spec's SHA-256, which its ``spec.nul`` must carry for a task
    to read its argv there with bash alone (empty: every task starts the Python worker)."""
    if spec_digest and not all(c in "0123456789abcdef" for c in spec_digest):
        raise ValueError(f"not a SHA-256 in hex: {spec_digest!r}")
    for what, value in (("run folder", run_dir), ("spec", spec_path), ("[cluster] pyz_path", worker_path), ("[cluster] python", python),
                        ("working directory", workdir)):
        check_line(value, what)
    lines = directives(
        res,
        job_name=name,
        cluster=cluster,
        array=array_spec(count, res.max_parallel),
        output=filename_pattern(log_dir, "%A_%a.out", "log folder"),
        error=filename_pattern(log_dir, "%A_%a.err", "log folder"),
        chdir=workdir,
    )
    at = len(lines) - len(res.extra)  # the user's own extra directives stay last and win
    lines[at:at] = signal_directives(res)
    sweep_env = ""
    if env_file:  # the sweep's `env` variables: sourced only when it is this user's own plain file
        check_line(env_file, "env file")
        quoted = shlex.quote(env_file)
        sweep_env = SWEEP_ENV.format(env=quoted)
    return Template(read_text("sbatch/array.sbatch")).substitute(
        name=name,
        count=count,
        version=__version__,
        spec=shlex.quote(spec_path),
        spec_digest=shlex.quote(spec_digest),
        nul_name=worker.NUL_NAME,  # spec.nul's name and header: worker.py is the home of its format
        nul_magic=worker.NUL_MAGIC,
        workdir=shlex.quote(workdir),
        directives="\n".join(lines),
        run_dir=shlex.quote(run_dir),
        python=shlex.quote(python),
        worker_stub=shlex.quote(BATCH_STUB),
        worker_path=shlex.quote(worker_path),
        warn_signal=shlex.quote(res.signal),
        max_requeues=shlex.quote(str(res.max_requeues if res.requeue else 0)),
        upstream=upstream,
        sweep_env=sweep_env,
        trial_env=trial_env(trials) if trials else "",
    )


def trial_env(trials: int) -> str:
    """The array script's lines for a halving sweep: task = rung x trials + trial."""
    return (
        f"# Successive halving: task = rung x {trials} + trial; a trial keeps its folder from rung to rung.\n"
        f"export NEXA_RUNG=$((index / {trials})) NEXA_TRIAL_ID=$((index % {trials}))\n"
        'export NEXA_TRIAL_DIR="$run_dir/trials/$NEXA_TRIAL_ID"\n'
        '[ -d "$NEXA_TRIAL_DIR" ] || mkdir -m 755 "$NEXA_TRIAL_DIR"  # in trials/, made at planning; never writable by others\n'
    )


def render_promote_script(
    *,
    name: str,
    res: Resources,
    cluster: ClusterConfig,
    partition: Optional[str],
    run_dir: str,
    worker_path: str,
    python: str = "python3",
) -> str:
    """A halving sweep's promotion script: one CPU, a short limit, the sweep's partition and
    account unless ``partition`` (``[search] promote_partition``) says otherwise; it runs
    ``sweep.promote`` with ``python -S`` from where the worker runs. Its log and dependency
    are given at each submission."""
    for what, value in (("run folder", run_dir), ("[cluster] pyz_path", worker_path), ("[cluster] python", python)):
        check_line(value, what)
    small = Resources(
        cpus_per_task=1,
        time=PROMOTE_TIME,
        partition=partition or res.partition,
        account=res.account,
    )
    lines = directives(small, job_name=f"{name}.promote", cluster=cluster, chdir=run_dir)
    return Template(read_text("sbatch/promote.sbatch")).substitute(
        name=name,
        version=__version__,
        run_dir=shlex.quote(run_dir),
        directives="\n".join(lines),
        python=shlex.quote(python),
        stub=shlex.quote(PROMOTE_STUB),
        worker_path=shlex.quote(worker_path),
    )
