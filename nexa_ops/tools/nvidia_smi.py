"""``nvidia-smi``: the two CSV queries nexa runs, and the parsing of what they print.

The one home of nvidia-smi text. ``query`` never raises: an exporter must answer a scrape
even when the driver is gone, so a failure comes back as an exit code and one line of why.
Parsing is pure and refuses rows of another shape (a field more or less) rather than
guessing which column is which.
"""

import re
from typing import Dict, List, Optional, Sequence

from .. import proc
from ..errors import ToolError, ToolMissing
from ..structs import frozen

HINT = "the NVIDIA driver utilities"
FORMAT = "--format=csv,noheader,nounits"

#: What nvidia-smi prints for a value it cannot give (e.g. fan speed on a passively cooled GPU).
UNAVAILABLE = {"[n/a]", "n/a", "[not supported]", "[unknown error]", "[insufficient permissions]", "[gpu is lost]", ""}

#: The compute-apps query: one row per process with a CUDA context on a GPU.
APPS_FIELDS = ["pid", "gpu_uuid", "used_memory"]


class ParseError(ValueError):
    """nvidia-smi printed rows of another shape than the query asked for."""


@frozen
class Answer:
    """One nvidia-smi run: its exit code, stdout, and why it failed ("" when it did not)."""

    code: int
    stdout: str
    error: str


@frozen
class App:
    """A compute process on a GPU (``--query-compute-apps``)."""

    pid: int
    gpu_uuid: str  # without nvidia-smi's "GPU-" prefix
    used_mib: Optional[float]


def gpu_argv(fields: Sequence[str]) -> List[str]:
    """All ``fields`` in one ``--query-gpu`` run (one row per GPU)."""
    return ["nvidia-smi", "--query-gpu=" + ",".join(fields), FORMAT]


def apps_argv() -> List[str]:
    return ["nvidia-smi", "--query-compute-apps=" + ",".join(APPS_FIELDS), FORMAT]


def print_commands(argvs: Sequence[Sequence[str]]) -> None:
    """What a dry run shows: each command, quoted, nothing run."""
    for argv in argvs:
        proc.run(argv, dry_run=True)


def _first_line(*texts: Optional[str]) -> str:
    for text in texts:
        for line in (text or "").splitlines():
            if line.strip():
                return line.strip()
    return ""


def query(argv: Sequence[str], timeout: float) -> Answer:
    """Run one nvidia-smi query within ``timeout`` seconds; never raises. nvidia-smi prints
    its own failures ("couldn't communicate with the NVIDIA driver") on stdout."""
    try:
        result = proc.run(argv, timeout=timeout, success_codes=range(-64, 256), hint=HINT)
    except ToolMissing as exc:
        return Answer(127, "", str(exc))
    except ToolError as exc:  # timed out (124), could not start
        return Answer(exc.returncode, "", str(exc).splitlines()[0])
    except OSError as exc:  # found on PATH but not executable
        return Answer(126, "", f"nvidia-smi: cannot run: {exc.strerror or exc}")
    if result.returncode != 0:
        why = _first_line(result.stdout, result.stderr) or "no output"
        return Answer(result.returncode, result.stdout or "", f"nvidia-smi exited with {result.returncode}: {why}")
    return Answer(0, result.stdout or "", "")


NO_DEVICES = 6  # nvidia-smi's exit code for "No devices were found"


def count_gpus(timeout: float = 20) -> int:
    """GPUs this machine has per ``nvidia-smi -L``; 0 when there is no driver or it fails."""
    answer = query(["nvidia-smi", "-L"], timeout)
    return len(parse_list(answer.stdout)) if answer.code == 0 else 0


def list_gpus() -> List[str]:
    """This machine's GPU indices (``nvidia-smi -L``), for local runs' ``CUDA_VISIBLE_DEVICES``;
    [] when it finds no devices.

    Raises:
        ToolMissing: no nvidia-smi on PATH. ToolError: it failed (no driver loaded...).
    """
    hint = "the NVIDIA driver's tool; without it, set CUDA_VISIBLE_DEVICES to the GPUs to use"
    result = proc.run(["nvidia-smi", "-L"], hint=hint, success_codes=(0, NO_DEVICES), timeout=60)
    return parse_list(result.stdout or "") if result.returncode == 0 else []


# --- parsing (pure) ---------------------------------------------------------------------


def parse_list(text: str) -> List[str]:
    """The GPU indices in ``nvidia-smi -L`` output: ``GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-...)``
    per GPU (MIG devices, indented below their GPU, are not GPUs of their own here)."""
    return [m.group(1) for m in re.finditer(r"^GPU (\d+): ", text, re.MULTILINE)]



def parse_value(text: str) -> Optional[float]:
    """A number from a ``nounits`` field, or None for ``[N/A]`` and friends."""
    text = text.strip()
    if text.lower() in UNAVAILABLE:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def strip_uuid(uuid: str) -> str:
    """``GPU-5b6a...`` -> ``5b6a...`` (nvidia_gpu_exporter labels GPUs without the prefix)."""
    return uuid[4:] if uuid.startswith("GPU-") else uuid


def parse_rows(stdout: str, fields: Sequence[str]) -> List[Dict[str, str]]:
    """Rows of ``--query-gpu=FIELDS --format=csv,noheader,nounits`` as field -> text.

    Values are separated by ``", "``; GPU names never hold a comma in nvidia-smi's output,
    so a row with another number of cells is refused, not guessed at."""
    rows = []
    for lineno, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(fields):
            raise ParseError(f"line {lineno}: expected {len(fields)} fields, got {len(cells)}: {line[:120]!r}")
        rows.append(dict(zip(fields, cells)))
    return rows


def parse_apps(stdout: str) -> List[App]:
    """Rows of the compute-apps query (``pid, gpu_uuid, used_memory``); other lines (blank,
    "No running processes found") are skipped."""
    apps = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(APPS_FIELDS) or not cells[0].isdigit():
            continue
        apps.append(App(int(cells[0]), strip_uuid(cells[1]), parse_value(cells[2])))
    return apps
