"""nexa monitor-config: targets from the CLI, nexa.toml or Slurm; the written config and the
shipped rules checked by the real promtool; a real Prometheus scraping nexa's GPU exporter
(stand-in nvidia-smi) with the shipped config and rules, read back through the HTTP API."""

import os
import re
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
    grafana = tmp_path / "m" / "grafana"
    assert plan.written == [
        tmp_path / "m" / "prometheus.yml",
        tmp_path / "m" / "gpu_rules.yml",
        grafana / "dashboards" / "nexa-gpus.json",
        grafana / "provisioning" / "datasources" / "nexa.yml",
        grafana / "provisioning" / "dashboards" / "nexa.yml",
    ]
    assert all(p.read_text() == text for p, text in plan.files())
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
    written = sorted(str(p.relative_to(tmp_path / "monitoring")) for p in (tmp_path / "monitoring").rglob("*") if p.is_file())
    assert written == [  # no temp files
        "gpu_rules.yml",
        "grafana/dashboards/nexa-gpus.json",
        "grafana/provisioning/dashboards/nexa.yml",
        "grafana/provisioning/datasources/nexa.yml",
        "prometheus.yml",
    ]


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
        "print(len(p.rules_yml), p.prometheus_yml.count('job_name'), len(p.dashboard_json), p.datasource_yml.count('nexa-prometheus'))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(archive)], capture_output=True, text=True, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    dashboard = monitor.dashboard_text()
    assert done.stdout.split() == [str(len(RULES.read_text())), "3", str(len(dashboard)), "2"]


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

        health = prometheus_server.wait_for(f'nvidia_smi_last_collect_success{{instance=~".+:{port}"}}', count=2)
        assert by_node(health) == {("127.0.0.1", None): 1, ("127.0.0.2", None): 0}
        # the session's Prometheus keeps what earlier tests scraped: `up` of their stopped
        # exporters stays 0 for its 5-minute lookback, so look at this test's port only
        up = prometheus_server.wait_for(f'up{{job="nexa-gpu-exporter", instance=~".+:{port}"}}', count=3)
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
            ours = [a for a in alerts if a["metric"].get("instance", f":{port}").endswith(f":{port}")]  # (see `up` above)
            got = {(a["metric"]["alertname"], a["metric"].get("node"), a["metric"].get("gpu")) for a in ours}
            time.sleep(0.25)
        assert got == want, prometheus_server.log_tail()
    finally:
        for proc in exporters:
            proc.terminate()
            proc.wait(10)
        prometheus_server.forget(f"127.0.0.1:{port}", f"127.0.0.2:{port}")


def test_fake_nvidia_smi_is_executable():
    assert os.access(FAKES / "nvidia-smi", os.X_OK)
    assert shutil.which("nvidia-smi", path=str(FAKES)) == str(FAKES / "nvidia-smi")


# --- Grafana: the dashboard and its provisioning files -----------------------------------------

DS_REF = {"type": "prometheus", "uid": "${ds}"}


def load_yaml(path: Path):
    """Parse YAML with a real YAML parser (PyYAML of Debian's python3; nexa itself has none)."""
    import json

    system = "/usr/bin/python3"
    probe = subprocess.run([system, "-c", "import yaml"], capture_output=True) if os.path.exists(system) else None
    from tests.conftest import require

    require(probe is not None and probe.returncode == 0, "Debian's python3-yaml (to parse the Grafana provisioning files)")
    code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    done = subprocess.run([system, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def query_panels(board):
    """Every panel that runs queries (rows hold none), nested rows included."""
    out = []
    for panel in board["panels"]:
        out.extend(panel.get("panels", []))
        if panel["type"] != "row":
            out.append(panel)
    return out


def all_panels(board):
    return [p for panel in board["panels"] for p in [panel, *panel.get("panels", [])]]


def test_dashboard_is_a_valid_grafana_dashboard(tmp_path):
    import json

    plan = monitor.write_monitoring_config(["gpu01"], config=load_config(cwd=tmp_path), out=str(tmp_path / "m"))
    board = json.loads(plan.dashboard_path.read_text())
    assert board == monitor.dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] == "nexa-gpus" and board["title"] and board["id"] is None  # importable: Grafana assigns the id
    ids = [p["id"] for p in all_panels(board)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for panel in all_panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] >= 1 and pos["x"] + pos["w"] <= 24 and pos["h"] >= 1, panel["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["ds"]["type"] == "datasource" and variables["ds"]["query"] == "prometheus"
    assert variables["ds"]["current"]["value"] == monitor.DATASOURCE_UID  # the provisioned datasource
    assert variables["job"]["datasource"] == DS_REF
    titles = set()
    for panel in query_panels(board):
        titles.add(panel["title"])
        assert panel["datasource"] == DS_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS_REF and target["expr"].strip()
            # every $variable is the dashboard's own, or label_replace's $1
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= set(variables) | {"1"}, (panel["title"], used)
    for word in ("utilisation", "memory", "temperature", "Allocated vs idle", "alerts", "job $job"):
        assert any(word in t for t in titles), word
    # the provisioned datasource is the one the ds variable selects
    source = load_yaml(plan.datasource_path)
    (ds,) = source["datasources"]
    assert (ds["uid"], ds["type"], ds["url"]) == (monitor.DATASOURCE_UID, "prometheus", "http://localhost:9090")
    provider = load_yaml(plan.dashboards_provider_path)
    (prov,) = provider["providers"]
    assert prov["type"] == "file" and Path(prov["options"]["path"]) == plan.dashboard_path.parent
    assert Path(prov["options"]["path"]).is_absolute()


def test_prometheus_url_from_toml_and_command_line(nexa_cli, tmp_path):
    write_toml(tmp_path, '[monitor]\nprometheus_url = "http://prom.internal:9090/"\n')
    assert nexa_cli("monitor-config", "--target", "gpu01").returncode == 0
    ds_file = tmp_path / "monitoring" / "grafana" / "provisioning" / "datasources" / "nexa.yml"
    assert load_yaml(ds_file)["datasources"][0]["url"] == "http://prom.internal:9090"
    done = nexa_cli("monitor-config", "--target", "gpu01", "--prometheus-url", "https://[::1]:9443/prom")
    assert done.returncode == 0, done.stderr
    assert "(datasource https://[::1]:9443/prom)" in done.stdout
    assert load_yaml(ds_file)["datasources"][0]["url"] == "https://[::1]:9443/prom"


@pytest.mark.parametrize(
    "value",
    ["prometheus:9090", "ftp://p:21", "http://user:secret@p:9090", "http://p:9090/?x=1", "http://p:99999", 'http://p:9090/"x'],
)
def test_bad_prometheus_url(nexa_cli, tmp_path, value):
    import json

    path = write_toml(tmp_path, f"[monitor]\nprometheus_url = {json.dumps(value)}\n")
    with pytest.raises(ConfigError) as info:
        monitor.plan_monitor(load_config(cwd=tmp_path), targets=["gpu01"])
    assert str(info.value).startswith(f"{path}: monitor.prometheus_url: expected a Prometheus URL like 'http://prometheus:9090'")
    path.unlink()
    done = nexa_cli("monitor-config", "--target", "gpu01", "--prometheus-url", value)
    assert done.returncode == 2
    assert done.stderr.startswith("nexa: error: command line: --prometheus-url: expected a Prometheus URL") and done.stderr.count("\n") == 1
    assert not (tmp_path / "monitoring").exists()


# --- every panel's query, run by the real Prometheus -------------------------------------------

DCGM_METRICS = FAKES / "dcgm-exporter.metrics"


def serve_text(address: str, port: int, text: str):
    """A stand-in dcgm-exporter: ``text`` (its real output, replayed) at /metrics."""
    import http.server
    import threading

    body = text.encode()

    class Replay(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer((address, port), Replay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def grafana_expr(expr: str, jobs) -> str:
    """What Grafana sends for a multi-value ``$job`` used in a regex: ``(a|b)``."""
    return expr.replace("$job", "(" + "|".join(jobs) + ")")


def test_every_dashboard_query_returns_series_from_both_exporters(prometheus_server, nexa_cli, tmp_path):
    """127.0.0.1 runs nexa gpu-exporter (stand-in nvidia-smi: GPU 0 held by a process of Slurm
    job 4242, GPU 1 by a process of no job), 127.0.0.2 a stand-in dcgm-exporter (GPU 0 held
    by job 777). Every panel's query, as Grafana would send it, returns series for both."""
    import json

    from tests.services.prometheus import free_port

    require_tool("promtool", "prometheus")
    nexa_port, dcgm_port = free_port(), free_port()
    job_process = subprocess.Popen(["sleep", "120"], env=dict(os.environ, SLURM_JOB_ID="4242"))
    other_process = subprocess.Popen(["sleep", "120"], env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    pids = tmp_path / "pids"
    pids.write_text(f"{job_process.pid} 0\n{other_process.pid} 1\n")
    env = dict(os.environ, PATH=f"{FAKES}{os.pathsep}{os.environ['PATH']}", FAKE_NVIDIA_SMI_PIDS=str(pids))
    exporter = subprocess.Popen(
        [sys.executable, "-m", "nexa_ops", "gpu-exporter", "--listen", "127.0.0.1", "--port", str(nexa_port), "--host-label", "gpu-a"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    dcgm = serve_text("127.0.0.2", dcgm_port, DCGM_METRICS.read_text())
    try:
        out = tmp_path / "prom"
        done = nexa_cli(
            "monitor-config", "--out", str(out), "--exporters", "dcgm,nexa", "--nexa-port", str(nexa_port), "--dcgm-port", str(dcgm_port),
            "--target", "127.0.0.1", "--target", "127.0.0.2", "--scrape-interval", "1s", "--evaluation-interval", "1s",
            "--prometheus-url", prometheus_server.url, "--check",
        )
        assert done.returncode == 0, done.stderr
        prometheus_server.start(out / "prometheus.yml")
        prometheus_server.wait_for('nexa_gpu_job_info{slurm_job_id="4242"}')
        prometheus_server.wait_for("DCGM_FI_DEV_GPU_UTIL", count=2)
        prometheus_server.wait_for('ALERTS{alertname=~"Gpu.*"}')

        board = json.loads((out / "grafana" / "dashboards" / "nexa-gpus.json").read_text())
        jobs_var = next(v for v in board["templating"]["list"] if v["name"] == "job")
        inner = jobs_var["definition"][len("query_result(") : -1]
        found = {re.search(r'slurm_job_id="([^"]+)"', "{" + ",".join(f'{k}="{v}"' for k, v in r["metric"].items()) + "}").group(1)
                 for r in prometheus_server.query(inner)}
        assert found == {"4242", "777"}  # the job variable offers both jobs, never the unmapped process

        results = {}
        for panel in query_panels(board):
            for target in panel["targets"]:
                series = prometheus_server.query(grafana_expr(target["expr"], sorted(found)))
                assert series, f"panel {panel['title']!r} query {target['refId']} returned nothing: {target['expr']}"
                results[(panel["title"], target["refId"])] = series
                nodes = {s["metric"].get("node") for s in series}
                if "{{node}}" in target.get("legendFormat", "") or panel["type"] == "table":
                    assert {"127.0.0.1", "127.0.0.2"} <= nodes, (panel["title"], nodes)

        def value(title, ref="A"):
            (series,) = results[(title, ref)]
            return float(series["value"][1])

        assert value("GPUs") == 5
        assert value("Allocated GPUs") == 3  # nexa GPU 0 and 1 (a process each), dcgm GPU 0 (job 777)
        assert value("Allocated vs idle GPUs", "A") == 3 and value("Allocated vs idle GPUs", "B") == 2
        assert value("Allocated but idle (< 10 %)") == 2  # nexa GPU 1 (0 %), dcgm GPU 0 (5 %)
        per_job = {(s["metric"]["node"], s["metric"]["gpu"], s["metric"]["slurm_job_id"]): float(s["value"][1])
                   for s in results[("GPU utilisation of job $job", "A")]}
        assert per_job == {("127.0.0.1", "0", "4242"): pytest.approx(0.97), ("127.0.0.2", "0", "777"): pytest.approx(0.05)}
        memory = {(s["metric"]["node"], s["metric"]["gpu"]): float(s["value"][1]) for s in results[("GPU memory used", "A")]}
        assert memory[("127.0.0.2", "1")] == 30733 * 1048576 and memory[("127.0.0.1", "0")] == 78643 * 1048576
        holders = {(s["metric"]["node"], s["metric"]["gpu"], s["metric"].get("slurm_job_id", ""))
                   for s in results[("GPUs by Slurm job", "A")]}
        assert holders == {("127.0.0.1", "0", "4242"), ("127.0.0.1", "1", ""), ("127.0.0.2", "0", "777")}
    finally:
        dcgm.shutdown()
        dcgm.server_close()
        exporter.terminate()
        exporter.wait(10)
        prometheus_server.forget(f"127.0.0.1:{nexa_port}", f"127.0.0.2:{dcgm_port}")
        for p in (job_process, other_process):
            p.kill()
            p.wait()
