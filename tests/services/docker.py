"""Session fixture: a private real Docker engine (tests/cluster/dockerd.sh) with local images.

The engine has its own socket, data-root and exec-root, so it never touches a system dockerd.
It serves ``local/nexa-base:1`` (a busybox rootfs, imported) and ``local/nexa-test:1`` (built
on it with the real ``bin/nexa-bootstrap.sh`` as entrypoint): no registry is needed.
"""

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, require, require_root, require_tool

SCRIPT = ROOT / "tests" / "cluster" / "dockerd.sh"


@dataclass
class DockerEngine:
    host: str  # DOCKER_HOST of the private engine
    state_dir: Path
    base_image: str
    test_image: str

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Call the real docker CLI against this engine (for assertions, not for nexa's work)."""
        env = dict(os.environ, DOCKER_HOST=self.host, DOCKER_BUILDKIT="0")
        return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=check)

    def toml(self, **services: str) -> str:
        """A ``[containers]`` section for this machine: no memlock ulimit (not permitted in
        this sandbox), a small /dev/shm, and service tags pointing at local images."""
        lines = ["[containers]", 'ulimits = ["stack=67108864"]', 'shm_size = "256m"']
        for name, tag in services.items():
            lines += [f'[containers.services."{name}"]', f'tag = "{tag}"']
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def docker_engine():
    require_root()  # dockerd runs as root
    require_tool("bash", "docker", "dockerd", "busybox")
    # A fresh folder per session, so parallel pytest runs never stop each other's engine;
    # NEXA_DOCKERD_DIR reuses (and keeps) a fixed one for faster local runs.
    fixed = os.environ.get("NEXA_DOCKERD_DIR")
    state = Path(fixed) if fixed else Path(tempfile.mkdtemp(prefix="nexa-dockerd-", dir="/tmp"))
    started = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True)
    require(started.returncode == 0, f"dockerd could not start: {started.stderr.strip()[-800:]}")
    host = started.stdout.strip().splitlines()[-1]
    made = subprocess.run(["bash", str(SCRIPT), "images", str(state)], capture_output=True, text=True)
    if made.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True)
        if not fixed:
            shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"could not make the test images: {made.stderr.strip()[-800:]}", pytrace=False)
    base, test = made.stdout.split()
    yield DockerEngine(host=host, state_dir=state, base_image=base, test_image=test)
    stopped = subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True)
    if not fixed and stopped.returncode == 0:
        shutil.rmtree(state, ignore_errors=True)
