"""Pure planning for ``nexa launch``: the launch file, option precedence, env selection,
GPU counting and the multi-node sbatch script. No I/O beyond reading shipped templates."""

import fnmatch
import re
import shlex
from dataclasses import dataclass, field, replace
from string import Template
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .. import __version__
from ..config import NAME_RE, ClusterConfig, Resources
from ..errors import ConfigError
from ..resources import read_text
from ..schema import from_table
from . import sbatch as plan_sbatch

MODES = ("local", "ddp", "slurm")

#: Always carried to Slurm ranks: without the submitting shell's PATH, ``python`` and
#: ``torchrun`` would resolve to the login defaults instead of the user's environment.
ALWAYS_ENV = ("PATH",)

ENV_PATTERN = re.compile(r"^[A-Za-z_*?\[][A-Za-z0-9_*?\[\]!]*$")


@dataclass(frozen=True)
class LaunchFile:
    """The schema of a launch TOML file; every key is optional."""

    mode: Optional[str] = None
    command: List[str] = field(default_factory=list)
    name: Optional[str] = None
    nproc_per_node: Optional[int] = None
    env: List[str] = field(default_factory=list)
    rdzv_port: Optional[int] = None
    join_timeout: Optional[int] = None
    max_restarts: int = 0
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class LaunchSpec:
    """One launch with every option resolved (CLI/kwargs over launch file over defaults)."""

    mode: str
    command: List[str]
    name: str
    nproc_per_node: Optional[int]
    env: List[str]
    rdzv_port: Optional[int]
    join_timeout: Optional[int]
    max_restarts: int
    resources: Resources

    def nproc_for_slurm(self) -> int:
        """Processes per node in a Slurm job: explicit, else one per requested GPU, else 1."""
        return self.nproc_per_node or self.resources.gpus_per_node or 1


def parse_launch_file(table: Dict[str, Any], where: str) -> LaunchFile:
    """Strictly convert a parsed launch TOML table (unknown keys are refused)."""
    raw = from_table(LaunchFile, table, where)
    raw.resources.validate(where)
    return raw


def default_name(command: Sequence[str]) -> str:
    """A run name from the command: the script's stem (``train.py`` -> ``train``)."""
    for word in command:
        base = word.rsplit("/", 1)[-1]
        if base.endswith(".py"):
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", base[:-3])
            if stem:
                return stem
    return "launch"


def resolve(
    file: Optional[LaunchFile],
    where: str,
    *,
    command: Sequence[str] = (),
    mode: Optional[str] = None,
    name: Optional[str] = None,
    nproc_per_node: Optional[int] = None,
    nodes: Optional[int] = None,
    resources: Optional[Resources] = None,
    env: Sequence[str] = (),
    project_env: Sequence[str] = (),
    rdzv_port: Optional[int] = None,
    join_timeout: Optional[int] = None,
    max_restarts: Optional[int] = None,
) -> LaunchSpec:
    """Merge options (explicit values win over the launch file) and validate the result.

    ``where`` names the source in error messages (the launch file, or "options").
    """
    file = file or LaunchFile()
    chosen_mode = mode or file.mode or "local"
    if chosen_mode not in MODES:
        key = "mode" if not mode else "--mode"
        raise ConfigError(f"expected one of {', '.join(MODES)}, got {chosen_mode!r}", where, key)
    cmd = list(command) or list(file.command)
    if not cmd or not cmd[0]:
        raise ConfigError("no command: give it after `--` (nexa launch -- python train.py) or as command = [...]", where, "command")
    run_name = name or file.name or default_name(cmd)
    if not NAME_RE.match(run_name):
        raise ConfigError(f"expected letters, digits, '.', '_' or '-', got {run_name!r}", where, "name")
    res = resources or file.resources
    if nodes is not None:
        res = replace(res, nodes=nodes)
    nproc = nproc_per_node if nproc_per_node is not None else file.nproc_per_node
    port = rdzv_port if rdzv_port is not None else file.rdzv_port
    timeout = join_timeout if join_timeout is not None else file.join_timeout
    restarts = max_restarts if max_restarts is not None else file.max_restarts
    _check_int(nproc, 1, where, "nproc_per_node")
    _check_int(res.nodes, 1, where, "resources.nodes")
    _check_int(timeout, 1, where, "join_timeout")
    _check_int(restarts, 0, where, "max_restarts")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"expected a TCP port 1..65535, got {port}", where, "rdzv_port")
    patterns = list(project_env) + list(file.env) + list(env)
    for i, pattern in enumerate(patterns):
        if not ENV_PATTERN.match(pattern):
            raise ConfigError(f"expected a variable name or a glob like 'WANDB_*', got {pattern!r}", where, f"env[{i}]")
    if chosen_mode == "local" and nproc not in (None, 1):
        raise ConfigError("local mode runs one process; use --mode ddp for several", where, "nproc_per_node")
    if chosen_mode != "slurm" and res.nodes > 1:
        raise ConfigError(f"{chosen_mode} mode runs on this machine; use --mode slurm for {res.nodes} nodes", where, "nodes")
    if chosen_mode == "slurm" and res.ntasks_per_node != 1:
        raise ConfigError("launch runs one torchrun per node; set nproc_per_node instead", where, "resources.ntasks_per_node")
    return LaunchSpec(chosen_mode, cmd, run_name, nproc, _dedupe(patterns), port, timeout, restarts, res)


def _check_int(value: Optional[int], floor: int, where: str, key: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < floor):
        raise ConfigError(f"expected an integer >= {floor}, got {value!r}", where, key)


def _dedupe(items: Sequence[str]) -> List[str]:
    return list(dict.fromkeys(items))


def select_env(patterns: Sequence[str], environ: Mapping[str, str]) -> Dict[str, str]:
    """The variables of ``environ`` that the patterns name (globs allowed), sorted by name.

    ``ALWAYS_ENV`` is always included. Unset names are simply absent: a rank then sees the
    variable unset, exactly as in the submitting shell.
    """
    chosen: Dict[str, str] = {}
    for pattern in list(ALWAYS_ENV) + list(patterns):
        for name in sorted(environ):
            if fnmatch.fnmatchcase(name, pattern):
                chosen[name] = environ[name]
    return dict(sorted(chosen.items()))


def env_file(values: Mapping[str, str]) -> str:
    """``launch.env``: ``export NAME=value`` lines, every value shell-quoted."""
    lines = ["# Variables carried from the submitting shell by nexa launch (sourced by the job)."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def count_cuda_visible(value: Optional[str]) -> Optional[int]:
    """Devices named by ``CUDA_VISIBLE_DEVICES``; None when unset.

    CUDA stops at the first invalid entry, so ``""`` and ``"-1"`` mean no device.
    """
    if value is None:
        return None
    count = 0
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        count += 1
    return count


def count_nvidia_smi(output: str) -> int:
    """GPUs in ``nvidia-smi -L`` output: one ``GPU i: name (UUID: ...)`` line each (MIG
    devices are indented sub-lines and are not counted)."""
    return sum(1 for line in output.splitlines() if re.match(r"^GPU \d+:", line))


def ddp_args(nproc: int, port: Optional[int], join_timeout: Optional[int], max_restarts: int) -> List[str]:
    """Options for ``bin/launch_ddp.sh`` (what the generated script passes it)."""
    args = ["--nproc-per-node", str(nproc)]
    if port is not None:
        args += ["--port", str(port)]
    if join_timeout is not None:
        args += ["--join-timeout", str(join_timeout)]
    args += ["--max-restarts", str(max_restarts)]
    return args


def render_ddp_script(
    spec: LaunchSpec,
    *,
    cluster: ClusterConfig,
    run_dir: str,
    log_path: str,
    workdir: str,
    env_names: Sequence[str],
) -> str:
    """The sbatch script of a multi-node DDP job: ONE job of N nodes, one srun step that
    runs ``launch_ddp.sh`` (copied into the run folder) once per node. Every value that
    reaches the shell is ``shlex.quote``d."""
    res = replace(spec.resources, ntasks_per_node=1)
    lines = plan_sbatch.directives(res, job_name=spec.name, cluster=cluster, output=log_path, chdir=workdir)
    lines.append("#SBATCH --export=NONE")
    nproc = spec.nproc_for_slurm()
    args = ddp_args(nproc, spec.rdzv_port, spec.join_timeout, spec.max_restarts)
    return Template(read_text("sbatch/ddp.sbatch")).substitute(
        name=spec.name,
        nodes=res.nodes,
        nproc=nproc,
        version=__version__,
        env_names=" ".join(env_names) or "(none)",
        directives="\n".join(lines),
        run_dir=shlex.quote(run_dir),
        ddp_args=" ".join(shlex.quote(a) for a in args),
        command=" ".join(shlex.quote(a) for a in spec.command),
    )
