"""The one subprocess wrapper every external tool goes through.

``run`` resolves the program on PATH first (a clear ``ToolMissing`` if absent), logs the exact
command shell-quoted, honours ``dry_run`` by printing instead of running, never uses a shell,
and raises one ``ToolError`` carrying the tool, exit code and the tail of stderr.
"""

import os
import shlex
import subprocess
import sys
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Sequence, TextIO

from .errors import ToolError, ToolMissing
from .structs import mutable

#: Set by the CLI from ``-v``/``NEXA_VERBOSE``: echo every command to stderr before running it.
VERBOSE = bool(os.environ.get("NEXA_VERBOSE"))


@mutable
class Result:
    """What a finished command returned. ``stdout``/``stderr`` are None when not captured."""

    argv: Sequence[str]
    returncode: int
    stdout: Optional[str] = None
    stderr: Optional[str] = None


def quote(argv: Sequence[str]) -> str:
    """The command as a user would paste it into a shell."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def which(tool: str, hint: str = "") -> str:
    """Absolute path of ``tool`` on PATH, or ``ToolMissing``."""
    import shutil  # here: shutil imports bz2, lzma and zlib, a millisecond of every start-up

    found = shutil.which(tool)
    if not found:
        raise ToolMissing(tool, hint)
    return found


def run(
    argv: Sequence[str],
    *,
    env: Optional[Mapping[str, Optional[str]]] = None,
    cwd: Optional[str] = None,
    capture: bool = True,
    input: Optional[str] = None,
    success_codes: Collection[int] = (0,),
    dry_run: bool = False,
    timeout: Optional[float] = None,
    hint: str = "",
    explain: Optional[Callable[[int, str], str]] = None,
    log: TextIO = sys.stderr,
) -> Result:
    """Run ``argv`` (no shell) and return its ``Result``.

    ``env`` entries are added to the current environment; a None value removes the variable.
    With ``capture=False`` the tool's output goes straight to the terminal (stderr is then
    not available for the error tail). With ``dry_run`` the quoted command is printed to
    stdout and nothing runs. ``explain(code, stderr)`` may return a one-line cause that is
    put into the ``ToolError``.
    """
    argv = [str(a) for a in argv]
    tool = tool_name(argv)
    if dry_run:
        print(quote(argv))
        return Result(argv, 0, "", "")
    program = which(argv[0], hint)
    if VERBOSE:
        print(f"+ {quote(argv)}", file=log)
    full_env = merged_env(env) if env else None
    pipe = subprocess.PIPE if capture else None
    try:
        proc = subprocess.run(
            [program] + argv[1:],
            env=full_env,
            cwd=cwd,
            stdout=pipe,
            stderr=pipe,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL if capture else None,
            universal_newlines=True,  # noqa: UP021 (text=True is 3.7+; nexa.pyz runs on 3.6)
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(tool, argv, 124, _text(exc.stderr), f"timed out after {timeout:g} s") from None
    if proc.returncode not in success_codes:
        stderr = proc.stderr or ""
        cause = explain(proc.returncode, stderr) if explain else ""
        raise ToolError(tool, argv, proc.returncode, stderr, cause)
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def spawn(
    argv: Sequence[str], *, env: Optional[Mapping[str, Optional[str]]] = None, hint: str = "", **popen: Any
) -> "subprocess.Popen[bytes]":
    """Start ``argv`` (no shell) for callers that manage the process themselves (streaming,
    a pool of tasks): resolved on PATH first, logged like ``run``, ``ToolError`` if it cannot
    start. ``popen`` goes to ``subprocess.Popen`` (stdout, stderr, stdin, cwd, ...)."""
    argv = [str(a) for a in argv]
    program = which(argv[0], hint)
    if VERBOSE:
        print(f"+ {quote(argv)}", file=sys.stderr)
    try:
        return subprocess.Popen([program] + argv[1:], env=merged_env(env) if env else None, **popen)
    except OSError as exc:
        raise ToolError(os.path.basename(argv[0]), argv, 126, cause=exc.strerror or str(exc)) from None


def tool_name(argv: Sequence[str]) -> str:
    """What an error calls the program: its file name, or ``MODULE`` for ``python -m MODULE``
    (``pip exited with 1``, not ``python3 exited with 1``)."""
    if len(argv) > 2 and argv[1] == "-m":
        return argv[2]
    return os.path.basename(argv[0])


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""  # type: ignore[return-value]


def merged_env(extra: Mapping[str, Optional[str]]) -> Dict[str, str]:
    """``os.environ`` with ``extra`` applied (None deletes), for ``Popen`` callers."""
    env = dict(os.environ)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env
