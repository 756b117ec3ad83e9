"""The one small exception hierarchy of nexa, and the exit code of each.

Every failure a user can cause or meet is one of these; the program (``cli.main``) turns
them into a one-line message and the error's exit code, once; the Python API lets them
propagate. One code per meaning:

===== ===========================================================================
1     a nexa error without a more precise code (and a failed run's summary)
2     bad input: a file, key or option (``ConfigError``)
3     a guard refused (``Refused``): cost cap, dangerous target, no confirmation
124   a wait timed out (``WaitTimeout``), as timeout(1)
125   Docker could not start a container (``ContainerError``), as ``docker run``
127   a tool is missing (``ToolMissing``), as a shell
128+N a signal N stopped a local run (``Interrupted``): 130 for Ctrl-C, 143 for SIGTERM
N     a tool's or a launched program's own exit code (``ToolError``, ``LaunchFailed``)
===== ===========================================================================
"""

from typing import Any, Optional, Sequence


class NexaError(Exception):
    """Base of every nexa error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(NexaError):
    """Bad input: a config or sweep file, an option value. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str, path: Optional[str] = None, key: Optional[str] = None):
        where = ""
        if path:
            where = str(path)
            if key:
                where += f": {key}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.key = key


class ToolMissing(NexaError):
    """An external program is not on PATH. Exit code 127, as a shell would."""

    exit_code = 127

    def __init__(self, tool: str, hint: str = "", what: str = "not found on PATH"):
        message = f"{tool}: {what}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
        self.tool = tool


class ToolError(NexaError):
    """An external program exited with a code it should not have.

    Carries the tool, its argv, its exit code and the tail of its stderr, so that the message
    alone says what ran and how it failed.
    """

    def __init__(
        self,
        tool: str,
        argv: Sequence[str],
        returncode: int,
        stderr: str = "",
        cause: str = "",
    ):
        self.tool = tool
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.cause = cause
        self.exit_code = returncode if 0 < returncode < 256 else 1
        super().__init__(self._message())

    def tail(self, lines: int = 10) -> str:
        return "\n".join(self.stderr.strip().splitlines()[-lines:])

    def _message(self) -> str:
        head = f"{self.tool} exited with {self.returncode}"
        if self.cause:
            head += f": {self.cause}"
        tail = self.tail()
        return f"{head}\n{tail}" if tail else head


class Refused(NexaError):
    """A guard refused the action (a cost cap, a dangerous rsync target, no --yes). Exit 3."""

    exit_code = 3


class WaitTimeout(NexaError):
    """Waiting for a run or a job gave up before it ended; it keeps running. Exit 124, as
    timeout(1)."""

    exit_code = 124


class Interrupted(NexaError):
    """A signal stopped a local run (Ctrl-C, SIGTERM, SIGHUP); its tasks were recorded.
    Exit code 128 + the signal's number, as a shell reports a program the signal killed."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class ContainerError(NexaError):
    """Docker could not start the container (exit 125, as ``docker run`` itself uses)."""

    exit_code = 125


class LaunchFailed(NexaError):
    """The launched program (or a rank of it) failed; its exit code is passed through.
    ``result`` is the ``LaunchResult``."""

    def __init__(self, message: str, exit_code: Optional[int], result: Any = None):
        super().__init__(message)
        self.result = result
        code = exit_code or 1
        self.exit_code = code if 0 < code < 256 else 1


def os_error_message(exc: OSError) -> str:
    """``<path>: <reason>`` (both paths of a rename), as the shell tools say it."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {reason}"
