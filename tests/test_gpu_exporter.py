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
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from nexa_ops import gpu_exporter as gx
from nexa_ops.tools import nvidia_smi
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
    for var in ("FAKE_NVIDIA_SMI_MODE", "FAKE_NVIDIA_SMI_UTIL", "FAKE_NVIDIA_SMI_SLEEP", "FAKE_NVIDIA_SMI_PIDS", "FAKE_NVIDIA_SMI_LOG"):
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
    out = "10, GPU-aa, 500\n11, GPU-aa, 20\n12, GPU-bb, 0\n"
    assert gx.count_apps(out) == {"aa": 2, "bb": 1}
    assert gx.count_apps("No running processes found\n") == {}


# --- which Slurm job holds a GPU (pure) ---------------------------------------------------

CGROUP_V1 = (  # proctrack/cgroup + task/cgroup, cgroup v1: every controller names the job
    "12:pids:/slurm/uid_1000/job_4711/step_batch/task_0\n"
    "11:memory:/slurm/uid_1000/job_4711/step_batch/task_0\n"
    "4:cpuset:/slurm/uid_1000/job_4711/step_batch\n"
    "1:name=systemd:/system.slice/slurmd.service\n"
)
CGROUP_V2 = "0::/system.slice/slurmstepd.scope/job_4712/step_0/user/task_0\n"
NOT_SLURM = "0::/user.slice/user-1000.slice/session-3.scope\n0::/kubepods/job_77/pod\n"


def test_job_from_cgroup_reads_slurm_paths_only():
    assert gx.job_from_cgroup(CGROUP_V1) == "4711"
    assert gx.job_from_cgroup(CGROUP_V2) == "4712"
    assert gx.job_from_cgroup(NOT_SLURM) is None
    assert gx.job_from_cgroup("") is None


def test_job_from_environ():
    env = b"PATH=/usr/bin\0SLURM_ARRAY_JOB_ID=40\0SLURM_JOB_ID=42\0SLURM_JOB_USER=alice\0"
    assert gx.job_from_environ(env) == "42"
    assert gx.job_from_environ(b"PATH=/usr/bin\0") is None
    assert gx.job_from_environ(b"SLURM_JOB_ID=$(x)\0") is None  # never a label value that is not a job id


def test_assign_holders_counts_processes_and_dedups_jobs():
    gpus = gx.parse_gpus(REAL_ROWS)
    apps = nvidia_smi.parse_apps(f"10, GPU-{UUID0}, 500\n11, GPU-{UUID0}, 20\n12, GPU-{UUID0}, 1\n13, GPU-unknown, 1\n")
    holders = {10: gx.Holder("7", "alice"), 11: gx.Holder("7", "alice"), 12: gx.Holder("", "bob")}
    gx.assign_holders(gpus, apps, lambda pid: holders[pid])
    assert gpus[0].compute_apps == 3 and gpus[0].holders == [gx.Holder("7", "alice"), gx.Holder("", "bob")]
    assert gpus[1].compute_apps == 0 and gpus[1].holders == []
    fams = scrape_families(gx.Collection(True, gpus))
    info = fams["nexa_gpu_job_info"]
    assert [(lab["gpu"], lab["slurm_job_id"], lab["user"], v) for lab, v in info.samples] == [("0", "7", "alice", 1), ("0", "", "bob", 1)]
    assert info.samples[0][0]["uuid"] == UUID0 and info.samples[0][0]["host"] == "gpu-node-1"


def test_process_holder_reads_a_real_process(tmp_path):
    """The environment fallback, on a real process; a pid that does not exist is unmapped."""
    import pwd

    child = subprocess.Popen(["sleep", "30"], env=dict(os.environ, SLURM_JOB_ID="4242"))
    try:
        # Until the child has exec'd sleep, /proc/<pid>/environ is still this process's.
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "sleep never started"
            time.sleep(0.01)
        assert gx.process_holder(child.pid) == gx.Holder("4242", pwd.getpwuid(os.getuid()).pw_name)
        assert gx.process_holder(os.getpid()).slurm_job_id == os.environ.get("SLURM_JOB_ID", "")
    finally:
        child.kill()
        child.wait()
    assert gx.process_holder(child.pid) == gx.Holder("", "")
    # a cgroup naming a Slurm job wins over the environment
    fake = tmp_path / "proc" / "77"
    fake.mkdir(parents=True)
    (fake / "cgroup").write_text(CGROUP_V2)
    (fake / "environ").write_bytes(b"SLURM_JOB_ID=1\0")
    assert gx.process_holder(77, proc_root=str(tmp_path / "proc")).slurm_job_id == "4712"


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
    proc = start_exporter(port, {"FAKE_NVIDIA_SMI_MODE": "slow", "FAKE_NVIDIA_SMI_SLEEP": "30"}, "--timeout", "20", "--cache-seconds", "0")
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
    assert lines[1] == "nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits"
    assert lines[2] == "# would serve http://0.0.0.0:9999/metrics (8 handler threads)"


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


# --- under load: bounded threads, whole-request deadline, shared collections ---------------


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError(f"no Threads: line for {pid}")


def nvidia_smi_calls(log: "os.PathLike[str]") -> Tuple[List[str], List[str]]:
    """(--query-gpu calls, --query-compute-apps calls) the fake logged."""
    lines = open(log).read().splitlines() if os.path.exists(log) else []
    return [c for c in lines if c.startswith("--query-gpu=")], [c for c in lines if c.startswith("--query-compute-apps=")]


def test_one_collection_runs_each_query_once(fake_smi, tmp_path, nexa_cli):
    log = tmp_path / "calls.log"
    done = nexa_cli("gpu-exporter", "--once", env={"PATH": os.environ["PATH"], "FAKE_NVIDIA_SMI_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    gpu_calls, app_calls = nvidia_smi_calls(log)
    assert gpu_calls == ["--query-gpu=" + ",".join(gx.QUERY_GPU) + " --format=csv,noheader,nounits"]  # every field in one run
    assert app_calls == ["--query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits"]
    log.unlink()
    done = nexa_cli("gpu-exporter", "--once", "--no-apps", env={"PATH": os.environ["PATH"], "FAKE_NVIDIA_SMI_LOG": str(log)})
    assert done.returncode == 0 and [len(c) for c in nvidia_smi_calls(log)] == [1, 0]


def test_concurrent_scrapes_share_collections_and_never_fail(fake_smi, tmp_path):
    """10 clients scraping in a loop (the load that made 1 scrape in 8 fail): every answer is
    a successful collection, and nvidia-smi runs at most once per cache interval."""
    log = tmp_path / "calls.log"
    port = free_port()
    proc = start_exporter(port, {"FAKE_NVIDIA_SMI_LOG": str(log)}, "--cache-seconds", "1")
    results: List[Tuple[int, float, float]] = []
    errors: List[str] = []
    seconds = 4.0
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            try:
                status, _, body = get(f"http://127.0.0.1:{port}/metrics")
                fams = parse(body)
                results.append((status, fams["nvidia_smi_last_collect_success"].value(), fams["nvidia_smi_failed_scrapes_total"].value()))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))

    try:
        threads = [threading.Thread(target=client) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        stop(proc)
    assert not errors, errors[:3]
    assert len(results) >= 50, len(results)
    assert set(results) == {(200, 1.0, 0.0)}
    gpu_calls, app_calls = nvidia_smi_calls(log)
    assert len(gpu_calls) == len(app_calls)  # each collection: one GPU query, one compute-apps query
    assert 1 <= len(gpu_calls) <= seconds / 1 + 2, f"{len(gpu_calls)} collections for {len(results)} scrapes"


def test_slow_connections_are_cut_at_the_request_deadline_with_bounded_threads(fake_smi):
    """40 clients that send their request a byte at a time (each byte well within any per-read
    timeout): the exporter never has more than its handler threads, cuts every one of them
    once the whole-request deadline has passed, and then serves a scrape."""
    import select

    port = free_port()
    workers, deadline = 3, 1.5
    proc = start_exporter(port, {}, "--workers", str(workers), "--request-timeout", str(deadline))
    socks: List[socket.socket] = []
    try:
        assert threads_of(proc.pid) <= workers + 1
        start = time.monotonic()
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            socks.append(sock)
        closed_at: Dict[int, float] = {}
        most = 0
        while time.monotonic() - start < deadline + 5 and len(closed_at) < len(socks):
            for i, sock in enumerate(socks):
                if i in closed_at:
                    continue
                try:
                    sock.send(b"X")
                    if select.select([sock], [], [], 0)[0] and sock.recv(4096) == b"":
                        closed_at[i] = time.monotonic() - start
                except OSError:  # reset by the exporter
                    closed_at[i] = time.monotonic() - start
            most = max(most, threads_of(proc.pid))
            time.sleep(0.2)
        assert most <= workers + 1, f"{most} threads"
        assert len(closed_at) == len(socks), f"{len(socks) - len(closed_at)} slow connections still open"
        assert max(closed_at.values()) < deadline + 2.5, sorted(closed_at.values())[-3:]
        assert any(t >= deadline - 0.3 for t in closed_at.values())  # the ones being served ran until their deadline
        status, _, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and parse(body)["nvidia_smi_last_collect_success"].value() == 1
        assert proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
        stop(proc)


def test_listen_backlog_holds_many_waiting_connections():
    """Connections the server has not accepted yet wait in the kernel's queue (128, not 5)."""
    server = gx.make_server("127.0.0.1", 0, gx.Exporter("h"), workers=1)
    socks = []
    try:
        port = server.server_address[1]
        for _ in range(60):  # nothing accepts: each one waits in the listen backlog
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
    finally:
        for sock in socks:
            sock.close()
        server.server_close()
    assert len(socks) == 60


# --- real Slurm tasks on the (stand-in) GPUs -------------------------------------------------


@pytest.mark.slurm
def test_exporter_names_the_slurm_jobs_of_real_array_tasks(slurm_cluster, fake_smi, tmp_path, nexa_cli):
    """Two running array tasks each start a process; the stand-in nvidia-smi lists those pids
    on GPUs 0 and 1; the exporter maps them to the tasks' real Slurm job ids."""
    import pwd

    folder = tmp_path / "tasks"
    folder.mkdir()
    script = (
        f'sleep 300 & echo "$! $SLURM_JOB_ID" > {folder}/$SLURM_ARRAY_TASK_ID.tmp '
        f"&& mv {folder}/$SLURM_ARRAY_TASK_ID.tmp {folder}/$SLURM_ARRAY_TASK_ID; wait"
    )
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=0-1", "-t", "5", "-o", "/dev/null", "-J", "nexa-gpu-map", "--wrap", script],
        capture_output=True,
        text=True,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 120
        while not all((folder / str(i)).exists() for i in (0, 1)):
            assert time.monotonic() < deadline, f"array {job} did not start: {slurm_cluster.active([job])}"
            time.sleep(0.2)
        reported = {i: (folder / str(i)).read_text().split() for i in (0, 1)}  # index -> [pid, SLURM_JOB_ID]
        squeue = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%K %A"], capture_output=True, text=True).stdout
        job_ids = dict(line.split() for line in squeue.splitlines())  # array index -> the task's own job id
        pids = tmp_path / "pids"
        pids.write_text("".join(f"{reported[i][0]} {i}\n" for i in (0, 1)))
        done = nexa_cli("gpu-exporter", "--once", env={"PATH": os.environ["PATH"], "FAKE_NVIDIA_SMI_PIDS": str(pids)})
        assert done.returncode == 0, done.stderr
        fams = parse(done.stdout)
        info = {lab["gpu"]: (lab["slurm_job_id"], lab["user"]) for lab, _ in fams["nexa_gpu_job_info"].samples}
        user = pwd.getpwuid(os.stat(f"/proc/{reported[0][0]}").st_uid).pw_name
        assert info == {"0": (job_ids["0"], user), "1": (job_ids["1"], user)}
        assert [reported[i][1] for i in (0, 1)] == [job_ids["0"], job_ids["1"]]
        assert [fams["nvidia_smi_compute_apps"].value(gpu=g) for g in "012"] == [1, 1, 0]
    finally:
        subprocess.run(["scancel", job], capture_output=True)
