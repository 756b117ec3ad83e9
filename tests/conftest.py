"""Shared test helpers.

Tests that need a real tool (sbatch, dockerd, sshd, terraform, promtool, torch...) call
``require_tool``/``require``: on a laptop without it they skip, but with
``NEXA_REQUIRE_TOOLS=1`` (set by ``.ci/run``) a missing tool is a failure, never a skip.
Service fixtures live in ``tests/services/*.py`` and are loaded as plugins below.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("NEXA_REQUIRE_TOOLS") == "1"

pytest_plugins = sorted(f"tests.services.{p.stem}" for p in (ROOT / "tests" / "services").glob("*.py") if p.stem != "__init__")


def require(condition: bool, reason: str) -> None:
    """Skip (developer laptop) or fail (CI) when ``condition`` is false."""
    if condition:
        return
    if REQUIRE:
        pytest.fail(f"required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(*tools: str) -> None:
    for tool in tools:
        require(shutil.which(tool) is not None, f"{tool} not on PATH")


def require_root() -> None:
    require(os.geteuid() == 0, "needs root")


@pytest.fixture
def nexa_cli(tmp_path):
    """Run the CLI in a subprocess (the real entry point), returning CompletedProcess."""
    import subprocess

    def run(*args, cwd=None, env=None, input=None, check=False):
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "nexa_ops", *args],
            cwd=str(cwd or tmp_path),
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    return run
