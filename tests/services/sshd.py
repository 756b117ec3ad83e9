"""Session fixture: a real sshd on 127.0.0.1 (tests/cluster/sshd.sh) with throwaway keys."""

import os
import shutil
import socket
import subprocess
import tempfile
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
