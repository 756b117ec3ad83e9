"""rsync and ssh: the ``-e`` command, output parsing, exit-code causes, and the calls.

Building the argv and parsing rsync's itemized output are pure functions (tested without a
network); ``run_rsync`` and ``probe`` are the only places that start a process, both through
``proc.run``.
"""

import re
import secrets
import shlex
from dataclasses import field
from typing import Dict, List, Optional, Sequence

from .. import proc
from ..errors import ToolError
from ..structs import frozen, mutable

RSYNC_HINT = "install rsync >= 3.2.3 (apt-get install rsync)"
SSH_HINT = "install the OpenSSH client (apt-get install openssh-client)"

#: rsync's exit codes that get a one-line cause; rsync's own message is kept below it.
RSYNC_CAUSES = {
    1: "rsync rejected its arguments (an rsync older than 3.2.3 on either side lacks --mkpath)",
    2: "rsync protocol mismatch (the remote login prints text, or its rsync is incompatible)",
    3: "a source or destination path could not be selected",
    5: "the remote rsync could not be started",
    10: "socket I/O error",
    11: "file I/O error on the remote (disk full, quota exceeded, read-only or not a directory)",
    12: "the data stream to the remote rsync broke (it died, is missing, or ran out of disk/quota)",
    20: "rsync was interrupted by a signal",
    23: "partial transfer: some files or attributes could not be read or written (see the lines below)",
    24: "partial transfer: some source files vanished while rsync ran (something writes into the tree)",
    30: "timeout while sending or receiving data",
    127: "the remote rsync was not found (set rsync_path in [sync] of nexa.toml)",
    255: "ssh could not connect or authenticate",
}

#: ssh's own words -> what they mean for the user (first match wins).
SSH_CAUSES = (
    ("Connection refused", "nothing listens on that host and port"),
    ("Connection timed out", "the host did not answer (wrong host/port, or a firewall)"),
    ("No route to host", "no route to the host"),
    ("Could not resolve hostname", "the host name does not resolve"),
    ("Host key verification failed", "the host key is unknown or changed: run `ssh` once by hand to check and accept it"),
    ("Permission denied", "the server refused the key: check --user and --identity"),
    ("Too many authentication failures", "too many keys offered: pass --identity"),
    ("Connection closed", "the server closed the connection"),
    ("Identity file", "the identity file could not be read"),
)

ITEM_RE = re.compile(r"^(\*deleting  |[<>ch.][fdLDS][^ ]{9}) (.*)$")  # the code is padded to 11 characters
STAT_RE = re.compile(r"^([A-Z][A-Za-z ]+): ([\d,]+)")


@frozen
class Remote:
    """Where ssh connects: host, optional user/port/key, extra ``-o`` options."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    identity: Optional[str] = None
    ssh_options: Sequence[str] = ()

    @property
    def login(self) -> str:
        """``[user@]host`` as rsync reads it (an IPv6 address in brackets: ``[::1]``)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def ssh_login(self) -> str:
        """``[user@]host`` as ssh reads it (an IPv6 address without brackets)."""
        host = self.host[1:-1] if self.host.startswith("[") and self.host.endswith("]") else self.host
        return f"{self.user}@{host}" if self.user else host

    def describe(self) -> str:
        return f"{self.login}:{self.port}" if self.port else self.login


def ssh_argv(remote: Remote) -> List[str]:
    """``ssh`` with BatchMode (never prompt: a sync must fail, not hang) and the given port/key."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if remote.port:
        argv += ["-p", str(remote.port)]
    if remote.identity:
        argv += ["-i", remote.identity, "-o", "IdentitiesOnly=yes"]
    for option in remote.ssh_options:
        argv += ["-o", option]
    return argv


def ssh_command(remote: Remote) -> str:
    """``ssh_argv`` as the one string rsync's ``-e`` wants; rsync splits it like a shell
    (quotes are honoured), so a key path with spaces survives."""
    return " ".join(shlex.quote(a) for a in ssh_argv(remote))


def explain_rsync(code: int, stderr: str) -> str:
    """One-line cause for rsync's exit ``code``; ssh failures say which of them it was."""
    cause = RSYNC_CAUSES.get(code, "")
    if code == 255:
        detail = _ssh_detail(stderr)
        return f"{cause}: {detail}" if detail else cause
    return cause


def _ssh_detail(stderr: str) -> str:
    for needle, meaning in SSH_CAUSES:
        if needle in stderr:
            return meaning
    return ""


@mutable
class Itemized:
    """rsync's ``--itemize-changes`` output and ``--stats`` counters, parsed."""

    lines: List[str] = field(default_factory=list)  # every itemized line, as rsync printed it
    sent: List[str] = field(default_factory=list)  # files whose data was (or would be) sent
    created: List[str] = field(default_factory=list)  # directories/links created on the remote
    deleted: List[str] = field(default_factory=list)
    stats: Dict[str, int] = field(default_factory=dict)
    other: List[str] = field(default_factory=list)  # anything else rsync printed


def parse_output(stdout: str) -> Itemized:
    """Split rsync's stdout into itemized changes, ``--stats`` counters and other lines."""
    out = Itemized()
    for line in stdout.splitlines():
        if not line.strip():
            continue
        match = ITEM_RE.match(line)
        if match:
            code, name = match.groups()
            out.lines.append(line)
            if code.startswith("*deleting"):
                out.deleted.append(name)
            elif code[0] in "<>" and code[1] == "f":
                out.sent.append(name)
            elif code[0] == "c":
                out.created.append(name)
            continue
        stat = STAT_RE.match(line)
        if stat:
            out.stats[stat.group(1).strip().lower().replace(" ", "_")] = int(stat.group(2).replace(",", ""))
            continue
        out.other.append(line)
    return out


def ssh_failed(stderr: str) -> bool:
    """ssh itself failed before rsync exchanged a byte (its own lines start with ``ssh:``)."""
    if "(0 bytes received so far)" not in stderr:
        return False
    return any(line.startswith("ssh: ") for line in stderr.splitlines()) or bool(_ssh_detail(stderr))


def run_rsync(
    argv: Sequence[str], *, timeout: Optional[float] = None, success_codes: Sequence[int] = (0,), dry_run: bool = False
) -> proc.Result:
    """Run an rsync argv built by ``nexa_ops.sync.rsync_argv`` (or ``snapshot.rsync_argv``,
    a local copy); failures carry a cause. ``dry_run`` prints the command instead.

    rsync reports a failed ssh connection as 255 or, when it sees the closed pipe before
    ssh's exit status (a race, about one run in three here), as 12. The latter is turned
    back into 255, so the exit code means the same thing every time."""
    try:
        return proc.run(argv, hint=RSYNC_HINT, explain=explain_rsync, timeout=timeout, success_codes=success_codes, dry_run=dry_run)
    except ToolError as exc:
        if exc.returncode == 12 and ssh_failed(exc.stderr):
            raise ToolError(exc.tool, exc.argv, 255, exc.stderr, explain_rsync(255, exc.stderr)) from None
        raise


# --- remote destination probe (only when deletion is on) ---------------------------------

#: POSIX sh run on the remote as ``sh -c SCRIPT nexa-probe PATH NONCE``. Its answer is one
#: record line, ``NEXA-<nonce> STATE HOME CWD REAL``, with the three paths hex-encoded (so a
#: path with spaces or line breaks stays one field; ``-`` = unknown or absent). The nonce is
#: never written in the script itself: only the running script can print the framed line, so
#: whatever the remote login prints around it (a banner, an EXIT trap, an echo of the command)
#: cannot be taken for the answer. Each ``$(...)`` ends with ``printf .`` and strips it with
#: the line break before, so a path keeps even a trailing line break.
PROBE_SCRIPT = r"""d=$1
n=$2
h=$(cd 2>/dev/null && pwd -P && printf .) && h=${h%??} || h=
c=$(pwd -P && printf .) && c=${c%??} || c=
r=
if [ -e "$d/{marker}" ]; then s=marker
elif [ ! -e "$d" ] && [ ! -L "$d" ]; then s=absent
elif [ ! -d "$d" ]; then s=notdir
elif l=$(ls -A "$d" 2>/dev/null); then
  if [ -z "$l" ]; then s=empty; else s=nonempty; fi
else s=unreadable; fi
if [ -d "$d" ]; then r=$(cd "$d" 2>/dev/null && pwd -P && printf .) && r=${r%??} || r=; fi
x() { if [ -z "$1" ]; then printf %s -; else printf %s "$1" | od -An -v -tx1 | tr -d ' \n'; fi; }
printf '\nNEXA-%s %s %s %s %s\n' "$n" "$s" "$(x "$h")" "$(x "$c")" "$(x "$r")"
"""

#: What the probe can say about the destination; anything else is ``unknown``.
PROBE_STATES = ("marker", "absent", "notdir", "empty", "nonempty", "unreadable")


@frozen
class DestProbe:
    """What the remote says about the destination before a ``--delete`` sync."""

    home: str  # the remote user's home ($HOME), symlinks resolved; "" when unknown
    realpath: str  # the destination, resolved; "" when it does not exist
    state: str  # one of PROBE_STATES, or "unknown" when the answer could not be read exactly
    cwd: str = ""  # where the remote command starts (relative paths start here), resolved
    problem: str = ""  # with state "unknown": why the answer was not accepted


def probe_path(dest: str) -> str:
    """The path the probe checks: ``dest`` as rsync resolves it, never taken for an option."""
    return dest if dest.startswith("/") else "./" + dest


def probe_argv(remote: Remote, dest: str, marker: str, nonce: str) -> List[str]:
    """``ssh ... sh -c SCRIPT nexa-probe PATH NONCE``: one round trip, POSIX sh on the remote.

    ssh joins its remote words with spaces for the login shell, so each is shell-quoted."""
    script = PROBE_SCRIPT.replace("{marker}", marker)
    words = ["sh", "-c", script, "nexa-probe", probe_path(dest), nonce]
    return ssh_argv(remote) + [remote.ssh_login, " ".join(shlex.quote(w) for w in words)]


def _unhex(field: str) -> Optional[str]:
    if field == "-":
        return ""
    if len(field) % 2 or not re.match(r"^[0-9a-f]+\Z", field):
        return None
    return bytes.fromhex(field).decode("utf-8", "surrogateescape")


def parse_probe(stdout: str, nonce: str) -> DestProbe:
    """The probe's answer from everything the remote printed (pure).

    Exactly one line must start with ``NEXA-<nonce> `` and it must be a whole, well-formed
    record; no such line, two of them, or a damaged one gives state ``unknown`` (refused)."""
    head = f"NEXA-{nonce} "
    records = [line for line in stdout.split("\n") if line.startswith(head)]
    if len(records) != 1:
        why = "no answer line" if not records else f"{len(records)} answer lines"
        return DestProbe("", "", "unknown", problem=f"{why} from the remote check (the remote shell changes its output?)")
    fields = records[0][len(head):].split(" ")
    if len(fields) != 4 or fields[0] not in PROBE_STATES:
        return DestProbe("", "", "unknown", problem=f"a damaged answer from the remote check: {records[0]!r}")
    home, cwd, real = (_unhex(f) for f in fields[1:])
    if home is None or cwd is None or real is None:
        return DestProbe("", "", "unknown", problem=f"a damaged answer from the remote check: {records[0]!r}")
    return DestProbe(home=home, realpath=real, state=fields[0], cwd=cwd)


def probe(remote: Remote, dest: str, marker: str, *, timeout: Optional[float] = 60) -> DestProbe:
    """Ask the remote where ``dest`` resolves to and whether it is empty or ours already."""
    nonce = secrets.token_hex(16)
    result = proc.run(probe_argv(remote, dest, marker, nonce), hint=SSH_HINT, explain=explain_ssh, timeout=timeout)
    return parse_probe(result.stdout or "", nonce)


def explain_ssh(code: int, stderr: str) -> str:
    if code == 255:
        detail = _ssh_detail(stderr)
        return f"{RSYNC_CAUSES[255]}: {detail}" if detail else RSYNC_CAUSES[255]
    return "the destination check on the remote failed"
