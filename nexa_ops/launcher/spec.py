"""Pure planning for ``nexa launch``: the launch file, option precedence, env selection,
GPU counting and the multi-node sbatch script. No I/O beyond reading shipped templates."""

import fnmatch
import re
import shlex
from dataclasses import field, replace
from string import Template
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .. import __version__, envfile
from ..config import NAME_RE, ClusterConfig, Resources, is_env_name
from ..errors import ConfigError
from ..resources import read_text
from ..schema import from_table
from ..structs import frozen
from ..tools.slurm import check_line, directives

MODES = ("local", "ddp", "slurm")

#: Always carried to Slurm ranks: without the submitting shell's PATH, ``python`` and
#: ``torchrun`` would resolve to the login defaults instead of the user's environment.
ALWAYS_ENV = ("PATH",)

ENV_PATTERN = re.compile(r"[A-Za-z_*?\[][A-Za-z0-9_*?\[\]!]*")  # use with fullmatch


@frozen
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


@frozen
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
    project_rdzv_port: Optional[int] = None,
    project_where: str = "nexa.toml",
    rdzv_port: Optional[int] = None,
    join_timeout: Optional[int] = None,
    max_restarts: Optional[int] = None,
) -> LaunchSpec:
    """Merge options (explicit values win over the launch file, which wins over ``[launch]`` of
    nexa.toml) and validate the result.

    ``where`` names the launch file in error messages, ``project_where`` nexa.toml (for
    ``project_env`` and ``project_rdzv_port``). A bad option value is named by its flag
    (``--rdzv-port: ...``), a bad file value by the file and key.
    """
    has_file = file is not None
    file = file or LaunchFile()

    def bad(message: str, key: str, flag: Optional[str] = None) -> ConfigError:
        """The error for a value from option ``flag`` (when given) or the launch file's ``key``."""
        if flag:
            return ConfigError(f"{flag}: {message}")
        if has_file:
            return ConfigError(message, where, key)
        return ConfigError(f"{key}: {message}")

    chosen_mode = mode if mode is not None else file.mode or "local"
    if chosen_mode not in MODES:
        raise bad(f"expected one of {', '.join(MODES)}, got {chosen_mode!r}", "mode", "--mode" if mode is not None else None)
    cmd = list(command) or list(file.command)
    if not cmd or not cmd[0]:
        message = "no command: give it after `--` (nexa launch -- python train.py) or as command = [...]"
        raise ConfigError(message, where, "command") if has_file else ConfigError(message)
    run_name = next((n for n in (name, file.name) if n is not None), None)
    if run_name is None:
        run_name = default_name(cmd)
    if not isinstance(run_name, str) or not NAME_RE.fullmatch(run_name):  # fullmatch: not even a final newline
        raise bad(f"expected letters, digits, '.', '_' or '-', got {run_name!r}", "name", "--name" if name is not None else None)
    res = resources or file.resources
    if nodes is not None:
        res = replace(res, nodes=nodes)
    nproc = nproc_per_node if nproc_per_node is not None else file.nproc_per_node
    timeout = join_timeout if join_timeout is not None else file.join_timeout
    restarts = max_restarts if max_restarts is not None else file.max_restarts
    nproc_flag = "--nproc-per-node" if nproc_per_node is not None else None
    nodes_flag = "--nodes" if nodes is not None else ("resources" if resources is not None else None)
    _check_int(nproc, 1, bad, "nproc_per_node", nproc_flag)
    _check_int(res.nodes, 1, bad, "resources.nodes", nodes_flag)
    _check_int(timeout, 1, bad, "join_timeout", "--join-timeout" if join_timeout is not None else None)
    _check_int(restarts, 0, bad, "max_restarts", "max_restarts" if max_restarts is not None else None)
    # Every rdzv_port given is checked, also one overridden by a higher-precedence source.
    if rdzv_port is not None:
        _check_port(rdzv_port, bad, "rdzv_port", "--rdzv-port")
    if file.rdzv_port is not None:
        _check_port(file.rdzv_port, bad, "rdzv_port")
    if project_rdzv_port is not None:
        _check_port(project_rdzv_port, lambda m, k, f=None: ConfigError(m, project_where, f"launch.{k}"), "rdzv_port")
    port = next((p for p in (rdzv_port, file.rdzv_port, project_rdzv_port) if p is not None), None)
    expected_env = "expected an environment variable name or a glob like 'WANDB_*'"
    for i, pattern in enumerate(project_env):
        if not _env_ok(pattern):
            raise ConfigError(f"{expected_env}, got {pattern!r}", project_where, f"launch.env[{i}]")
    for i, pattern in enumerate(file.env):
        if not _env_ok(pattern):
            raise bad(f"{expected_env}, got {pattern!r}", f"env[{i}]")
    for pattern in env:
        if not _env_ok(pattern):
            raise bad(f"{expected_env}, got {pattern!r}", "env", "--env")
    patterns = list(project_env) + list(file.env) + list(env)
    if chosen_mode == "local" and nproc not in (None, 1):
        raise bad("local mode runs one process; use --mode ddp for several", "nproc_per_node", nproc_flag)
    if chosen_mode != "slurm" and res.nodes > 1:
        raise bad(f"{chosen_mode} mode runs on this machine; use --mode slurm for {res.nodes} nodes", "resources.nodes", nodes_flag)
    if chosen_mode == "slurm" and res.ntasks_per_node != 1:
        key = "resources.ntasks_per_node"
        raise bad("launch runs one torchrun per node; set nproc_per_node instead", key, "resources" if resources is not None else None)
    return LaunchSpec(chosen_mode, cmd, run_name, nproc, list(dict.fromkeys(patterns)), port, timeout, restarts, res)


def _env_ok(pattern: Any) -> bool:
    return isinstance(pattern, str) and ENV_PATTERN.fullmatch(pattern) is not None


def _check_int(value: Optional[int], floor: int, bad: Any, key: str, flag: Optional[str] = None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < floor):
        raise bad(f"expected an integer >= {floor}, got {value!r}", key, flag)


def _check_port(value: Any, bad: Any, key: str, flag: Optional[str] = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise bad(f"expected a TCP port 1..65535, got {value!r}", key, flag)


def select_env(patterns: Sequence[str], environ: Mapping[str, str]) -> Dict[str, str]:
    """The variables of ``environ`` that the patterns name (globs allowed), sorted by name.

    ``ALWAYS_ENV`` is always included. Unset names are simply absent: a rank then sees the
    variable unset, exactly as in the submitting shell.
    """
    chosen: Dict[str, str] = {}
    names = sorted(name for name in environ if is_env_name(name))  # only names a script can hold
    for pattern in list(ALWAYS_ENV) + list(patterns):
        for name in names:
            if fnmatch.fnmatchcase(name, pattern):
                chosen[name] = environ[name]
    return dict(sorted(chosen.items()))


def env_file(values: Mapping[str, str]) -> str:
    """``launch.env``: ``export NAME=value`` lines, every name checked, every value shell-quoted."""
    return envfile.env_file(values, "Variables carried from the submitting shell by nexa launch (sourced by the job).")


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
    upstream: str = "# no upstream run (--after)",
) -> str:
    """The sbatch script of a multi-node DDP job: ONE job of N nodes, one srun step that
    runs ``launch_ddp.sh`` (copied into the run folder) once per node. Every value that
    reaches the shell is ``shlex.quote``d, every ``#SBATCH`` value quoted as Slurm reads it;
    ``log_path`` is a Slurm filename pattern (see ``tools.slurm.filename_pattern``);
    ``upstream``: lines from ``pipeline.env_lines``."""
    check_line(run_dir, "run folder")
    res = replace(spec.resources, ntasks_per_node=1)
    lines = directives(res, job_name=spec.name, cluster=cluster, output=log_path, chdir=workdir)
    lines.append("#SBATCH --export=NONE")
    nproc = spec.nproc_for_slurm()
    args = ddp_args(nproc, spec.rdzv_port, spec.join_timeout, spec.max_restarts)
    return Template(read_text("sbatch/ddp.sbatch")).substitute(
        name=spec.name,
        nodes=res.nodes,
        nproc=nproc,
        version=__version__,
        env_names=" ".join(envfile.script_env_names(env_names)) or "(none)",
        directives="\n".join(lines),
        run_dir=shlex.quote(run_dir),
        ddp_args=" ".join(shlex.quote(a) for a in args),
        command=" ".join(shlex.quote(a) for a in spec.command),
        upstream=upstream,
    )
