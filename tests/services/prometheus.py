"""Session fixture: a real Prometheus server (Debian package) on 127.0.0.1 and a free port,
started by tests/cluster/prometheus.sh with whatever config a test writes."""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.conftest import ROOT, require, require_tool

SCRIPT = ROOT / "tests" / "cluster" / "prometheus.sh"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrometheusServer:
    dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: Path) -> None:
        """Start (or reload) the server with ``config``; returns once /-/ready answers."""
        proc = subprocess.run(["bash", str(SCRIPT), "start", str(self.dir), str(self.port), str(config)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"prometheus did not start: {proc.stderr.strip()[-2000:]}")

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> List[Dict[str, Any]]:
        """Instant query: ``[{"metric": {...}, "value": [ts, "v"]}, ...]``."""
        return self.api("query", query=expr)["result"]

    def wait_for(self, expr: str, timeout: float = 20.0, count: int = 1) -> List[Dict[str, Any]]:
        """Poll until ``expr`` returns at least ``count`` series (new targets take ~6 s)."""
        deadline = time.monotonic() + timeout
        result: List[Dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if len(result) >= count:
                return result
            time.sleep(0.25)
        targets = self.api("targets")["activeTargets"]
        health = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
        raise AssertionError(f"{expr!r} gave {len(result)} series after {timeout} s; targets: {health}")

    def forget(self, *instances: str, timeout: float = 15.0) -> None:
        """After a test stopped its exporters: wait until Prometheus has failed to scrape each
        ``host:port``, which marks that target's series stale. Otherwise the next test's
        restart keeps them alive for the 5-minute lookback. Best effort: never raises."""
        for instance in instances:
            try:
                self.wait_for(f'up{{instance="{instance}"}} == 0', timeout=timeout)
            except (AssertionError, OSError, ValueError):
                pass

    def log_tail(self, lines: int = 30) -> str:
        path = self.dir / "prometheus.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory):
    """A Prometheus the test points at its own config with ``.start(config)``; stopped by PID."""
    require_tool("bash")
    # the script installs the Debian package when missing, which needs root
    require(shutil.which("prometheus") is not None or os.geteuid() == 0, "prometheus not installed and not root")
    server = PrometheusServer(dir=tmp_path_factory.mktemp("prometheus"), port=free_port())
    yield server
    subprocess.run(["bash", str(SCRIPT), "stop", str(server.dir)], capture_output=True)
