"""Session fixtures: a real sshd on 127.0.0.1 (tests/cluster/sshd.sh) with throwaway keys, and a
throwaway second user who logs in over it."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

from tests.conftest import ROOT, require, require_root, require_tool

SCRIPT = ROOT / "tests" / "cluster" / "sshd.sh"


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    identity: str  # client private key, in a folder whose name has a space
    known_hosts: str
    state_dir: Path

    @property
    def ssh_options(self) -> List[str]:
        """Strict host key checking against the server's own throwaway host key."""
        return [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes"]

    def toml(self, dest: str, **extra: str) -> str:
        """A ``[sync]`` section pointing at this server."""
        lines = [
            "[sync]",
            f'host = "{self.host}"',
            f'user = "{self.user}"',
            f"port = {self.port}",
            f'identity = "{self.identity}"',
            f'dest = "{dest}"',
            "ssh_options = [" + ", ".join(f'"{o}"' for o in self.ssh_options) + "]",
        ]
        lines += [f"{k} = {v}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sshd():
    require_root()
    require_tool("bash", "rsync", "ssh", "ssh-keygen")
    require(os.path.exists("/usr/sbin/sshd"), "/usr/sbin/sshd missing (apt-get install openssh-server)")
    state = Path(tempfile.mkdtemp(prefix="nexa-sshd-"))
    error = ""
    for _ in range(3):  # a free port can be taken between probing and binding: retry
        port = free_port()
        proc = subprocess.run(["bash", str(SCRIPT), "start", str(state), str(port)], capture_output=True, text=True)
        if proc.returncode == 0:
            break
        error = proc.stderr.strip()[-500:]
    else:
        shutil.rmtree(state, ignore_errors=True)
        require(False, f"sshd could not start: {error}")
    keydir = state / "client keys"  # a space in the key path: the -e quoting must hold
    keydir.mkdir()
    identity = keydir / "id_ed25519"
    shutil.copy(state / "client_ed25519", identity)
    identity.chmod(0o600)
    server = SshServer(
        host="127.0.0.1",
        port=port,
        user="root",
        identity=str(identity),
        known_hosts=str(state / "known_hosts"),
        state_dir=state,
    )
    yield server
    subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True)
    shutil.rmtree(state, ignore_errors=True)


@dataclass
class RemoteUser:
    """A throwaway login on the test sshd (``nexa-test-*``) with a home of its own, whose
    shell start-up files a test may fill with noise."""

    name: str
    home: Path
    uid: int
    gid: int

    def startup(self, bashrc: str) -> None:
        """Set the ``~/.bashrc`` the login shell reads for every ssh command (Debian's bash
        reads it for non-interactive ssh sessions too)."""
        path = self.home / ".bashrc"
        path.write_text(bashrc)
        os.chown(str(path), self.uid, self.gid)


def _as_root(argv: List[str]) -> subprocess.CompletedProcess:
    """useradd/userdel, retried while another process holds the passwd lock."""
    for _ in range(50):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode == 0 or "lock" not in done.stderr.lower():
            return done
        time.sleep(0.2)
    return done


@pytest.fixture(scope="session")
def sshd_user(sshd):
    """A real second user who logs in over the test sshd with the client key (session-wide;
    each test sets its own ``~/.bashrc`` through ``startup``)."""
    require_tool("useradd", "userdel")
    base = Path(tempfile.mkdtemp(prefix="nexa-remote-homes-", dir="/tmp"))
    base.chmod(0o755)  # the user must reach its home
    name = f"nexa-test-{os.getpid()}"
    home = base / name
    # '*' as the password: no password login, but not a locked account (sshd refuses those).
    made = _as_root(["useradd", "-M", "-U", "-d", str(home), "-s", "/bin/bash", "-p", "*", name])
    if made.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        require(False, f"useradd failed: {made.stderr.strip()}")
    entry = pwd.getpwnam(name)
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.state_dir / "client_ed25519.pub", home / ".ssh" / "authorized_keys")
    (home / ".ssh" / "id_ed25519").write_text("the user's own private key\n")
    for path in [home, *home.rglob("*")]:
        os.chown(str(path), entry.pw_uid, entry.pw_gid)
    user = RemoteUser(name=name, home=home, uid=entry.pw_uid, gid=entry.pw_gid)
    user.startup("")
    yield user
    _as_root(["userdel", name])
    shutil.rmtree(base, ignore_errors=True)
