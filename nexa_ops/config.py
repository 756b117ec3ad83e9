"""``nexa.toml`` (project settings) and sweep files, as frozen dataclasses.

Loading is strict (see ``schema``): what is not understood is refused with the file and key,
before anything is written or run.
"""

import math
import os
import re
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from . import toml
from .errors import ConfigError
from .schema import from_table
from .structs import frozen

CONFIG_NAME = "nexa.toml"
ENV_CONFIG = "NEXA_CONFIG"

NAME_RE = re.compile(r"[A-Za-z0-9._-]+\Z")  # with .match: the whole string (\Z, unlike $, not before a final newline)
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\Z")
TIME_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?\Z")
MEM_RE = re.compile(r"^\d+[KMGT]?\Z")
#: An environment variable name that may be written into a script or a file: anything else
#: could end a line or start a command there.
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_env_name(name: Any) -> bool:
    """The one check every writer of variable names into a script or file goes through."""
    return isinstance(name, str) and ENV_NAME_RE.match(name) is not None


WARN_SIGNALS = ("USR1", "USR2")  # TERM/INT would be taken for a cancel or an interrupt


# --- nexa.toml -------------------------------------------------------------------------


@frozen
class ClusterConfig:
    """Defaults for the Slurm cluster the project submits to."""

    partition: Optional[str] = None
    account: Optional[str] = None
    runs_dir: str = "runs"
    log_dir: Optional[str] = None  # default: <run folder>/logs
    pyz_path: Optional[str] = None  # nexa.pyz on the cluster; default: this nexa's own location
    python: str = "python3"  # interpreter that runs the worker on compute nodes
    max_array_size: Optional[int] = None  # default: read from `scontrol show config`


@frozen
class CostConfig:
    """``[cost]``: which price applies; checked in ``plan.cost.check_cost_config``."""

    provider: Optional[str] = None  # a provider of the price table, or your own cluster's name
    max_cost: Optional[float] = None  # default for --max-cost (USD per submission)
    rates: Dict[str, float] = field(default_factory=dict)  # gpu_type -> USD per GPU-hour (wins)
    gpu_type: Optional[str] = None  # default GPU type when [resources] has none
    currency: str = "USD"  # only USD: the shipped table and the reports are in USD
    prices: Optional[str] = None  # extra price table (same format as data/prices.toml)


@frozen
class SyncConfig:
    """``[sync]``: where ``nexa sync`` copies the project (see docs/sync.md)."""

    host: Optional[str] = None
    user: Optional[str] = None
    port: Optional[int] = None
    identity: Optional[str] = None
    dest: Optional[str] = None  # default: the project folder's name, under the remote home
    exclude: List[str] = field(default_factory=list)  # extra rsync exclude patterns
    delete: bool = False
    ssh_options: List[str] = field(default_factory=list)  # extra `ssh -o` options, e.g. "ProxyJump=bastion"
    rsync_path: Optional[str] = None  # rsync on the remote when not on its PATH


@frozen
class TeardownCampaign:
    """``[teardown.<campaign>] tf_dir``: the campaign's terraform folder, relative to nexa.toml."""

    tf_dir: str


#: ``[teardown] dirs = { C = "DIR" }`` is read by ``teardown_dirs``, so ``dirs`` cannot also be
#: the name of a ``[teardown.<campaign>]`` table.
TEARDOWN_DIRS_KEY = "dirs"


@frozen
class ContainerService:
    """Per-service override in ``[containers.services.<name or alias>]``."""

    tag: Optional[str] = None
    dockerfile: Optional[str] = None  # relative to the project root
    context: Optional[str] = None  # build context of an overridden dockerfile (default: project root)


@frozen
class ContainersConfig:
    services: Dict[str, ContainerService] = field(default_factory=dict)
    mounts: List[str] = field(default_factory=list)  # extra "HOST:CONTAINER[:ro]" mounts
    nvme: str = "/mnt/nvme"
    shm_size: str = "16g"
    ulimits: List[str] = field(default_factory=lambda: ["memlock=-1", "stack=67108864"])
    env: List[str] = field(default_factory=list)  # extra variable names passed by name when set
    network: Optional[str] = None  # docker --network (e.g. "host" for multi-node NCCL)
    workspace: Optional[str] = None  # mounted at /workspace (default: the project root)
    docker: str = "docker"  # the Docker CLI (name on PATH or path)


@frozen
class MonitorConfig:
    """``[monitor]``: what ``nexa monitor-config`` scrapes (checked in ``nexa_ops.monitor``)."""

    targets: List[str] = field(default_factory=list)  # node hostnames/addresses, no ports
    exporters: List[str] = field(default_factory=lambda: ["dcgm", "node", "nexa"])
    dcgm_port: int = 9400
    node_exporter_port: int = 9100
    nexa_exporter_port: int = 9835
    from_slurm: bool = False
    partition: Optional[str] = None  # with from_slurm: only this partition's nodes
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    out: str = "monitoring"  # where monitor-config writes, relative to nexa.toml
    prometheus_url: Optional[str] = None  # Grafana's datasource; `nexa efficiency` reads GPU utilisation there


@frozen
class LaunchConfig:
    env: List[str] = field(default_factory=list)
    rdzv_port: Optional[int] = None


@frozen
class ProjectConfig:
    """``[project]``: how runs treat the project's code (see docs/pipelines.md)."""

    snapshot: bool = False  # run every task from a copy of the code taken at submission


@frozen
class NexaConfig:
    """The whole of ``nexa.toml``. ``path`` is None when defaults are used."""

    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    teardown: Dict[str, TeardownCampaign] = field(default_factory=dict)
    #: ``[teardown] dirs``: campaign -> terraform folder (relative to nexa.toml), see ``teardown_dirs``
    teardown_dirs: Dict[str, str] = field(default_factory=dict, metadata={"internal": True})
    containers: ContainersConfig = field(default_factory=ContainersConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    project: ProjectConfig = field(default_factory=ProjectConfig)
    path: Optional[Path] = field(default=None, metadata={"internal": True})
    root: Path = field(default_factory=Path.cwd, metadata={"internal": True})

    @property
    def runs_dir(self) -> Path:
        return (self.root / os.path.expanduser(self.cluster.runs_dir)).resolve()

    def snapshot_wanted(self, flag: Optional[bool]) -> bool:
        """``--snapshot`` / ``snapshot=`` when given, else ``[project] snapshot``."""
        return bool(self.project.snapshot if flag is None else flag)

    @property
    def where(self) -> str:
        """The project file as errors name it: its path, or ``nexa.toml`` when none was found."""
        return str(self.path) if self.path else CONFIG_NAME


def find_config(explicit: Optional[Union[str, Path]] = None, cwd: Optional[Path] = None) -> Optional[Path]:
    """The project file to use: ``explicit``, else ``$NEXA_CONFIG``, else the nearest
    ``nexa.toml`` from ``cwd`` upward (see ``discover``); None when there is none."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    return discover(Path(cwd) if cwd is not None else Path.cwd())


def discover(start: Path) -> Optional[Path]:
    """The nearest ``nexa.toml`` in ``start`` or a folder above it, as git finds a repository,
    so that a command run from ``src/`` uses the project's file and its ``runs/``.

    The search stops at the filesystem root, at a mount boundary (a project does not span
    filesystems; git stops there too), and after ``$HOME`` when ``start`` is inside it: the
    folders above a home (``/home``, ``/``) are nobody's project. A file found in a folder
    above ``start`` must belong to you (or root): it configures what your commands run, and
    ``/tmp/nexa.toml`` could be anyone's.

    Raises:
        ConfigError: the nearest file above ``start`` belongs to another user.
    """
    folder = start.resolve()
    try:
        device = folder.stat().st_dev
    except OSError:
        return None
    home = Path(os.path.expanduser("~")).resolve() if os.path.isabs(os.path.expanduser("~")) else None
    while True:
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            if folder != start.resolve():
                _check_owner(candidate)
            return candidate
        parent = folder.parent
        if folder == home or parent == folder:
            return None
        try:
            if parent.stat().st_dev != device:
                return None
        except OSError:
            return None
        folder = parent


def _check_owner(path: Path) -> None:
    owner = path.stat().st_uid
    if owner not in (os.getuid(), 0):
        message = f"found above the current folder but owned by uid {owner}, not by you: pass --project {path} to use it"
        raise ConfigError(message, str(path))


def load_config(explicit: Optional[Union[str, Path]] = None, cwd: Optional[Path] = None) -> NexaConfig:
    """Load ``nexa.toml`` (see ``find_config``); no file means all defaults.

    Args:
        explicit: the config file to load (default None: ``$NEXA_CONFIG``, else the nearest ``nexa.toml``
            in ``cwd`` or a folder above it, see ``discover``).
        cwd: the folder the search for ``nexa.toml`` starts from, and the project root when none is
            found (default None: the current folder).

    Returns:
        NexaConfig: the ``[cluster]``, ``[cost]``, ``[sync]``, ``[teardown]`` (``dirs`` and ``[teardown.*]``), ``[containers]``,
        ``[monitor]``, ``[launch]`` and ``[project]`` sections (defaults for what is absent), ``path`` (the file,
        None when defaults are used), ``root`` (its folder) and ``runs_dir``.

    Raises:
        ConfigError: an explicit or ``$NEXA_CONFIG`` file that does not exist or cannot be read, invalid
            TOML, or an unknown key or a value of the wrong type (with the file and key).
    """
    path = find_config(explicit, cwd)
    if path is None:
        return NexaConfig(root=(cwd or Path.cwd()).resolve())
    table = toml.load(path)
    table, dirs = teardown_dirs(table, str(path))
    cfg = from_table(NexaConfig, table, str(path))
    size = cfg.cluster.max_array_size
    if size is not None and size < 1:
        raise ConfigError(f"expected an integer >= 1 (Slurm's MaxArraySize), got {size}", str(path), "cluster.max_array_size")
    return _replace(cfg, path=path, root=path.resolve().parent, teardown_dirs=dirs)


def teardown_dirs(table: Dict[str, Any], path: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Split ``[teardown] dirs = { C = "DIR" }`` off the file's table (the rest of ``[teardown]``
    is ``[teardown.<campaign>]`` tables). Campaign names as everywhere; a folder is a non-empty
    single-line path; a campaign mapped both ways is refused (which one would win?)."""
    from .schema import convert

    section = table.get("teardown")
    if not isinstance(section, dict) or TEARDOWN_DIRS_KEY not in section:
        return table, {}
    key = f"teardown.{TEARDOWN_DIRS_KEY}"
    raw = section[TEARDOWN_DIRS_KEY]
    if isinstance(raw, dict) and set(raw) == {"tf_dir"}:  # [teardown.dirs] tf_dir = ...: a campaign named "dirs"?
        raise ConfigError(
            f"'{TEARDOWN_DIRS_KEY}' is reserved for the map of campaigns to folders; for a campaign named "
            f"'{TEARDOWN_DIRS_KEY}' write [teardown] dirs = {{ dirs = \"DIR\" }}",
            path,
            f"{key}.tf_dir",
        )
    dirs = convert(Dict[str, str], raw, path, key)
    for campaign, folder in dirs.items():
        if not NAME_RE.match(campaign):
            raise ConfigError(f"expected a campaign name of letters, digits, '.', '_' or '-', got {campaign!r}", path, key)
        if not folder.strip():
            raise ConfigError("expected a terraform folder, got an empty string", path, f"{key}.{campaign}")
        if campaign in section and campaign != TEARDOWN_DIRS_KEY:
            raise ConfigError(
                f"campaign {campaign!r} is also mapped by [teardown.{campaign}] tf_dir: keep one of the two", path, f"{key}.{campaign}"
            )
    rest = dict(table)
    rest["teardown"] = {k: v for k, v in section.items() if k != TEARDOWN_DIRS_KEY}
    return rest, dirs


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


# --- sweep files -------------------------------------------------------------------------


@frozen
class Resources:
    """High-level resources; become ``#SBATCH`` directives and the cost estimate."""

    nodes: int = 1
    ntasks_per_node: int = 1
    gpus_per_node: int = 0
    gpu_type: Optional[str] = None
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None
    time: Optional[str] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    max_parallel: Optional[int] = None
    estimated_hours: Optional[float] = None
    extra: List[str] = field(default_factory=list)
    requeue: bool = False  # requeue a task warned of its time limit (or preemption), see docs/track.md, "Time limits..."
    max_requeues: int = 3  # ... at most this many times (SLURM_RESTART_COUNT)
    signal: str = "USR1"  # the warning signal Slurm sends the batch script, forwarded to the program
    signal_seconds: int = 120  # how long before the time limit (Slurm may send it up to 60 s earlier)

    def validate(self, path: str) -> None:
        for name in ("nodes", "ntasks_per_node"):
            if getattr(self, name) < 1:
                raise ConfigError("expected an integer >= 1", path, f"resources.{name}")
        for name in ("gpus_per_node", "cpus_per_task", "max_parallel"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "gpus_per_node" else 1):
                floor = 0 if name == "gpus_per_node" else 1
                raise ConfigError(f"expected an integer >= {floor}", path, f"resources.{name}")
        if self.time is not None and not TIME_RE.match(self.time):
            raise ConfigError(
                f"expected a Slurm time like '04:00:00', '90' (minutes) or '1-12:00:00', got {self.time!r}",
                path,
                "resources.time",
            )
        if self.mem is not None and not MEM_RE.match(self.mem):
            raise ConfigError(f"expected a size like '200G' or '4096M', got {self.mem!r}", path, "resources.mem")
        if self.estimated_hours is not None and self.estimated_hours <= 0:
            raise ConfigError("expected a number > 0", path, "resources.estimated_hours")
        for i, item in enumerate(self.extra):
            if not item.startswith("-"):
                raise ConfigError(f"expected a directive starting with '-', got {item!r}", path, f"resources.extra[{i}]")
        if self.max_requeues < 0:
            raise ConfigError("expected an integer >= 0", path, "resources.max_requeues")
        if self.signal not in WARN_SIGNALS:
            raise ConfigError(f"expected one of {', '.join(WARN_SIGNALS)}, got {self.signal!r}", path, "resources.signal")
        if not 1 <= self.signal_seconds <= 65535:
            raise ConfigError("expected seconds between 1 and 65535", path, "resources.signal_seconds")

    def time_hours(self) -> Optional[float]:
        """The time limit in hours, or None when unset or 0 (Slurm's "no limit")."""
        if self.time is None:
            return None
        return time_to_hours(self.time) or None


def time_to_hours(text: str) -> float:
    """Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    if "-" in text:
        days, rest = text.split("-", 1)
        parts = [int(p) for p in rest.split(":")]
        h, m, s = (parts + [0, 0, 0])[:3]
        return int(days) * 24 + h + m / 60 + s / 3600
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        return parts[0] / 60
    if len(parts) == 2:
        return parts[0] / 60 + parts[1] / 3600
    return parts[0] + parts[1] / 60 + parts[2] / 3600


@frozen
class RandomParam:
    kind: str  # uniform | log_uniform | int_uniform | choice
    args: List[Any]


@frozen
class RandomSpec:
    samples: int = 1
    seed: int = 0
    params: Dict[str, RandomParam] = field(default_factory=dict)


@frozen
class Launcher:
    """How each task's command is started: directly, or under torchrun on its node."""

    kind: str = "direct"  # direct | torchrun
    nproc_per_node: Optional[int] = None


@frozen
class SearchBudget:
    """``[search.budget]``: the parameter nexa sets per rung, from ``min`` up to ``max``."""

    param: str
    min: Union[int, float]
    max: Union[int, float]


@frozen
class SearchSpec:
    """``[search]``: successive halving over the grid (``docs/halving.md``)."""

    method: str  # "halving", the one method there is
    metric: str  # read from each task's metrics file (its last value)
    budget: SearchBudget
    mode: str = "min"  # or "max"
    eta: int = 3  # keep the best 1/eta of each rung; the budget grows x eta
    promote_partition: Optional[str] = None  # the promotion jobs' partition (default: the sweep's)


SEARCH_METHODS = ("halving",)


@frozen
class SweepDefinition:
    """A parsed and validated sweep file."""

    name: str
    command: List[str]
    arg_format: str = "--{key}={value}"
    campaign: Optional[str] = None
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    fixed: Dict[str, Any] = field(default_factory=dict)
    random: Optional[RandomSpec] = None
    exclude: List[Dict[str, Any]] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    launcher: Launcher = field(default_factory=Launcher)
    env: List[str] = field(default_factory=list)
    path: Optional[Path] = None
    search: Optional[SearchSpec] = None

    @property
    def param_keys(self) -> List[str]:
        keys = list(self.grid) + list(self.fixed)
        if self.random:
            keys += list(self.random.params)
        return keys


@frozen
class _SweepFile:
    """The raw schema of a sweep file (random params are checked by hand)."""

    name: str
    command: List[str]
    arg_format: str = "--{key}={value}"
    campaign: Optional[str] = None
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    fixed: Dict[str, Any] = field(default_factory=dict)
    random: Optional[Dict[str, Any]] = None
    exclude: List[Dict[str, Any]] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    launcher: Optional[Union[str, Dict[str, Any]]] = None
    env: List[str] = field(default_factory=list)
    search: Optional[SearchSpec] = None


SCALAR = (str, int, float, bool)
RANDOM_KINDS = {
    "uniform": "[low, high] numbers",
    "log_uniform": "[low, high] numbers > 0",
    "int_uniform": "[low, high] integers",
    "choice": "a non-empty list of values",
}


def load_sweep(path: Union[str, Path]) -> SweepDefinition:
    """Parse and validate a sweep file.

    Args:
        path: the sweep's TOML file.

    Returns:
        SweepDefinition: ``name``, ``command``, ``arg_format``, ``campaign``, the parameters (``grid``,
        ``fixed``, ``random``, ``exclude``), ``resources``, ``launcher``, ``env`` and ``path``.

    Raises:
        ConfigError: the file does not exist or is not valid TOML, or a key is unknown or a value
            invalid (with the file and key), before anything is written or run.
    """
    path = Path(path)
    return parse_sweep(toml.load(path), str(path), path)


def parse_sweep(table: Dict[str, Any], where: str, path: Optional[Path] = None) -> SweepDefinition:
    raw = from_table(_SweepFile, table, where)
    if not NAME_RE.match(raw.name):
        raise ConfigError(f"expected letters, digits, '.', '_' or '-', got {raw.name!r}", where, "name")
    if raw.campaign is not None and not NAME_RE.match(raw.campaign):
        raise ConfigError(f"expected letters, digits, '.', '_' or '-', got {raw.campaign!r}", where, "campaign")
    if not raw.command or not raw.command[0]:
        raise ConfigError('expected a non-empty argv list like ["python", "train.py"]', where, "command")
    _check_arg_format(raw.arg_format, where)
    seen: Dict[str, str] = {}
    for section, keys in (("fixed", raw.fixed), ("grid", raw.grid)):
        for key, value in keys.items():
            _check_key(key, section, seen, where)
            values = value if section == "grid" else [value]
            if section == "grid" and not value:
                raise ConfigError("expected a non-empty list of values", where, f"grid.{key}")
            for v in values:
                if not isinstance(v, SCALAR):
                    raise ConfigError(f"expected a string, number or boolean, got {type(v).__name__}", where, f"{section}.{key}")
                _check_value(v, where, f"{section}.{key}")
    random = _parse_random(raw.random, seen, where) if raw.random is not None else None
    for i, rule in enumerate(raw.exclude):
        if not rule:
            raise ConfigError("expected a non-empty table of key = value", where, f"exclude[{i}]")
        for key, value in rule.items():
            if key not in seen:
                raise ConfigError(f"unknown parameter{_did_you_mean(key, seen)}", where, f"exclude[{i}].{key}")
            if not isinstance(value, SCALAR):
                raise ConfigError("expected a string, number or boolean", where, f"exclude[{i}].{key}")
    raw.resources.validate(where)
    for i, name in enumerate(raw.env):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\*?\Z", name):
            raise ConfigError(f"expected a variable name or a NAME_* prefix, got {name!r}", where, f"env[{i}]")
    if raw.search is not None:
        _check_search(raw.search, seen, where)
    return SweepDefinition(
        name=raw.name,
        command=list(raw.command),
        arg_format=raw.arg_format,
        campaign=raw.campaign,
        grid=dict(raw.grid),
        fixed=dict(raw.fixed),
        random=random,
        exclude=list(raw.exclude),
        resources=raw.resources,
        launcher=_parse_launcher(raw.launcher, where),
        env=list(raw.env),
        path=path,
        search=raw.search,
    )


def _check_value(value: Any, where: str, key: str) -> None:
    """A parameter value becomes part of an argv item: no NUL (it would cut the item short),
    no nan or inf (spec.json must stay valid JSON)."""
    from .schema import check_text

    if isinstance(value, str):
        check_text(value, where, key, argv=True)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {value!r}", where, key)


def _did_you_mean(key: str, choices: Dict[str, str]) -> str:
    from .schema import suggest

    return suggest(key, choices)


def _check_key(key: str, section: str, seen: Dict[str, str], where: str) -> None:
    if not KEY_RE.match(key):
        raise ConfigError("expected a parameter name of letters, digits, '_', '.', '-'", where, f"{section}.{key}")
    if key in seen:
        raise ConfigError(f"parameter also set in [{seen[key]}]", where, f"{section}.{key}")
    seen[key] = section


def _check_arg_format(fmt: str, where: str) -> None:
    if "{value}" not in fmt:
        raise ConfigError(f"expected a template containing '{{value}}', like '--{{key}}={{value}}', got {fmt!r}", where, "arg_format")
    if fmt.count(" ") > 1 or (" " in fmt and not fmt.endswith(" {value}")):
        raise ConfigError(f"expected '--{{key}}={{value}}', '--{{key}} {{value}}' or '{{key}}={{value}}', got {fmt!r}", where, "arg_format")


def _parse_random(table: Dict[str, Any], seen: Dict[str, str], where: str) -> RandomSpec:
    spec = (
        from_table(RandomSpec, {k: v for k, v in table.items() if k != "params"}, where, "random")
        if set(table) - {"params"}
        else RandomSpec()
    )
    if spec.samples < 1:
        raise ConfigError("expected an integer >= 1", where, "random.samples")
    params_table = table.get("params", {})
    if not isinstance(params_table, dict):
        raise ConfigError("expected a table", where, "random.params")
    params = {}
    for key, dist in params_table.items():
        full = f"random.params.{key}"
        _check_key(key, "random.params", seen, where)
        if not isinstance(dist, dict) or len(dist) != 1:
            raise ConfigError(
                "expected one of { uniform = [lo, hi] }, { log_uniform = [lo, hi] }, { int_uniform = [lo, hi] }, { choice = [...] }",
                where,
                full,
            )
        ((kind, args),) = dist.items()
        if kind not in RANDOM_KINDS:
            hint = _did_you_mean(kind, dict.fromkeys(RANDOM_KINDS, ""))
            raise ConfigError(
                f"unknown distribution {kind!r}{hint}; expected one of {', '.join(RANDOM_KINDS)}",
                where,
                full,
            )
        _check_dist(kind, args, where, f"{full}.{kind}")
        params[key] = RandomParam(kind, list(args))
    return RandomSpec(samples=spec.samples, seed=spec.seed, params=params)


def _check_dist(kind: str, args: Any, where: str, key: str) -> None:
    expected = f"expected {RANDOM_KINDS[kind]}"
    if not isinstance(args, list) or not args:
        raise ConfigError(expected, where, key)
    for a in args:
        _check_value(a, where, key)
    if kind == "choice":
        if not all(isinstance(a, SCALAR) for a in args):
            raise ConfigError(expected + " (strings, numbers or booleans)", where, key)
        return
    if len(args) != 2:
        raise ConfigError(expected, where, key)
    want = int if kind == "int_uniform" else (int, float)
    if not all(isinstance(a, want) and not isinstance(a, bool) for a in args):
        raise ConfigError(expected, where, key)
    lo, hi = args
    if lo > hi or (kind == "log_uniform" and lo <= 0):
        raise ConfigError(expected + f", got {args!r}", where, key)


def _check_search(search: SearchSpec, seen: Dict[str, str], where: str) -> None:
    """``[search]``: the method, metric and mode; ``eta`` >= 2; a budget parameter of its own
    that grows from ``min`` > 0 to a larger ``max``."""
    if search.method not in SEARCH_METHODS:
        raise ConfigError(f"expected {' or '.join(repr(m) for m in SEARCH_METHODS)}, got {search.method!r}", where, "search.method")
    if not search.metric.strip() or search.metric == "step":
        raise ConfigError(f"expected the name of a metric the tasks report (not 'step'), got {search.metric!r}", where, "search.metric")
    if search.mode not in ("min", "max"):
        raise ConfigError(f"expected 'min' or 'max', got {search.mode!r}", where, "search.mode")
    if search.eta < 2:
        raise ConfigError(f"expected an integer >= 2 (keep the best 1/eta of each rung), got {search.eta}", where, "search.eta")
    if search.promote_partition is not None and not search.promote_partition.strip():
        raise ConfigError("expected a partition name, got ''", where, "search.promote_partition")
    budget = search.budget
    if not KEY_RE.match(budget.param):
        raise ConfigError("expected a parameter name of letters, digits, '_', '.', '-'", where, "search.budget.param")
    if budget.param in seen:
        message = f"parameter also set in [{seen[budget.param]}]: nexa sets the budget itself, rung by rung"
        raise ConfigError(message, where, "search.budget.param")
    if budget.min <= 0:
        raise ConfigError(f"expected a number > 0, got {budget.min!r}", where, "search.budget.min")
    if budget.max <= budget.min:
        raise ConfigError(f"expected a number > min ({budget.min!r}), got {budget.max!r}", where, "search.budget.max")


def _parse_launcher(value: Optional[Union[str, Dict[str, Any]]], where: str) -> Launcher:
    if value is None:
        return Launcher()
    table = {"kind": value} if isinstance(value, str) else value
    launcher = from_table(Launcher, table, where, "launcher")
    if launcher.kind not in ("direct", "torchrun"):
        raise ConfigError(f"expected 'direct' or 'torchrun', got {launcher.kind!r}", where, "launcher.kind")
    if launcher.nproc_per_node is not None and launcher.nproc_per_node < 1:
        raise ConfigError("expected an integer >= 1", where, "launcher.nproc_per_node")
    return launcher
