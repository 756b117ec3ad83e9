"""nexa gpu-exporter against a stand-in nvidia-smi (tests/fakes/nvidia-smi) that replays the
real tool's csv output: several GPUs, [N/A] fields, a driver error, a hang. Every scrape is
read back with a strict Prometheus text-format parser (below)."""

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import pytest

from nexa_ops import gpu_exporter as gx
from tests.conftest import ROOT, require_tool

FAKES = ROOT / "tests" / "fakes"
MIB = 1024 * 1024
UUID0 = "5b6a1c52-9e0d-3f4e-8a71-2c9f0d6e4b13"


# --- a small Prometheus text-format parser ------------------------------------------------

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str = ""
    samples: List[Tuple[Dict[str, str], float]] = field(default_factory=list)

    def value(self, **labels: str) -> float:
        """The one sample whose labels include ``labels``."""
        found = [v for lab, v in self.samples if all(lab.get(k) == w for k, w in labels.items())]
        if len(found) != 1:
            raise KeyError(f"{self.name}{labels}: {len(found)} samples match")
        return found[0]


class ExpositionError(ValueError):
    pass


def _labels(text: str, lineno: int) -> Tuple[Dict[str, str], str]:
    """Parse ``{a="b",...}`` at the start of ``text``; return labels and the rest."""
    labels: Dict[str, str] = {}
    i = 1
    while True:
        while text[i:i + 1] == " ":
            i += 1
        if text[i:i + 1] == "}":
            return labels, text[i + 1:]
        m = LABEL_NAME_RE.match(text, i)
        if not m or text[m.end():m.end() + 2] != '="':
            raise ExpositionError(f"line {lineno}: bad label at {text[i:i + 20]!r}")
        name = m.group()
        i = m.end() + 2
        value = []
        while True:
            if i >= len(text):
                raise ExpositionError(f"line {lineno}: unterminated label value")
            ch = text[i]
            if ch == "\\":
                nxt = text[i + 1:i + 2]
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                i += 2
            elif ch == '"':
                i += 1
                break
            else:
                value.append(ch)
                i += 1
        if name in labels:
            raise ExpositionError(f"line {lineno}: label {name} twice")
        labels[name] = "".join(value)
        if text[i:i + 1] == ",":
            i += 1


def parse(text: str) -> Dict[str, Family]:
    """Families by name. Refuses what Prometheus would refuse: bad names, values, duplicate
    series, a TYPE after samples, samples of one family split apart."""
    families: Dict[str, Family] = {}
    seen_series = set()
    last = None
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                fam = families.setdefault(name, Family(name))
                if parts[1] == "TYPE":
                    kind = parts[3].strip() if len(parts) > 3 else ""
                    if kind not in TYPES:
                        raise ExpositionError(f"line {lineno}: unknown type {kind!r}")
                    if fam.samples:
                        raise ExpositionError(f"line {lineno}: TYPE of {name} after its samples")
                    fam.type = kind
                else:
                    fam.help = parts[3] if len(parts) > 3 else ""
            continue
        m = NAME_RE.match(line)
        if not m:
            raise ExpositionError(f"line {lineno}: bad metric name in {line[:40]!r}")
        name, rest = m.group(), line[m.end():]
        labels: Dict[str, str] = {}
        if rest.startswith("{"):
            labels, rest = _labels(rest, lineno)
        fields = rest.split()
        if len(fields) not in (1, 2):
            raise ExpositionError(f"line {lineno}: expected a value (and a timestamp), got {rest!r}")
        try:
            value = float(fields[0])
        except ValueError:
            raise ExpositionError(f"line {lineno}: bad value {fields[0]!r}") from None
        key = (name, tuple(sorted(labels.items())))
        if key in seen_series:
            raise ExpositionError(f"line {lineno}: duplicate series {name}{labels}")
        seen_series.add(key)
        if name in families and families[name].samples and last != name:
            raise ExpositionError(f"line {lineno}: samples of {name} are not together")
        families.setdefault(name, Family(name)).samples.append((labels, value))
        last = name
    return families


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def fake_smi(monkeypatch):
    """The stand-in nvidia-smi first on PATH; returns a setter for its mode."""
    require_tool("python3")  # the fake's interpreter (#!/usr/bin/env python3)
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    for var in ("FAKE_NVIDIA_SMI_MODE", "FAKE_NVIDIA_SMI_UTIL", "FAKE_NVIDIA_SMI_SLEEP"):
        monkeypatch.delenv(var, raising=False)

    def mode(name: str, **extra: str) -> None:
        monkeypatch.setenv("FAKE_NVIDIA_SMI_MODE", name)
        for key, value in extra.items():
            monkeypatch.setenv(key, value)

    return mode


def scrape_families(col: gx.Collection, host: str = "gpu-node-1") -> Dict[str, Family]:
    return parse(gx.render(col, host))


# --- parsing nvidia-smi output (pure) ------------------------------------------------------

REAL_ROWS = (
    "0, GPU-5b6a1c52-9e0d-3f4e-8a71-2c9f0d6e4b13, NVIDIA A100-SXM4-80GB, 535.129.03, "
    "97, 61, 81920, 78643, 2700, 71, 387.22, 400.00, [N/A], 1410\n"
    "1, GPU-a41f9c07-2b8e-5d36-b1e0-6d2c4f8a9e57, NVIDIA H100 80GB HBM3, 535.129.03, "
    "3, [N/A], 81559, 512, 80479, 88, [N/A], [Not Supported], [N/A], 1980\n"
)


def test_parse_gpus_reads_units_and_skips_unavailable_fields():
    gpus = gx.parse_gpus(REAL_ROWS)
    assert [g.index for g in gpus] == ["0", "1"]
    a100, h100 = gpus
    assert a100.uuid == UUID0 and a100.name == "NVIDIA A100-SXM4-80GB" and a100.driver_version == "535.129.03"
    assert a100.values["nvidia_smi_utilization_gpu_ratio"] == pytest.approx(0.97)
    assert a100.values["nvidia_smi_memory_used_bytes"] == 78643 * MIB
    assert a100.values["nvidia_smi_clocks_current_sm_clock_hz"] == 1410e6
    assert "nvidia_smi_fan_speed_ratio" not in a100.values  # [N/A]
    for missing in ("nvidia_smi_power_draw_watts", "nvidia_smi_power_limit_watts", "nvidia_smi_utilization_memory_ratio"):
        assert missing not in h100.values
    assert h100.values["nvidia_smi_temperature_gpu"] == 88


@pytest.mark.parametrize("text", ["0, GPU-1, A100, 535, 97\n", "x, GPU-1" + ", 1" * 12 + "\n"])
def test_parse_gpus_refuses_other_shapes(text):
    with pytest.raises(gx.ParseError):
        gx.parse_gpus(text)


def test_count_apps_ignores_the_no_process_message():
    out = "GPU-aa, 10, 500\nGPU-aa, 11, 20\nGPU-bb, 12, 0\n"
    assert gx.count_apps(out) == {"aa": 2, "bb": 1}
    assert gx.count_apps("No running processes found\n") == {}


def test_label_values_are_escaped():
    col = gx.Collection(True, [gx.Gpu("0", "u", 'odd "name"\\x\nz', "1", {"nvidia_smi_temperature_gpu": 40})])
    fams = scrape_families(col)
    assert fams["nvidia_smi_temperature_gpu"].samples[0][0]["name"] == 'odd "name"\\x\nz'


# --- collecting from the stand-in nvidia-smi ------------------------------------------------


def test_scrape_several_gpus(fake_smi):
    col = gx.collect(timeout=10)
    assert col.success, col.error
    fams = scrape_families(col)
    assert fams["nvidia_smi_utilization_gpu_ratio"].type == "gauge"
    util = fams["nvidia_smi_utilization_gpu_ratio"]
    assert len(util.samples) == 3
    assert util.value(gpu="0") == pytest.approx(0.97)
    assert util.value(gpu="1") == 0
    labels = util.samples[0][0]
    assert labels == {"gpu": "0", "uuid": UUID0, "name": "NVIDIA A100-SXM4-80GB", "host": "gpu-node-1"}
    assert fams["nvidia_smi_memory_used_bytes"].value(gpu="0") == 78643 * MIB
    assert fams["nvidia_smi_memory_total_bytes"].value(gpu="2") == 81559 * MIB
    assert fams["nvidia_smi_temperature_gpu"].value(gpu="2") == 88
    # [N/A] fields are absent, never 0: no fan on any GPU, no power reading on the H100
    assert "nvidia_smi_fan_speed_ratio" not in fams
    assert len(fams["nvidia_smi_power_draw_watts"].samples) == 2
    assert fams["nvidia_smi_gpu_info"].value(gpu="1") == 1
    assert fams["nvidia_smi_gpu_info"].samples[0][0]["driver_version"] == "535.129.03"
    apps = fams["nvidia_smi_compute_apps"]
    assert [apps.value(gpu=i) for i in "012"] == [2, 1, 0]
    assert fams["nvidia_smi_last_collect_success"].value() == 1
    assert fams["nvidia_smi_command_exit_code"].value() == 0
    assert fams["nvidia_smi_gpus"].value() == 3
    assert fams["nvidia_smi_failed_scrapes_total"].type == "counter"


def _assert_failed(col: gx.Collection, code: int, words: str) -> Dict[str, Family]:
    assert not col.success
    assert col.exit_code == code
    assert words in col.error
    fams = scrape_families(col)
    assert fams["nvidia_smi_last_collect_success"].value() == 0
    assert fams["nvidia_smi_command_exit_code"].value() == code
    assert not [n for n in fams if n in {m for _, m, _, _ in gx.METRIC_FIELDS}], "no GPU series on failure"
    return fams


def test_driver_error_gives_up_zero_and_a_log_line(fake_smi, caplog):
    fake_smi("error")
    with caplog.at_level("WARNING", logger="nexa.gpu_exporter"):
        col = gx.collect(timeout=10)
    _assert_failed(col, 9, "couldn't communicate with the NVIDIA driver")
    assert "collection failed: nvidia-smi exited with 9" in caplog.text


def test_no_devices(fake_smi):
    fake_smi("nodevices")
    _assert_failed(gx.collect(timeout=10), 6, "No devices were found")


def test_unreadable_output(fake_smi):
    fake_smi("garbage")
    _assert_failed(gx.collect(timeout=10), 0, "cannot read nvidia-smi output")


def test_missing_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    _assert_failed(gx.collect(timeout=10), 127, "nvidia-smi: not found on PATH")


def test_hung_nvidia_smi_is_cut_off(fake_smi):
    fake_smi("slow", FAKE_NVIDIA_SMI_SLEEP="30")
    start = time.monotonic()
    col = gx.collect(timeout=0.7)
    assert time.monotonic() - start < 5
    _assert_failed(col, 124, "timed out after 0.7 s")


# --- the HTTP server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, headers: Dict[str, str] = None, timeout: float = 15) -> Tuple[int, str, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def start_exporter(port: int, env: Dict[str, str], *args: str) -> subprocess.Popen:
    """The real CLI in a subprocess; returns once the port accepts connections."""
    full = dict(os.environ, PATH=f"{FAKES}{os.pathsep}{os.environ['PATH']}", **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexa_ops", "gpu-exporter", "--port", str(port), "--host-label", "gpu-node-1", *args],
        env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited {proc.returncode}: {proc.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("exporter did not listen")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def test_http_server_serves_metrics(fake_smi):
    port = free_port()
    proc = start_exporter(port, {})
    try:
        status, ctype, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        fams = parse(body)
        assert fams["nvidia_smi_utilization_gpu_ratio"].value(gpu="0", host="gpu-node-1") == pytest.approx(0.97)
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404
        # concurrent scrapes all answer, one nvidia-smi at a time
        results: List[int] = []
        threads = [threading.Thread(target=lambda: results.append(get(f"http://127.0.0.1:{port}/metrics")[0])) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [200] * 4
    finally:
        stop(proc)


def test_http_server_survives_failing_and_hanging_nvidia_smi(fake_smi, tmp_path):
    port = free_port()
    proc = start_exporter(port, {"FAKE_NVIDIA_SMI_MODE": "slow", "FAKE_NVIDIA_SMI_SLEEP": "30"}, "--timeout", "20")
    try:
        # Prometheus's scrape timeout header caps the wait well below --timeout
        start = time.monotonic()
        status, _, body = get(f"http://127.0.0.1:{port}/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        assert time.monotonic() - start < 6
        assert status == 200
        fams = parse(body)
        assert fams["nvidia_smi_last_collect_success"].value() == 0
        assert fams["nvidia_smi_command_exit_code"].value() == 124
        status, _, body = get(f"http://127.0.0.1:{port}/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
        assert parse(body)["nvidia_smi_failed_scrapes_total"].value() == 2
        assert proc.poll() is None, "the exporter must keep running"
    finally:
        err = stop(proc)
    assert re.search(r"nexa gpu-exporter: collection failed: .*timed out", err), err


def test_cli_once_prints_metrics(fake_smi, nexa_cli):
    env = {"PATH": os.environ["PATH"]}
    done = nexa_cli("gpu-exporter", "--once", "--no-apps", "--host-label", "n7", env=env)
    assert done.returncode == 0, done.stderr
    fams = parse(done.stdout)
    assert fams["nvidia_smi_temperature_gpu"].value(gpu="0", host="n7") == 71
    assert "nvidia_smi_compute_apps" not in fams


def test_cli_once_with_failing_nvidia_smi_still_exits_zero(fake_smi, nexa_cli):
    done = nexa_cli("gpu-exporter", "--once", env={"PATH": os.environ["PATH"], "FAKE_NVIDIA_SMI_MODE": "error"})
    assert done.returncode == 0
    assert parse(done.stdout)["nvidia_smi_last_collect_success"].value() == 0
    assert "collection failed: nvidia-smi exited with 9" in done.stderr


def test_cli_dry_run_prints_the_commands(nexa_cli):
    done = nexa_cli("gpu-exporter", "--dry-run", "--port", "9999", "--listen", "0.0.0.0")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "nvidia-smi --query-gpu=" + ",".join(gx.QUERY_GPU) + " --format=csv,noheader,nounits"
    assert lines[1] == "nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits"
    assert lines[2] == "# would serve http://0.0.0.0:9999/metrics"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "http"], "nexa: error: --port: expected a TCP port number, got 'http'"),
        (["--port", "70000"], "nexa: error: --port: expected 0-65535, got 70000"),
        (["--timeout", "0"], "nexa: error: --timeout: expected seconds > 0, got 0"),
        (["--listen", "203.0.113.77"], "nexa: error: cannot listen on 203.0.113.77:"),
    ],
)
def test_cli_bad_options(nexa_cli, args, message):
    done = nexa_cli("gpu-exporter", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr
