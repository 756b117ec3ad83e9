"""torchrun: the argv nexa builds for it, and what its failure report says.

Argv building and report parsing are pure (tested without PyTorch). Options use torchrun's
underscore spellings (``--nproc_per_node``), which every torchrun since 1.10 accepts; the
dash forms only exist in newer releases, and clusters often pin old ones.
"""

import re
from typing import List, Optional, Sequence

from .. import proc
from ..structs import frozen

HINT = "install PyTorch in the training environment, or put its bin folder on PATH"


def runs_script(command: Sequence[str]) -> bool:
    """True when torchrun should start ``command[0]`` with its own Python (a ``.py`` file).

    Anything else (``python -m pkg``, a wrapper script, a binary) runs word for word under
    ``--no_python``, so the user's own interpreter is the one that runs.
    """
    return bool(command) and command[0].endswith(".py")


def prefix(
    command: Sequence[str],
    *,
    nproc_per_node: int,
    port: Optional[int] = None,
    join_timeout: Optional[int] = None,
    max_restarts: int = 0,
    torchrun: str = "torchrun",
) -> List[str]:
    """Single-node torchrun options to put before ``command``.

    Without ``port`` the rendezvous is ``--standalone``: torchrun binds a free port itself,
    so concurrent launches on one machine cannot collide. With ``port`` the c10d store
    listens on 127.0.0.1:port.
    """
    argv = [torchrun]
    if port is None:
        argv.append("--standalone")
    else:
        argv += ["--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=nexa-{port}"]
    argv += ["--nnodes=1", f"--nproc_per_node={nproc_per_node}", f"--max_restarts={max_restarts}"]
    if join_timeout is not None:
        argv.append(f"--rdzv_conf=join_timeout={join_timeout}")
    if not runs_script(command):
        argv.append("--no_python")
    return argv


def argv(command: Sequence[str], **options: object) -> List[str]:
    """The whole single-node command: ``prefix(command, ...) + command``."""
    return prefix(command, **options) + list(command)  # type: ignore[arg-type]


def which() -> str:
    """Path of torchrun on PATH, or ``ToolMissing`` with the install hint."""
    return proc.which("torchrun", HINT)


@frozen
class RankFailure:
    """One failed process as torchrun's ChildFailedError report names it."""

    rank: int
    local_rank: Optional[int]
    exit_code: Optional[int]
    host: Optional[str] = None

    def describe(self) -> str:
        where = f"local_rank {self.local_rank}" if self.local_rank is not None else ""
        if self.host:
            where = f"{where} on {self.host}" if where else f"on {self.host}"
        code = f"exited with {self.exit_code}" if self.exit_code is not None else "failed"
        return f"rank {self.rank} ({where}) {code}" if where else f"rank {self.rank} {code}"


_RANK = re.compile(r"^\s*(?:\d+:\s*)?rank\s*:\s*(\d+)\s*(?:\(local_rank:\s*(\d+)\))?")
_HOST = re.compile(r"^\s*(?:\d+:\s*)?host\s*:\s*(\S+)")
_CODE = re.compile(r"^\s*(?:\d+:\s*)?exitcode\s*:\s*(-?\d+)")


def parse_failures(text: str) -> List[RankFailure]:
    """Failed ranks from torchrun's report, root cause first, each rank once.

    The report has ``Failures:`` and ``Root Cause`` blocks of ``host :``, ``rank : R
    (local_rank: L)`` and ``exitcode : C`` lines; several agents (nodes) may each print one.
    """
    lines = text.splitlines()
    found: List[RankFailure] = []
    root: List[RankFailure] = []
    in_root = False
    host: Optional[str] = None
    for i, line in enumerate(lines):
        if "Root Cause" in line:
            in_root = True
        elif line.strip().startswith("Failures:") or set(line.strip()) == {"="}:
            in_root = False
        match = _HOST.match(line)
        if match:
            host = match.group(1)
            continue
        match = _RANK.match(line)
        if not match:
            continue
        code = None
        for follow in lines[i + 1 : i + 4]:
            found_code = _CODE.match(follow)
            if found_code:
                code = int(found_code.group(1))
                break
        local = int(match.group(2)) if match.group(2) is not None else None
        failure = RankFailure(int(match.group(1)), local, code, host)
        (root if in_root else found).append(failure)
        host = None
    seen = set()
    ordered = []
    for failure in root + found:
        if failure.rank not in seen:
            seen.add(failure.rank)
            ordered.append(failure)
    return ordered
