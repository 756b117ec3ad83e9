"""nexa monitor-config: targets from the CLI, nexa.toml or Slurm; the written config and the
shipped rules checked by the real promtool; a real Prometheus scraping nexa's GPU exporter
(stand-in nvidia-smi) with the shipped config and rules, read back through the HTTP API."""

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from nexa_ops import monitor
from nexa_ops.config import load_config
from nexa_ops.errors import ConfigError
from tests.conftest import ROOT, require_tool

RULES = ROOT / "nexa_ops" / "data" / "gpu_rules.yml"
RULE_TESTS = ROOT / "tests" / "promtool" / "gpu_rules_test.yml"
FAKES = ROOT / "tests" / "fakes"


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    require_tool("promtool")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nexa.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- planning (pure) ----------------------------------------------------------------------


def test_cli_targets_give_one_job_per_exporter(tmp_path):
    plan = monitor.plan_monitor(load_config(cwd=tmp_path), targets=["gpu01", "gpu02", "gpu01"])
    assert plan.nodes == ["gpu01", "gpu02"]
    assert [(j.name, j.targets) for j in plan.jobs] == [
        ("dcgm-exporter", ["gpu01:9400", "gpu02:9400"]),
        ("node-exporter", ["gpu01:9100", "gpu02:9100"]),
        ("nexa-gpu-exporter", ["gpu01:9835", "gpu02:9835"]),
    ]
    assert plan.out_dir == tmp_path / "monitoring"
    assert "scrape_interval: 15s" in plan.prometheus_yml and "scrape_timeout: 10s" in plan.prometheus_yml
    assert plan.rules_yml == RULES.read_text()


def test_toml_settings_and_cli_precedence(tmp_path):
    write_toml(
        tmp_path,
        '[monitor]\ntargets = ["10.0.0.5", "node-7"]\nexporters = ["nexa"]\nnexa_exporter_port = 9900\n'
        'scrape_interval = "5s"\nout = "prom"\n',
    )
    cfg = load_config(cwd=tmp_path)
    plan = monitor.plan_monitor(cfg)
    assert plan.source.endswith("nexa.toml [monitor] targets")
    assert [(j.name, j.targets) for j in plan.jobs] == [("nexa-gpu-exporter", ["10.0.0.5:9900", "node-7:9900"])]
    assert "scrape_timeout: 5s" in plan.prometheus_yml  # never above the interval
    assert plan.out_dir == tmp_path / "prom"
    plan = monitor.plan_monitor(cfg, targets=["other"], overrides={"exporters": ["dcgm", "nexa"], "nexa_exporter_port": 1234})
    assert plan.source == "the command line (--target)"
    assert [j.targets for j in plan.jobs] == [["other:9400"], ["other:1234"]]


@pytest.mark.parametrize(
    "toml, message",
    [
        ('targets = ["n1:9100"]', "monitor.targets[0]: expected a hostname or IP address, got 'n1:9100' (give the host only"),
        ('targets = ["a b"]', "monitor.targets[0]: expected a hostname or IP address, got 'a b'"),
        ('exporters = ["dcgm", "gpu"]', "monitor.exporters[1]: unknown exporter 'gpu'; expected one of dcgm, node, nexa"),
        ("exporters = []", "monitor.exporters: expected at least one of dcgm, node, nexa"),
        ("dcgm_port = 0", "monitor.dcgm_port: expected a TCP port 1-65535, got 0"),
        ('scrape_interval = "15"', "monitor.scrape_interval: expected a Prometheus duration like '15s'"),
        ('evaluation_interval = "0s"', "monitor.evaluation_interval: expected a Prometheus duration"),
        ('targets = "n1"', "monitor.targets: expected a list of strings"),
        ("tragets = []", "monitor.tragets: unknown key (did you mean 'targets'?)"),
    ],
)
def test_bad_monitor_section(tmp_path, toml, message):
    path = write_toml(tmp_path, f"[monitor]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        monitor.plan_monitor(load_config(cwd=tmp_path))
    assert str(info.value).startswith(f"{path}: {message}")


def test_no_targets_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no targets: give --target HOST"):
        monitor.plan_monitor(load_config(cwd=tmp_path))


def test_api_writes_both_files_with_overrides(tmp_path):
    plan = monitor.write_monitoring_config(["gpu01"], config=load_config(cwd=tmp_path), out=str(tmp_path / "m"), scrape_interval="30s")
    assert plan.written == [tmp_path / "m" / "prometheus.yml", tmp_path / "m" / "gpu_rules.yml"]
    assert "scrape_interval: 30s" in plan.prometheus_yml and plan.config_path.read_text() == plan.prometheus_yml
    with pytest.raises(ConfigError, match="unknown \\[monitor\\] setting\\(s\\): scrape_every"):
        monitor.write_monitoring_config(["gpu01"], config=load_config(cwd=tmp_path), scrape_every="30s")


# --- the command, promtool on what it writes --------------------------------------------------


def test_monitor_config_writes_files_promtool_accepts(nexa_cli, tmp_path):
    done = nexa_cli("monitor-config", "--target", "gpu01", "--target", "gpu02", "--out", "prom")
    assert done.returncode == 0, done.stderr
    assert "2 node(s) from the command line (--target): gpu01, gpu02" in done.stdout
    config, rules = tmp_path / "prom" / "prometheus.yml", tmp_path / "prom" / "gpu_rules.yml"
    assert rules.read_text() == RULES.read_text()
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    assert "SUCCESS: 13 rules found" in checked.stdout


def test_monitor_config_check_flag_runs_promtool(nexa_cli, tmp_path):
    require_tool("promtool")
    done = nexa_cli("monitor-config", "--target", "127.0.0.1", "--exporters", "nexa,node", "--scrape-interval", "500ms", "--check")
    assert done.returncode == 0, done.stderr
    assert "promtool check config: OK" in done.stdout
    text = (tmp_path / "monitoring" / "prometheus.yml").read_text()
    assert "scrape_timeout: 500ms" in text and "job_name: \"dcgm-exporter\"" not in text


def test_shipped_rules_pass_promtool_check_and_unit_tests():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.parametrize(
    "old, new",
    [
        ("node_gpu:utilization:ratio < 0.10", "node_gpu:utilization:ratio < 0.01"),  # idle alert never fires
        ("(node_gpu:allocated == 1)", "(node_gpu:allocated >= 0)"),  # idle alert fires on free GPUs
        ("node_gpu:memory_used:ratio > 0.95", "node_gpu:memory_used:ratio > 0.5"),
        ("node_gpu:temperature:celsius > 85", "node_gpu:temperature:celsius > 95"),
        ('up{job=~"dcgm-exporter|nexa-gpu-exporter|node-exporter"} == 0', "up == 0"),
        ("nvidia_smi_last_collect_success == 0", "nvidia_smi_last_collect_success < 1 or nvidia_smi_last_collect_success"),
    ],
)
def test_rule_unit_tests_catch_a_broken_rule(tmp_path, old, new):
    """The promtool unit tests have teeth: each alert's threshold or filter, changed, fails them."""
    text = RULES.read_text()
    assert old in text
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gpu_rules.yml").write_text(text.replace(old, new))
    tests = RULE_TESTS.read_text().replace("../../nexa_ops/data/gpu_rules.yml", "data/gpu_rules.yml")
    (tmp_path / "t.yml").write_text(tests)
    tested = promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert tested.returncode == 1, tested.stdout


def test_dry_run_writes_nothing(nexa_cli, tmp_path):
    done = nexa_cli("monitor-config", "--target", "gpu01", "--dry-run", "--check")
    assert done.returncode == 0, done.stderr
    assert f"# would write {tmp_path / 'monitoring' / 'gpu_rules.yml'}" in done.stdout
    assert '- "gpu01:9835"' in done.stdout
    assert done.stdout.rstrip().endswith(f"promtool check config {tmp_path / 'monitoring' / 'prometheus.yml'}")
    assert not (tmp_path / "monitoring").exists()


def test_bad_input_keeps_the_old_files(nexa_cli, tmp_path):
    assert nexa_cli("monitor-config", "--target", "gpu01").returncode == 0
    before = (tmp_path / "monitoring" / "prometheus.yml").read_text()
    done = nexa_cli("monitor-config", "--target", "gpu02", "--nexa-port", "99999")
    assert done.returncode == 2
    assert done.stderr.strip() == "nexa: error: command line: --nexa-port: expected a TCP port 1-65535, got 99999"
    assert (tmp_path / "monitoring" / "prometheus.yml").read_text() == before
    done = nexa_cli("monitor-config", "--target", "gpu02", "--exporters", "dcgm,gpu")
    assert done.stderr.strip() == "nexa: error: command line: --exporters[1]: unknown exporter 'gpu'; expected one of dcgm, node, nexa"
    assert sorted(p.name for p in (tmp_path / "monitoring").iterdir()) == ["gpu_rules.yml", "prometheus.yml"]  # no temp files


# --- targets from Slurm ----------------------------------------------------------------------


def test_targets_from_slurm(slurm_cluster, nexa_cli, tmp_path):
    done = nexa_cli("monitor-config", "--from-slurm", "--exporters", "nexa")
    assert done.returncode == 0, done.stderr
    assert f"{len(slurm_cluster.nodes)} node(s) from the Slurm nodes (sinfo)" in done.stdout
    text = (tmp_path / "monitoring" / "prometheus.yml").read_text()
    for node in slurm_cluster.nodes:
        assert f'- "{node}:9835"' in text
    # nexa.toml asks for Slurm, one partition
    write_toml(tmp_path, f'[monitor]\nfrom_slurm = true\npartition = "{slurm_cluster.partition}"\n')
    plan = monitor.plan_monitor(load_config(cwd=tmp_path))
    assert plan.nodes == slurm_cluster.nodes
    assert plan.source == f"the Slurm nodes partition {slurm_cluster.partition} (sinfo)"


def test_unknown_slurm_partition(slurm_cluster, nexa_cli):
    done = nexa_cli("monitor-config", "--from-slurm", "--partition", "no-such-partition")
    assert done.returncode == 2
    assert "sinfo lists no nodes in partition 'no-such-partition'" in done.stderr


# --- packaging -------------------------------------------------------------------------------


def test_config_and_rules_are_read_from_inside_a_zipapp(tmp_path):
    """nexa.pyz imports nexa_ops from a zip: the template and rules must come from there."""
    archive = tmp_path / "site.zip"
    pkg = ROOT / "nexa_ops"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in pkg.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(ROOT).as_posix())
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import shutil, nexa_ops.resources as r; "
        "r._REPO = r._REPO / 'nowhere'; "  # no checkout fallback
        "from nexa_ops import monitor; from nexa_ops.config import load_config; "
        "assert '.zip' in monitor.__file__, monitor.__file__; "
        "p = monitor.plan_monitor(load_config(cwd=__import__('pathlib').Path('.')), targets=['n1']); "
        "print(len(p.rules_yml), p.prometheus_yml.count('job_name'))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(archive)], capture_output=True, text=True, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(RULES.read_text())), "3"]


# --- a real Prometheus scraping the exporter ---------------------------------------------------


def start_exporter(listen: str, port: int, mode: str) -> subprocess.Popen:
    env = dict(os.environ, PATH=f"{FAKES}{os.pathsep}{os.environ['PATH']}", FAKE_NVIDIA_SMI_MODE=mode)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexa_ops", "gpu-exporter", "--listen", listen, "--port", str(port), "--host-label", f"host-{mode}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited: {proc.stderr.read()}")
        try:
            socket.create_connection((listen, port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"exporter not listening on {listen}:{port}")


def by_node(results):
    return {(r["metric"].get("node"), r["metric"].get("gpu")): float(r["value"][1]) for r in results}


def test_prometheus_scrapes_the_exporter_with_the_shipped_config(prometheus_server, nexa_cli, tmp_path):
    """127.0.0.1 has healthy GPUs, 127.0.0.2's nvidia-smi fails, nothing listens on 127.0.0.3."""
    from tests.services.prometheus import free_port

    require_tool("promtool", "prometheus")
    port = free_port()
    exporters = [start_exporter("127.0.0.1", port, "ok"), start_exporter("127.0.0.2", port, "error")]
    try:
        out = tmp_path / "prom"
        done = nexa_cli(
            "monitor-config", "--out", str(out), "--exporters", "nexa", "--nexa-port", str(port),
            "--target", "127.0.0.1", "--target", "127.0.0.2", "--target", "127.0.0.3",
            "--scrape-interval", "1s", "--evaluation-interval", "1s", "--check",
        )
        assert done.returncode == 0, done.stderr
        prometheus_server.start(out / "prometheus.yml")

        util = prometheus_server.wait_for('nvidia_smi_utilization_gpu_ratio{job="nexa-gpu-exporter"}', count=3)
        assert by_node(util) == {("127.0.0.1", "0"): 0.97, ("127.0.0.1", "1"): 0.0, ("127.0.0.1", "2"): 0.03}
        sample = util[0]["metric"]
        assert sample["instance"] == f"127.0.0.1:{port}" and sample["host"] == "host-ok"
        assert sample["name"].startswith("NVIDIA ")

        # the recording rules, evaluated by Prometheus itself
        ratio = prometheus_server.wait_for("node_gpu:memory_used:ratio", count=3)
        assert by_node(ratio)[("127.0.0.1", "0")] == pytest.approx(78643 / 81920)
        allocated = prometheus_server.wait_for("node_gpu:allocated", count=3)
        assert by_node(allocated) == {("127.0.0.1", "0"): 1, ("127.0.0.1", "1"): 1, ("127.0.0.1", "2"): 0}

        health = prometheus_server.wait_for("nvidia_smi_last_collect_success", count=2)
        assert by_node(health) == {("127.0.0.1", None): 1, ("127.0.0.2", None): 0}
        up = prometheus_server.wait_for('up{job="nexa-gpu-exporter"}', count=3)
        assert by_node(up) == {("127.0.0.1", None): 1, ("127.0.0.2", None): 1, ("127.0.0.3", None): 0}

        # every alert of the shipped rules is at least pending on the node that earns it
        want = {
            ("GpuIdleWhileAllocated", "127.0.0.1", "1"),  # 0 % with a process on it
            ("GpuMemoryNearFull", "127.0.0.1", "0"),  # 96 %
            ("GpuTemperatureHigh", "127.0.0.1", "2"),  # 88 C
            ("GpuMetricsCollectionFailing", "127.0.0.2", None),
            ("GpuExporterDown", "127.0.0.3", None),
        }
        deadline = time.monotonic() + 20
        got = set()
        while time.monotonic() < deadline and not want <= got:
            alerts = prometheus_server.query('ALERTS{alertstate="pending"}')
            got = {(a["metric"]["alertname"], a["metric"].get("node"), a["metric"].get("gpu")) for a in alerts}
            time.sleep(0.25)
        assert got == want, prometheus_server.log_tail()
    finally:
        for proc in exporters:
            proc.terminate()
            proc.wait(10)


def test_fake_nvidia_smi_is_executable():
    assert os.access(FAKES / "nvidia-smi", os.X_OK)
    assert shutil.which("nvidia-smi", path=str(FAKES)) == str(FAKES / "nvidia-smi")
