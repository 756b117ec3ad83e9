"""Resources -> ``#SBATCH`` directives, and the array script from ``sbatch/array.sbatch``."""

import shlex
from string import Template
from typing import List, Optional

from .. import __version__
from ..config import ClusterConfig, Resources
from ..resources import read_text

# The worker runs with the standard library only (-S): one tiny import, no invoke, no
# extraction of the zipapp. sys.argv[1] is the folder holding nexa_ops (a checkout or
# nexa.pyz/site-packages, which zipimport reads in place).
WORKER_STUB = "import sys;sys.path.insert(0,sys.argv.pop(1));from nexa_ops.worker import main;sys.exit(main())"
# In the array script, argv[2] is the run folder's bytecode cache of the worker (zipimport
# keeps none; see nexa_ops.worker): the first task imports the worker and saves its code,
# later ones load it with marshal. The worker runs in the background there (so the shell can
# trap Slurm's signals), and bash starts background commands with SIGINT ignored: undo that
# before exec. (_signal, the builtin behind `signal`, costs nothing to import; `signal`
# pulls in enum.)
BATCH_STUB = """\
import _signal, marshal, sys
_signal.signal(2, _signal.SIG_DFL)
path, cache = sys.argv.pop(1), "%s.%s.pyc" % (sys.argv.pop(1), sys.implementation.cache_tag)
scope = {"__name__": "nexa_worker", "__file__": cache}
try:
    with open(cache, "rb") as f:
        exec(marshal.load(f), scope)
    main = scope["main"]
except Exception:  # no cache yet (first task), another Python's, or damaged
    sys.path.insert(0, path)
    from nexa_ops import worker
    worker.save_code(cache)
    main = worker.main
sys.exit(main())
"""


def directive_value(text: str) -> str:
    """Slurm reads ``#SBATCH`` lines with its own tokenizer: quote values with spaces."""
    return f'"{text}"' if any(c.isspace() for c in text) else text


def directives(
    res: Resources,
    *,
    job_name: str,
    cluster: Optional[ClusterConfig] = None,
    array: Optional[str] = None,
    output: Optional[str] = None,
    error: Optional[str] = None,
    chdir: Optional[str] = None,
) -> List[str]:
    """The ``#SBATCH`` lines for ``res``; cluster defaults fill partition and account."""
    cluster = cluster or ClusterConfig()
    opts = [("job-name", job_name)]
    partition = res.partition or cluster.partition
    account = res.account or cluster.account
    if partition:
        opts.append(("partition", partition))
    if account:
        opts.append(("account", account))
    opts.append(("nodes", str(res.nodes)))
    opts.append(("ntasks-per-node", str(res.ntasks_per_node)))
    if res.gpus_per_node:
        if res.gpu_type:
            opts.append(("gres", f"gpu:{res.gpu_type}:{res.gpus_per_node}"))
        else:
            opts.append(("gpus-per-node", str(res.gpus_per_node)))
    if res.cpus_per_task:
        opts.append(("cpus-per-task", str(res.cpus_per_task)))
    if res.mem:
        opts.append(("mem", res.mem))
    if res.time:
        opts.append(("time", res.time))
    if array:
        opts.append(("array", array))
    if output:
        opts.append(("output", output))
    if error:
        opts.append(("error", error))
    if chdir:
        opts.append(("chdir", chdir))
    lines = [f"#SBATCH --{key}={directive_value(value)}" for key, value in opts]
    lines += [f"#SBATCH {directive_value(item)}" for item in res.extra]
    return lines


def array_spec(count: int, max_parallel: Optional[int]) -> str:
    """``0-N`` with the ``%P`` throttle when set."""
    text = f"0-{count - 1}" if count > 1 else "0"
    if max_parallel:
        text += f"%{max_parallel}"
    return text


def warn_seconds(res: Resources) -> int:
    """Lead time of the warning signal: ``signal_seconds``, but at most half a shorter limit."""
    if res.time:
        from ..config import time_to_hours

        limit = int(time_to_hours(res.time) * 3600)
        if 0 < limit <= res.signal_seconds:
            return max(1, limit // 2)
    return res.signal_seconds


def signal_directives(res: Resources) -> List[str]:
    """Warning signal to the batch shell before the limit; requeue and appended logs if asked."""
    lines = [f"#SBATCH --signal=B:{res.signal}@{warn_seconds(res)}"]
    if res.requeue:
        lines += ["#SBATCH --requeue", "#SBATCH --open-mode=append"]
    return lines


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
) -> str:
    """The whole array script. Every value that reaches the shell is ``shlex.quote``d."""
    lines = directives(
        res,
        job_name=name,
        cluster=cluster,
        array=array_spec(count, res.max_parallel),
        output=f"{log_dir}/%A_%a.out",
        error=f"{log_dir}/%A_%a.err",
        chdir=workdir,
    )
    at = len(lines) - len(res.extra)  # the user's own extra directives stay last and win
    lines[at:at] = signal_directives(res)
    return Template(read_text("sbatch/array.sbatch")).substitute(
        name=name,
        count=count,
        version=__version__,
        spec=shlex.quote(spec_path),
        directives="\n".join(lines),
        run_dir=shlex.quote(run_dir),
        python=shlex.quote(python),
        worker_stub=shlex.quote(BATCH_STUB),
        worker_path=shlex.quote(worker_path),
        warn_signal=shlex.quote(res.signal),
        max_requeues=shlex.quote(str(res.max_requeues if res.requeue else 0)),
    )
