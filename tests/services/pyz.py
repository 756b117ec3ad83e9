"""Session fixture: a freshly built ``nexa.pyz`` (shared by the zipapp tests and the Slurm
end-to-end tests that run the sweep from the zipapp), and the pyenv interpreters 3.6-3.13."""

import glob
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

from tests.conftest import ROOT, require

#: Every CPython the zipapp must run on (the machines have them all through pyenv): 3.6 is
#: RHEL 8's python3, still common on HPC login and compute nodes.
PYTHONS = ("3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13")


def pyenv_python(version: str) -> Optional[str]:
    """``$(pyenv root)/versions/<version>.*/bin/python`` (newest patch), or None."""
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    root = root or os.path.expanduser("~/.pyenv")
    found = [p for p in glob.glob(os.path.join(root, "versions", version + ".*", "bin", "python")) if os.access(p, os.X_OK)]
    found.sort(key=lambda p: [int(x) for x in p.split(os.sep)[-3].split(".") if x.isdigit()])
    return found[-1] if found else None


def require_python(version: str) -> str:
    """The interpreter for ``version``; skip on a laptop without it, fail in CI."""
    path = pyenv_python(version)
    require(path is not None, f"CPython {version} not installed (pyenv install {version})")
    return path  # type: ignore[return-value]


def clean_env(home: Path, tmpdir: Path, **extra: str) -> Dict[str, str]:
    """A bare environment like a fresh login on a cluster node: no venv, no PYTHONPATH, no
    SHIV_ROOT, HOME and TMPDIR where the test says."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmpdir), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def nexa_pyz(tmp_path_factory) -> Path:
    """``nexa.pyz`` built from this checkout by ``nexa_ops.pyz.build`` (what ``inv build`` runs)."""
    require(importlib.util.find_spec("shiv") is not None, "shiv not installed (pip install -e '.[dev]')")
    from nexa_ops import pyz

    settings = pyz.load_settings(str(ROOT / "shiv.toml"))
    out = tmp_path_factory.mktemp("pyz") / "nexa.pyz"
    result = pyz.build(settings, str(out))
    assert result.path == out and out.is_file()
    return out
