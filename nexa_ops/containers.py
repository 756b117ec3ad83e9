"""The three nexa images and ``run-container``: Docker made safe on shared machines.

``plan_run`` is pure: it turns a service, a command and the host's facts into the exact
``docker run`` argv (tested without Docker). ``run_container`` gathers those facts (uid, gid,
TTY, GPUs, paths), checks the image and the daemon first so failures have a clear message, and
runs it. Secrets pass by name only (``-e NAME``): their values never appear in an argv or a log.
"""

import os
import re
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .config import ENV_NAME_RE, ContainerService, NexaConfig, load_config
from .errors import ConfigError, ContainerError
from .structs import frozen, mutable

WORKSPACE = "/workspace"
HF_CACHE = "/cache/huggingface"  # where the host's HuggingFace cache appears in the container
PULL_POLICIES = ("missing", "never", "always")
#: Passed by name whenever they are set on the host: the tokens training jobs need.
DEFAULT_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
    "WANDB_ENTITY",
    "WANDB_PROJECT",
    "WANDB_MODE",
    "NCCL_DEBUG",
)
# Docker's image reference grammar: [host[:port]/]path[:tag][@digest]. A host is dot-separated
# labels or a bracketed IPv6 address; path components are lower-case alphanumerics joined by
# '.', '_', '__' or dashes; a tag is [\w][\w.-]{0,127}; a digest is algorithm:hex (>= 32).
# Nothing can start with '-', so no reference can ever be read as a docker option.
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF_RE = re.compile(
    rf"^(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?\Z"
)
IMAGE_REF_WORDS = "an image reference like 'registry.example:5000/team/name:tag' or 'name@sha256:<hex>'"


def check_image_ref(ref: str, where: str, key: str) -> str:
    """``ref`` when it is a Docker image reference (name at most 255 characters), else a
    one-line ``ConfigError`` naming the file and key."""
    name = ref.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    if not IMAGE_REF_RE.match(ref) or len(name) > 255:
        raise ConfigError(f"expected {IMAGE_REF_WORDS}, got {ref!r}", where, key)
    return ref




@frozen
class Service:
    """One row of the image table."""

    name: str
    alias: str
    dockerfile: str  # shipped file, relative to the package (images/...)
    tag: str
    purpose: str


SERVICES: Dict[str, Service] = {
    s.name: s
    for s in (
        Service("nexa_light", "train-light", "images/train-light.Dockerfile", "ghcr.io/nexa/nexa_light:latest",
                "HF / TRL training stack, models up to ~20B, single node"),
        Service("nexa_heavy", "train-heavy", "images/train-heavy.Dockerfile", "ghcr.io/nexa/nexa_heavy:latest",
                "Axolotl, DeepSpeed, FlashAttention-2, compilers for FSDP"),
        Service("nexa_infer", "infer", "images/infer.Dockerfile", "ghcr.io/nexa/nexa_infer:latest",
                "lean vLLM serving, fast start"),
    )
}
ALIASES = {s.alias: s.name for s in SERVICES.values()}


@frozen
class ResolvedService:
    """A service with the ``nexa.toml`` overrides applied."""

    name: str
    tag: str
    dockerfile: str  # a shipped relative path, or an absolute path when overridden
    shipped: bool  # True when dockerfile is the packaged one
    context: Optional[str]  # build context for an overridden dockerfile
    key: Optional[str] = None  # the [containers.services.<key>] that overrides it, if any


@frozen
class Mount:
    source: str
    target: str
    readonly: bool = False

    def arg(self) -> str:
        return f"type=bind,source={self.source},target={self.target}" + (",readonly" if self.readonly else "")


@frozen
class RunSpec:
    """Everything ``plan_run`` needs; all host facts are already resolved into it."""

    image: str
    service: str
    command: List[str] = field(default_factory=list)
    uid: int = 1000
    gid: int = 1000
    groups: List[int] = field(default_factory=list)
    gpus: str = "none"
    env_names: List[str] = field(default_factory=list)
    pull: str = "missing"
    mounts: List[Mount] = field(default_factory=list)
    hf_cache: bool = True  # a host HF cache is mounted at HF_CACHE
    shm_size: Optional[str] = "16g"
    ulimits: List[str] = field(default_factory=list)
    network: Optional[str] = None
    tty: bool = False
    name: Optional[str] = None
    docker: str = "docker"


@mutable
class ContainerResult:
    """What ``run_container`` did. ``stdout``/``stderr`` are set only with ``capture=True``."""

    service: str
    image: str
    argv: List[str]
    exit_code: int
    seconds: float
    dry_run: bool = False
    stdout: Optional[str] = None
    stderr: Optional[str] = None


@mutable
class BuildResult:
    service: str
    tag: str
    dockerfile: str
    context: str
    argv: List[str]
    pushed: bool
    seconds: float
    dry_run: bool = False
    output: Optional[str] = None


# --- services ----------------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """``train-light`` -> ``nexa_light``; unknown names are a ``ConfigError`` with choices."""
    if name in SERVICES:
        return name
    if name in ALIASES:
        return ALIASES[name]
    from .schema import suggest

    choices = sorted(SERVICES) + sorted(ALIASES)
    raise ConfigError(f"unknown service {name!r}{suggest(name, choices)}; expected one of {', '.join(choices)}")


def resolve_service(name: str, config: NexaConfig) -> ResolvedService:
    """The service's tag and Dockerfile after ``[containers.services.*]`` overrides."""
    canonical = canonical_name(name)
    base = SERVICES[canonical]
    where = config.where
    override: Optional[ContainerService] = None
    override_key: Optional[str] = None
    for key, value in config.containers.services.items():
        try:
            target = canonical_name(key)
        except ConfigError as exc:
            raise ConfigError(str(exc), where, f"containers.services.{key}") from None
        if target == canonical:
            if override is not None:
                raise ConfigError(f"{canonical} is configured twice (by name and by alias)", where, f"containers.services.{key}")
            override, override_key = value, key
    tag = base.tag
    dockerfile, shipped, context = base.dockerfile, True, None
    if override is not None:
        if override.tag is not None:
            tag = check_image_ref(override.tag, where, f"containers.services.{override_key}.tag")
        if override.dockerfile is not None:
            dockerfile, shipped = str(_project_path(config, override.dockerfile)), False
        if override.context is not None:
            context = str(_project_path(config, override.context))
    return ResolvedService(canonical, tag, dockerfile, shipped, context, override_key)


def _project_path(config: NexaConfig, path: str) -> Path:
    return (config.root / os.path.expanduser(path)).resolve()


# --- the docker run argv (pure) ----------------------------------------------------------


def check_gpus(value: str) -> str:
    """``all``, ``none``, a count ``N`` or a device list ``0,1``; returned normalised."""
    text = str(value).strip().lower()
    if text in ("all", "none") or re.match(r"^\d+$", text) or re.match(r"^\d+(,\d+)+$", text):
        return text
    raise ConfigError(f"--gpus: expected all, none, a count N or a device list like 0,1; got {value!r}")


def gpus_args(gpus: str) -> List[str]:
    """Docker's ``--gpus`` syntax: a device list needs the quoted ``"device=..."`` form."""
    if gpus in ("none", "0"):
        return []
    if "," in gpus:
        return ["--gpus", f'"device={gpus}"']
    return ["--gpus", gpus]


def plan_run(spec: RunSpec) -> List[str]:
    """The exact ``docker run`` argv for ``spec``. No I/O."""
    argv = [spec.docker, "run", "--rm", "-i"]
    if spec.tty:
        argv.append("-t")
    if spec.name:
        argv += ["--name", spec.name]
    argv += ["--label", f"ai.nexa.service={spec.service}"]
    argv += ["--pull", spec.pull]
    # Host uid:gid so files on shared volumes belong to the user; supplementary groups kept.
    argv += ["--user", f"{spec.uid}:{spec.gid}"]
    for group in spec.groups:
        if group != spec.gid:
            argv += ["--group-add", str(group)]
    # An init process reaps DataLoader workers and forwards signals; no privilege escalation.
    argv += ["--init", "--security-opt", "no-new-privileges"]
    if spec.shm_size:
        argv += ["--shm-size", spec.shm_size]  # PyTorch DataLoader workers share tensors through /dev/shm
    for limit in spec.ulimits:
        argv += ["--ulimit", limit]
    if spec.network:
        argv += ["--network", spec.network]
    argv += gpus_args(spec.gpus)
    for mount in spec.mounts:
        argv += ["--mount", mount.arg()]
    argv += ["-w", WORKSPACE, "-e", f"NEXA_WORKDIR={WORKSPACE}"]
    if spec.hf_cache:
        argv += ["-e", f"HF_HOME={HF_CACHE}"]
    for name in spec.env_names:
        argv += ["-e", name]  # by name only: Docker reads the value from our environment
    argv += ["--", spec.image]  # options end here: the image is never read as one
    argv += list(spec.command)
    return argv


def parse_mount(text: str, root: Path, where: str, key: str) -> Mount:
    """``HOST:CONTAINER[:ro|rw]`` from config; HOST may use ``~`` or be relative to the project."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ConfigError(f"expected 'HOST:CONTAINER' or 'HOST:CONTAINER:ro', got {text!r}", where, key)
    if not parts[1].startswith("/"):
        raise ConfigError(f"expected an absolute container path, got {parts[1]!r}", where, key)
    if "," in text:
        raise ConfigError(NO_COMMA.format(text), where, key)
    source = (root / os.path.expanduser(parts[0])).resolve()
    return Mount(str(source), parts[1], len(parts) == 3 and parts[2] == "ro")


#: ``--mount`` is a comma-separated list of key=value: a ',' in a path would end the field.
NO_COMMA = "paths with ',' cannot be bind-mounted by nexa, got {!r}"


def bind(source: Path, target: str, origin: str) -> Mount:
    """A ``Mount`` of a host folder nexa chose (workspace, NVMe, HF cache); ``origin`` names
    the option or setting it came from, for the error on a path with a ','."""
    for path in (str(source), target):
        if "," in path:
            raise ConfigError(f"{origin}: {NO_COMMA.format(path)}")
    return Mount(str(source), target)


def check_mounts(mounts: Sequence[Mount], *, create_hf_cache: bool) -> None:
    """Every mount source must exist (``--mount type=bind`` fails on a missing one), except the
    HF cache, which a real run creates (``create_hf_cache``) so Docker does not, owned by root."""
    for mount in mounts:
        if mount.target == HF_CACHE:
            if create_hf_cache:
                Path(mount.source).mkdir(parents=True, exist_ok=True)
        elif not os.path.exists(mount.source):
            raise ConfigError(f"mount source {mount.source} does not exist (for {mount.target})")


def check_env_names(names: Sequence[str]) -> List[str]:
    """Variable names for ``--env``; a ``NAME=value`` would put a secret on a command line."""
    out: List[str] = []
    for name in names:
        if "=" in name:
            raise ConfigError(
                f"--env takes a variable NAME, not NAME=value (got {name.split('=', 1)[0]}=...): "
                "export the variable, then pass --env NAME, so its value never appears in a command line"
            )
        if not ENV_NAME_RE.match(name):
            raise ConfigError(f"--env: expected a variable name like HF_TOKEN, got {name!r}")
        if name not in out:
            out.append(name)
    return out


# --- run-container -----------------------------------------------------------------------


def host_has_gpus() -> bool:
    """NVIDIA device nodes present: then ``--gpus all`` is the default."""
    return os.path.exists("/dev/nvidiactl") or any(p.name[6:].isdigit() for p in Path("/dev").glob("nvidia[0-9]*"))


def host_hf_cache() -> Path:
    return Path(os.path.expanduser(os.environ.get("HF_HOME") or "~/.cache/huggingface"))


def run_container(
    service: str,
    command: Optional[Sequence[str]] = None,
    *,
    gpus: Optional[str] = None,
    env: Sequence[str] = (),
    pull: str = "missing",
    dry_run: bool = False,
    config: Optional[NexaConfig] = None,
    workspace: Optional[str] = None,
    uid: Optional[int] = None,
    gid: Optional[int] = None,
    groups: Optional[Sequence[int]] = None,
    tty: Optional[bool] = None,
    capture: bool = False,
) -> ContainerResult:
    """Run ``command`` (default: the image's shell) in ``service``'s image; return its exit code.

    The container runs with ``--rm --init``, as the host user, with the workspace mounted at
    ``/workspace``, the host HuggingFace cache at ``/cache/huggingface``, the NVMe folder and
    ``[containers] mounts``. Before running, the mount sources are checked (by a dry run too)
    and one ``docker image inspect`` call checks the daemon and the image, so common failures
    read clearly.

    Args:
        service: a service name or alias: ``nexa_light``/``train-light``, ``nexa_heavy``/``train-heavy``,
            ``nexa_infer``/``infer``; its tag may be overridden in ``[containers.services.*]``.
        command: the argv to run in the container (default None: the image's default command).
        gpus: ``all``, ``none``, a count ``N`` or a device list ``0,1`` (default None: ``all`` when the
            host has NVIDIA devices, else ``none``).
        env: variable NAMES (not ``NAME=value``) to pass; each must be set in this process. Their
            values reach the container by name only, never in an argv or a log. ``HF_TOKEN``,
            ``WANDB_*`` and ``[containers] env`` are passed as well whenever set (default: none extra).
        pull: docker's pull policy, ``missing`` (default), ``never`` or ``always``.
        dry_run: print the ``docker run`` command instead of running it (default False).
        config: the project's ``NexaConfig`` (default None: ``load_config()``).
        workspace: host folder mounted at ``/workspace`` (default None: ``[containers] workspace``,
            else the project root).
        uid: user id the container runs as (default None: this process's, so files on shared
            volumes belong to the user).
        gid: group id the container runs as (default None: this process's).
        groups: supplementary group ids (default None: this process's groups when ``uid`` and ``gid``
            are both defaulted, else none).
        tty: allocate a TTY (default None: when stdin and stdout are terminals and not ``capture``).
        capture: capture the container's stdout/stderr into the result instead of the terminal
            (default False).

    Returns:
        ContainerResult: ``service`` (canonical name), ``image`` (tag), ``argv`` (the exact
        ``docker run`` command), ``exit_code`` (the container's own, returned not raised; 0 on a dry
        run), ``seconds``, ``dry_run``, and ``stdout``/``stderr`` (only with ``capture=True``).

    Raises:
        ConfigError: unknown service, a tag override that is not an image reference, bad
            ``gpus``/``pull``/``env`` name, an ``env`` variable not set,
            a bad ``[containers]`` entry, a mount path with a ',', or a mount source that does not
            exist (a dry run checks all of these too).
        ContainerError: the image is not local and ``pull="never"`` forbids pulling it (exit 125).
        ToolMissing: the Docker CLI is not on PATH.
        ToolError: the daemon is unreachable or the socket not permitted (from the image check).
    """
    from .tools import docker as tool

    config = config or load_config()
    cc = config.containers
    where = config.where
    resolved = resolve_service(service, config)
    if pull not in PULL_POLICIES:
        raise ConfigError(f"--pull: expected one of {', '.join(PULL_POLICIES)}, got {pull!r}")
    gpus = check_gpus(gpus) if gpus is not None else ("all" if host_has_gpus() else "none")
    names = check_env_names(env)
    missing = [n for n in names if n not in os.environ]
    if missing:
        raise ConfigError(f"--env {missing[0]}: not set in this environment (export it first; it is passed by name)")
    for i, name in enumerate(cc.env):
        if not ENV_NAME_RE.match(name):
            raise ConfigError(f"expected a variable name, got {name!r}", where, f"containers.env[{i}]")
    names += [n for n in list(DEFAULT_ENV) + list(cc.env) if n in os.environ and n not in names]

    if workspace:
        mounts = [bind(Path(workspace).resolve(), WORKSPACE, "--workspace")]
    elif cc.workspace:
        mounts = [bind(_project_path(config, cc.workspace), WORKSPACE, f"{where}: containers.workspace")]
    else:
        mounts = [bind(config.root, WORKSPACE, "the project root")]
    nvme = Path(cc.nvme)
    if cc.nvme and nvme.is_dir():
        mounts.append(bind(nvme.resolve(), cc.nvme, f"{where}: containers.nvme"))
    mounts.append(bind(host_hf_cache(), HF_CACHE, "the HuggingFace cache ($HF_HOME)"))
    mounts += [parse_mount(m, config.root, where, f"containers.mounts[{i}]") for i, m in enumerate(cc.mounts)]
    check_mounts(mounts, create_hf_cache=not dry_run)  # a dry run fails as the run would, creating nothing

    own = uid is None and gid is None
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    groups = list(groups) if groups is not None else (sorted(set(os.getgroups())) if own else [])
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty() and not capture
    spec = RunSpec(
        image=resolved.tag,
        service=resolved.name,
        command=list(command or []),
        uid=uid,
        gid=gid,
        groups=groups,
        gpus=gpus,
        env_names=names,
        pull=pull,
        mounts=mounts,
        hf_cache=True,
        shm_size=cc.shm_size or None,
        ulimits=list(cc.ulimits),
        network=cc.network,
        tty=tty,
        name=f"nexa-{resolved.name}-{uid}-{os.getpid()}",
        docker=cc.docker,
    )
    argv = plan_run(spec)
    if dry_run:
        tool.run(argv, dry_run=True)
        return ContainerResult(resolved.name, resolved.tag, argv, 0, 0.0, dry_run=True)

    # Daemon reachable and image present? One cheap call, so the common failures read clearly.
    if tool.image_id(resolved.tag, docker=cc.docker) is None:
        if pull == "never":
            raise ContainerError(
                f"image {resolved.tag} is not on this machine and --pull never forbids pulling it; "
                f"build it with `nexa build-image {resolved.name}` or use --pull missing"
            )
        print(f"nexa: image {resolved.tag} is not on this machine; docker will pull it", file=sys.stderr)
    start = time.monotonic()
    result = tool.run(argv, capture=capture)
    return ContainerResult(
        resolved.name,
        resolved.tag,
        argv,
        result.returncode,
        time.monotonic() - start,
        stdout=result.stdout,
        stderr=result.stderr,
    )


# --- build-image -------------------------------------------------------------------------


def build_context_dir(service: str) -> Path:
    """Where a shipped image's small build context is staged (never the whole checkout)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "nexa" / "build" / service


def stage_shipped_context(resolved: ResolvedService, target: Path) -> Path:
    """Write the shipped Dockerfile and ``bin/nexa-bootstrap.sh`` into ``target``."""
    from . import resources
    from .fs import atomic_write_text

    atomic_write_text(target / "Dockerfile", resources.read_text(resolved.dockerfile))
    atomic_write_text(target / "bin" / "nexa-bootstrap.sh", resources.read_text("bin/nexa-bootstrap.sh"), mode=0o755)
    return target / "Dockerfile"


def plan_build(
    resolved: ResolvedService,
    dockerfile: str,
    context: str,
    *,
    version: str,
    docker: str = "docker",
    no_cache: bool = False,
    build_args: Sequence[str] = (),
) -> List[str]:
    """The ``docker build`` argv. No I/O."""
    argv = [docker, "build", "-f", dockerfile, "-t", resolved.tag, "--build-arg", f"NEXA_VERSION={version}"]
    for arg in build_args:
        argv += ["--build-arg", arg]
    if no_cache:
        argv.append("--no-cache")
    argv += ["--label", f"ai.nexa.version={version}", "--label", f"ai.nexa.service={resolved.name}"]
    argv += ["--", context]
    return argv


def build_image(
    service: str,
    push: bool = False,
    *,
    dry_run: bool = False,
    config: Optional[NexaConfig] = None,
    version: Optional[str] = None,
    no_cache: bool = False,
    build_args: Sequence[str] = (),
    capture: bool = False,
) -> BuildResult:
    """Build ``service``'s image with its tag and the nexa version label; push it with ``push``.

    A shipped Dockerfile builds from a small staged context (the Dockerfile and the bootstrap
    script only), so a big checkout is never sent to the daemon. Without the buildx plugin
    the legacy builder is selected explicitly (DOCKER_BUILDKIT=0), which silences Docker's
    "BuildKit is enabled but buildx is missing" failure on older setups.

    Args:
        service: a service name or alias (``nexa_light``/``train-light``, ``nexa_heavy``/``train-heavy``,
            ``nexa_infer``/``infer``); tag and Dockerfile may be overridden in ``[containers.services.*]``.
        push: ``docker push`` the tag after a successful build (default False).
        dry_run: print the ``docker build`` (and push) commands; nothing is staged or built (default False).
        config: the project's ``NexaConfig`` (default None: ``load_config()``).
        version: the nexa version passed as build-arg ``NEXA_VERSION`` and label ``ai.nexa.version``
            (default None: this nexa's ``__version__``).
        no_cache: build with ``--no-cache`` (default False).
        build_args: extra ``NAME=value`` build arguments (default: none).
        capture: capture the build (and push) output into the result instead of the terminal
            (default False).

    Returns:
        BuildResult: ``service`` (canonical name), ``tag``, ``dockerfile`` and ``context`` used, ``argv``
        (the exact ``docker build`` command), ``pushed`` (whether a push was asked for), ``seconds``
        (0 on a dry run), ``dry_run``, and ``output`` (captured stdout, only with ``capture=True``).

    Raises:
        ConfigError: unknown service, a tag override that is not an image reference, a ``build_args`` item without ``=``, or an
            overridden Dockerfile that does not exist (a dry run checks all of these too).
        ToolMissing: the Docker CLI is not on PATH.
        ToolError: ``docker build`` or ``docker push`` failed (with a one-line cause).
    """
    from . import __version__
    from .tools import docker as tool

    config = config or load_config()
    cc = config.containers
    resolved = resolve_service(service, config)
    version = version or __version__
    for arg in build_args:
        if "=" not in arg:
            raise ConfigError(f"--build-arg: expected NAME=value, got {arg!r}")
    if resolved.shipped:
        context_dir = build_context_dir(resolved.name)
        dockerfile = str(context_dir / "Dockerfile")
        context = str(context_dir)
    else:
        dockerfile = resolved.dockerfile
        context = resolved.context or str(config.root)
    if not resolved.shipped and not os.path.isfile(dockerfile):  # checked by a dry run too
        raise ConfigError(f"Dockerfile {dockerfile} does not exist", config.where,
                          f"containers.services.{resolved.key or service}.dockerfile")
    argv = plan_build(resolved, dockerfile, context, version=version, docker=cc.docker, no_cache=no_cache, build_args=build_args)
    if dry_run:
        tool.build(argv, dry_run=True)
        if push:
            tool.push(resolved.tag, docker=cc.docker, dry_run=True)
        return BuildResult(resolved.name, resolved.tag, dockerfile, context, argv, push, 0.0, dry_run=True)

    if resolved.shipped:
        stage_shipped_context(resolved, Path(context))
    env = {}
    if "DOCKER_BUILDKIT" not in os.environ and not tool.has_buildx(docker=cc.docker):
        env["DOCKER_BUILDKIT"] = "0"
    start = time.monotonic()
    result = tool.build(argv, env=env, capture=capture)
    output = result.stdout
    if push:
        pushed = tool.push(resolved.tag, docker=cc.docker, capture=capture)
        if capture:
            output = (output or "") + (pushed.stdout or "")
    return BuildResult(resolved.name, resolved.tag, dockerfile, context, argv, push, time.monotonic() - start, output=output)
