"""Session fixture: the real local Slurm cluster from tests/cluster/slurm.sh."""

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List

import pytest

from tests.conftest import ROOT, require, require_root, require_tool

SCRIPT = ROOT / "tests" / "cluster" / "slurm.sh"
MAX_ARRAY = 25


@dataclass
class SlurmCluster:
    partition: str = "debug"
    nodes: List[str] = None  # type: ignore[assignment]
    max_array_size: int = MAX_ARRAY
    state_dir: Path = Path(os.environ.get("NEXA_SLURM_DIR", "/tmp/nexa-slurm"))

    def active(self, job_ids: Iterable[str]) -> List[str]:
        """Lines of squeue for these jobs (array elements expanded); empty when all done."""
        ids = ",".join(j.split("_")[0] for j in job_ids)
        out = subprocess.run(["squeue", "-h", "-r", "-j", ids, "-o", "%i %T"], capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def wait(self, job_ids: Iterable[str], timeout: float = 120) -> None:
        """Poll squeue until the jobs have left the queue (sbatch --wait polls too slowly)."""
        job_ids = list(job_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.active(job_ids):
                return
            time.sleep(0.2)
        raise AssertionError(f"Slurm jobs {job_ids} still queued after {timeout} s: {self.active(job_ids)[:5]}")


def start(accounting: bool = False) -> None:
    """(Re)start the cluster as asked; slurm.sh restarts it only when it runs otherwise."""
    env = dict(os.environ, NEXA_SLURM_MAX_ARRAY=str(MAX_ARRAY), NEXA_SLURM_ACCOUNTING="1" if accounting else "0")
    proc = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True)
    require(proc.returncode == 0, f"local Slurm could not start: {proc.stderr.strip()[-500:]}")


@pytest.fixture(scope="session")
def slurm_cluster():
    require_root()
    require_tool("bash")
    start()
    require_tool("sbatch", "squeue", "scontrol")
    return SlurmCluster(nodes=["n1", "n2"])


@pytest.fixture(scope="module")
def slurm_accounting(slurm_cluster):
    """The same cluster with job accounting (slurmdbd + MariaDB) for one test module, and
    MinJobAge=2, so slurmctld soon forgets finished jobs and only sacct still knows them.
    The plain cluster is back afterwards (both restarts empty the queue)."""
    start(accounting=True)
    require_tool("sacct", "sacctmgr", "slurmdbd", "mariadbd")
    yield slurm_cluster
    start(accounting=False)
