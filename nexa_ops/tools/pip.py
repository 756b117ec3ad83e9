"""pip: building nexa's wheel and downloading the pinned wheels for nexa.pyz, and reading
what pip says when that fails (its own summary lines say only that something failed)."""

import re
import sys
from pathlib import Path
from typing import Callable, List, Optional

from .. import proc

HINT = "pip"


def base() -> List[str]:
    """pip of the Python running nexa."""
    return [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def wheel_argv(src: Path, wheels: Path) -> List[str]:
    """Build the project in ``src`` into a wheel in ``wheels``, offline, with the build tools
    already installed (no build isolation)."""
    return base() + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(wheels), str(src)]


def download_argv(requirements: Path, wheels: Path, python_floor: str) -> List[str]:
    """Download the pinned, hashed pure-Python wheels that install on ``python_floor``."""
    argv = base() + ["download", "--no-deps", "--only-binary=:all:", "--python-version", python_floor, "--implementation", "py"]
    return argv + ["--abi", "none", "--platform", "any", "--require-hashes", "-r", str(requirements), "--dest", str(wheels)]


def run(argv: List[str], explain: Optional[Callable[[int, str], str]] = None) -> proc.Result:
    return proc.run(argv, hint=HINT, explain=explain or explain_failure)


def floor_refusal(stderr: str, floor: str) -> Optional[str]:
    """Why pip found no wheel: a pinned version whose Requires-Python excludes the floor.

    pip says "No matching distribution found for NAME==VERSION" and lists the versions it
    ignored as "VERSION Requires-Python SPEC"; None when the failure is something else."""
    for match in re.finditer(r"No matching distribution found for (\S+==(\S+))", stderr):
        pin, version = match.groups()
        spec = re.search(r"(?:: |; )" + re.escape(version) + r" Requires-Python ([^;\n]+)", stderr)
        if spec:
            return (
                f"{pin} requires Python {spec.group(1).strip()}, but nexa.pyz must run on Python {floor} "
                f"(python_floor): pin a release that supports {floor}"
            )
    return None


#: pip's own summary lines, which say that something failed but not what.
_PIP_NOISE = re.compile(r"(subprocess-exited-with-error|metadata-generation-failed|Failed building wheel|Failed to build)")


def error_line(stderr: str) -> str:
    """The line of pip's output that says what went wrong: the last ``error: ...`` or
    ``ERROR: ...`` line that is not one of pip's own summaries (for a failed wheel build,
    setuptools' message, 14 lines above pip's closing notes); "" when there is none."""
    found = ""
    for raw in stderr.splitlines():
        line = raw.strip()
        if re.match(r"(?i)error:\s", line) and not _PIP_NOISE.search(line):
            found = line
    return found


def explain_failure(code: int, stderr: str, install_hint: str = "") -> str:
    """One line of cause for a failed pip step of the build."""
    if "HASHES" in stderr or "hash" in stderr.lower():
        return "a downloaded wheel does not match its --hash in shiv.toml requirements"
    if "No matching distribution" in stderr or "Could not find a version" in stderr:
        return "a pinned wheel was not found for this Python floor (pure-Python py3-none-any wheels only); no network?"
    line = error_line(stderr)
    if "invalid command 'bdist_wheel'" in line and install_hint:
        return f"{line} (setuptools here cannot build wheels: {install_hint})"
    return line
