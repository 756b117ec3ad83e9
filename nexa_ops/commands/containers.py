"""``nexa run-container`` and ``nexa build-image``."""

from .common import PROJECT_HELP, echo, nexa_task, remainder


@nexa_task(
    positional=["service"],
    iterable=["env"],
    usage="[-- COMMAND...]",
    help={
        "service": "nexa_light (train-light), nexa_heavy (train-heavy) or nexa_infer (infer).",
        "gpus": "all, none, a count N or devices like 0,1 (default: all when the host has NVIDIA GPUs).",
        "env": "Pass this variable into the container by NAME (repeatable); its value never appears in the command.",
        "pull": "missing (default), never (fail at once if the image is not here) or always.",
        "user": "UID:GID to run as (default: yours, with your groups).",
        "workspace": "Host folder mounted at /workspace (default: [containers] workspace, else the project root).",
        "project": PROJECT_HELP,
        "dry_run": "Print the full docker command and run nothing.",
    },
)
def run_container(c, service, gpus=None, env=None, pull="missing", user=None, workspace=None, project=None, dry_run=False):
    """Run a command in a nexa image, as you, in /workspace.

    The image's default command, or the one after --; the workspace is mounted at
    /workspace and GPUs are passed through when the host has them.
    """
    from invoke import Exit

    from ..config import load_config
    from ..containers import run_container as run
    from ..errors import ConfigError

    uid = gid = None
    if user:
        try:
            uid_text, gid_text = user.split(":")
            uid, gid = int(uid_text), int(gid_text)
        except ValueError:
            raise ConfigError(f"--user: expected UID:GID as numbers, got {user!r}") from None
    result = run(
        service,
        remainder(),
        gpus=gpus,
        env=env or [],
        pull=pull,
        dry_run=dry_run,
        config=load_config(project),
        workspace=workspace,
        uid=uid,
        gid=gid,
    )
    if result.exit_code:
        raise Exit(code=result.exit_code)


@nexa_task(
    positional=["service"],
    iterable=["build_arg"],
    help={
        "service": "nexa_light (train-light), nexa_heavy (train-heavy) or nexa_infer (infer).",
        "push": "Push the tag after a successful build.",
        "no_cache": "Build without Docker's layer cache.",
        "build_arg": "Extra NAME=value build argument (repeatable), e.g. NEXA_UID=1001.",
        "project": PROJECT_HELP,
        "dry_run": "Print the docker build (and push) command and run nothing.",
    },
)
def build_image(c, service, push=False, no_cache=False, build_arg=None, project=None, dry_run=False):
    """Build a nexa image with its tag and version label.

    From images/; --push sends the tag to its registry afterwards.
    """
    from ..config import load_config
    from ..containers import build_image as build

    result = build(service, push, dry_run=dry_run, config=load_config(project), no_cache=no_cache, build_args=build_arg or [])
    if not dry_run:
        echo(f"Built {result.tag} from {result.dockerfile} in {result.seconds:.1f} s" + ("; pushed" if result.pushed else ""))


TASKS = [run_container, build_image]
