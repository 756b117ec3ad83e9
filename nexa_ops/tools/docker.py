"""The few Docker CLI calls nexa needs, over ``proc.run``.

Failures that users actually meet (no daemon, no permission on the socket, no such image) are
turned into one-line causes here, so every caller reports them the same way. Options always
end with ``--`` before an image or a path, so neither can be read as a docker option.
"""

import os
from typing import Dict, Mapping, Optional, Sequence

from .. import proc
from ..errors import ToolError

HINT = "install the Docker CLI (Debian: apt-get install docker.io) or set [containers] docker in nexa.toml"

#: ``docker run`` passes the container's exit code through, whatever it is.
ANY_CODE = range(-255, 256)


def explain(code: int, stderr: str) -> str:
    """A one-line cause for the Docker errors users meet most."""
    low = stderr.lower()
    if "cannot connect to the docker daemon" in low or "is the docker daemon running" in low:
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        return f"the Docker daemon is not running or not reachable at {where} (start dockerd, or set DOCKER_HOST)"
    if "permission denied" in low and "docker" in low and "sock" in low:
        return "permission denied on the Docker socket (add your user to the 'docker' group, then log in again)"
    if "no such image" in low:
        return "no such image on this machine"
    if "could not select device driver" in low:
        return "GPUs requested but the NVIDIA container toolkit is not installed on this host (use --gpus none)"
    for line in reversed(stderr.strip().splitlines()):
        if line.strip():
            return line.strip()
    return ""


def image_id(image: str, *, docker: str = "docker") -> Optional[str]:
    """The local id of ``image``, None when it is not on this machine.

    This is also the cheapest call that needs the daemon, so a daemon that is down or a
    socket without permission shows up here as a ``ToolError`` with a clear cause.
    """
    argv = [docker, "image", "inspect", "--format", "{{.Id}}", "--", image]
    result = proc.run(argv, success_codes=(0, 1), hint=HINT)
    if result.returncode == 0:
        return (result.stdout or "").strip() or None
    stderr = result.stderr or ""
    if "no such image" in stderr.lower():
        return None
    raise ToolError("docker", argv, result.returncode, stderr, explain(result.returncode, stderr))


def labels(image: str, *, docker: str = "docker") -> Dict[str, str]:
    """The labels of a local image."""
    import json

    argv = [docker, "image", "inspect", "--format", "{{json .Config.Labels}}", "--", image]
    out = proc.run(argv, hint=HINT, explain=explain).stdout or "null"
    return json.loads(out) or {}


def has_buildx(*, docker: str = "docker") -> bool:
    """Whether the buildx plugin (BuildKit) is installed; without it the legacy builder runs."""
    result = proc.run([docker, "buildx", "version"], success_codes=ANY_CODE, hint=HINT)
    return result.returncode == 0


def run(argv: Sequence[str], *, capture: bool = False, dry_run: bool = False) -> proc.Result:
    """``docker run ...`` with any exit code returned (it is the container's)."""
    return proc.run(argv, capture=capture, success_codes=ANY_CODE, dry_run=dry_run, hint=HINT)


def build(
    argv: Sequence[str],
    *,
    env: Optional[Mapping[str, Optional[str]]] = None,
    capture: bool = False,
    dry_run: bool = False,
) -> proc.Result:
    """``docker build ...``; a failed step raises ``ToolError``."""
    return proc.run(argv, env=env, capture=capture, dry_run=dry_run, hint=HINT, explain=explain)


def push(tag: str, *, docker: str = "docker", capture: bool = False, dry_run: bool = False) -> proc.Result:
    return proc.run([docker, "push", "--", tag], capture=capture, dry_run=dry_run, hint=HINT, explain=explain)
