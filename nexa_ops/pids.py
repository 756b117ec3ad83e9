"""Who a process is, and whether it still runs: what a local run's manifest records about
its runner so that ``status`` can tell a dead local run from a live one.

A pid alone is not an identity: pids are reused, and after a reboot the same pid may be
someone else's. So the runner is recorded with its host, its start time in clock ticks since
boot (``/proc/<pid>/stat`` field 22) and the boot id; a pid whose start time or boot differs
is another process. Where ``/proc`` is missing (not Linux) only the pid can be checked.
Standard library only; no external program.
"""

import os
from typing import Any, Dict, Optional

PROC = "/proc"


def hostname() -> str:
    """This machine's name, as the worker writes it into start records."""
    return os.uname().nodename


def _stat_fields(pid: int) -> Optional[list]:
    """``/proc/<pid>/stat`` from the state field on (the name in parentheses may hold spaces)."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def start_ticks(pid: int) -> Optional[int]:
    """When ``pid`` started, in clock ticks since boot; None without ``/proc``."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def boot_id() -> Optional[str]:
    try:
        with open(f"{PROC}/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def identity(pid: Optional[int] = None) -> Dict[str, Any]:
    """``{"pid", "host", "pid_start", "boot_id"}`` of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": hostname(), "pid_start": start_ticks(pid), "boot_id": boot_id()}


def alive(pid: int, pid_start: Optional[int] = None, boot: Optional[str] = None) -> bool:
    """Whether the process recorded as (``pid``, ``pid_start``, ``boot``) still runs on this
    machine. A zombie (state Z: ended, not yet reaped) has ended."""
    if pid <= 0:
        return False
    if boot is not None:
        now = boot_id()
        if now is not None and now != boot:
            return False  # rebooted since
    fields = _stat_fields(pid)
    if fields is not None:
        if fields[0] == "Z":
            return False
        if pid_start is not None:
            try:
                return int(fields[19]) == pid_start
            except (IndexError, ValueError):
                return True
        return True
    if os.path.isdir(f"{PROC}/self"):
        return False  # /proc works here and has no such pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process with that pid
    return True
