"""nexa efficiency: sacct's usage text parsed (tools.slurm) and folded into seff-style figures
(pure, on sacct's real output format); on the real Slurm without accounting, what is unknown
and why; the GPU utilisation of a real Slurm task read from the real Prometheus scraping
nexa gpu-exporter (stand-in nvidia-smi listing the task's real process).

The accounting half (a CPU-burning task vs a sleeping one, read back through sacct) is in
tests/test_accounting_slurm.py: it restarts the shared cluster with slurmdbd."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nexa_ops import efficiency as eff
from nexa_ops.config import load_config
from nexa_ops.tools import slurm
from tests.conftest import ROOT, require_tool

FAKES = ROOT / "tests" / "fakes"
MIB = 1024 * 1024

# sacct -n -P -o JobID,JobIDRaw,State,ElapsedRaw,TotalCPU,AllocCPUS,MaxRSS,ReqMem,TimelimitRaw,NNodes,AllocTRES,Start,End -j 57
# (Slurm 22.05): an array of 4, task 0 burnt CPU, task 1 slept, 2-3 still pending. The last
# element to start runs under the array's own id (57_1 is job 57).
SACCT = """\
57_0|58|COMPLETED|31|00:30.412|1||200M|5|1|billing=1,cpu=1,gres/gpu=2,mem=200M,node=1|2024-05-01T12:00:03|2024-05-01T12:00:34
57_0.batch|58.batch|COMPLETED|31|00:30.412|1|10484K|200M||1|cpu=1,gres/gpu=2,mem=200M,node=1|2024-05-01T12:00:03|2024-05-01T12:00:34
57_1|57|COMPLETED|30|00:00.021|1||200M|5|1|billing=1,cpu=1,gres/gpu=2,mem=200M,node=1|2024-05-01T12:00:04|2024-05-01T12:00:34
57_1.batch|57.batch|COMPLETED|30|00:00.021|1|2116K|200M||1|cpu=1,gres/gpu=2,mem=200M,node=1|2024-05-01T12:00:04|2024-05-01T12:00:34
57_[2-3]|57|PENDING|0|00:00:00|1||200M|5|1||Unknown|Unknown
"""

# A multi-node job with two steps, on an older Slurm that marks ReqMem per node (n).
SACCT_OLD = """\
90|90|TIMEOUT|3600|1-02:03:04|64||4000Mn|60|2|cpu=64,gres/gpu=8,mem=8000M,node=2|2024-05-02T08:00:00|2024-05-02T09:00:00
90.batch|90.batch|CANCELLED by 0|3600|00:12.500|32|2.50G|4000Mn||1|cpu=32,mem=4000M,node=1|2024-05-02T08:00:00|2024-05-02T09:00:00
90.0|90.0|CANCELLED by 0|3599|1-02:02:51|64|3.75G|4000Mn||2|cpu=64,gres/gpu=8,mem=8000M,node=2|2024-05-02T08:00:01|2024-05-02T09:00:00
"""


# --- tools.slurm: sacct's usage text ---------------------------------------------------------


def test_parse_sacct_usage_reads_every_field():
    rows = slurm.parse_sacct_usage(SACCT)
    assert [r.job_id for r in rows] == ["57_0", "57_0.batch", "57_1", "57_1.batch", "57_[2-3]"]
    first, batch = rows[0], rows[1]
    assert (first.job_id_raw, first.state, first.elapsed, first.total_cpu, first.alloc_cpus) == ("58", "COMPLETED", 31, 30.412, 1)
    assert (first.max_rss, first.req_mem, first.timelimit, first.nnodes, first.gpus) == (None, 200 * MIB, 300, 1, 2)
    assert (first.start, first.end) == ("2024-05-01T12:00:03", "2024-05-01T12:00:34")
    assert batch.is_step and batch.max_rss == 10484 * 1024 and batch.timelimit is None
    assert rows[4].start is None and rows[4].end is None  # Unknown


@pytest.mark.parametrize(
    "text, seconds",
    [("00:30.412", 30.412), ("59:59.999", 3599.999), ("01:02:03", 3723), ("1-02:03:04", 93784), ("00:00:00", 0), ("", None), ("bad", None)],
)
def test_parse_cpu_time(text, seconds):
    assert slurm.parse_cpu_time(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_parse_sizes_and_requests():
    assert [slurm.parse_size(t) for t in ("1536K", "2.50M", "3.75G", "0", "", "12Mn")] == [
        1536 * 1024, int(2.5 * MIB), int(3.75 * 1024 * MIB), 0, None, None,
    ]
    assert slurm.parse_req_mem("200M", 4, 2) == 200 * MIB  # Slurm >= 21.08: the whole job's
    assert slurm.parse_req_mem("4000Mn", 4, 2) == 8000 * MIB  # per node, x nodes
    assert slurm.parse_req_mem("500Mc", 4, 2) == 2000 * MIB  # per CPU, x CPUs
    assert slurm.parse_req_mem("0n", 4, 2) == 0 and slurm.parse_req_mem("", 4, 2) is None


def test_sacct_without_accounting_says_why(slurm_cluster):
    """The local cluster has no slurmdbd: sacct's own words come back, never rows."""
    rows, why = slurm.sacct_usage(["1"])
    assert rows is None and why == "sacct exited with 1: Slurm accounting storage is disabled"


# --- the figures (pure) ----------------------------------------------------------------------


def test_fold_steps_takes_cpu_and_peak_memory_from_the_steps():
    usage = eff.fold_steps(slurm.parse_sacct_usage(SACCT))
    assert sorted(usage) == ["57_0", "57_1"]  # the pending range is not a task
    burn, nap = usage["57_0"], usage["57_1"]
    assert (burn.slurm_job_id, burn.cpu_seconds, burn.max_rss, burn.gpus) == ("58", pytest.approx(30.412), 10484 * 1024, 2)
    assert (nap.slurm_job_id, nap.cpu_seconds, nap.max_rss) == ("57", pytest.approx(0.021), 2116 * 1024)
    assert burn.end - burn.start == 31
    old = eff.fold_steps(slurm.parse_sacct_usage(SACCT_OLD))["90"]
    assert old.cpu_seconds == pytest.approx(93784)  # the allocation line already sums its steps
    assert old.max_rss == int(3.75 * 1024 * MIB) and old.req_mem == 8000 * MIB and old.nnodes == 2


def test_a_launch_job_is_task_0_but_an_array_bare_id_is_never_an_element():
    plain = eff.fold_steps(slurm.parse_sacct_usage(SACCT_OLD))
    assert eff._find(plain, "90_0", plain=True).slurm_job_id == "90"
    assert eff._find(plain, "90_0", plain=False) is None  # an array's "90" is an element not yet recorded
    assert eff._find(plain, "90_1", plain=True) is None


def test_task_figures_seff_style():
    usage = eff.fold_steps(slurm.parse_sacct_usage(SACCT))
    burn = eff.task_figures(0, "COMPLETED", job_id="57_0", usage=usage["57_0"], gpu_utilization=0.25)
    assert burn.cpu_efficiency == pytest.approx(30.412 / 31)
    assert burn.mem_efficiency == pytest.approx(10484 * 1024 / (200 * MIB))
    assert burn.time_used == pytest.approx(31 / 300)
    assert burn.gpu_hours == pytest.approx(2 * 31 / 3600)
    assert burn.idle_gpu_hours == pytest.approx(2 * 31 / 3600 * 0.75)
    assert burn.slurm_job_id == "58" and burn.unknown == {}
    nap = eff.task_figures(1, "COMPLETED", job_id="57_1", usage=usage["57_1"])
    assert nap.cpu_efficiency == pytest.approx(0.021 / 30) and nap.cpu_efficiency < 0.01
    assert nap.gpu_utilization is None and nap.idle_gpu_hours is None
    assert nap.unknown == {"gpu_utilization": "no data", "idle_gpu_hours": "GPU utilisation unknown"}
    old = eff.task_figures(0, "TIMEOUT", usage=eff.fold_steps(slurm.parse_sacct_usage(SACCT_OLD))["90"])
    assert old.cpu_efficiency == pytest.approx(93784 / (3600 * 64))
    assert old.mem_efficiency == pytest.approx(3.75 * 1024 / 4000, rel=1e-3)  # per node: 8000M over 2 nodes
    assert old.time_used == pytest.approx(1.0)


def test_without_accounting_figures_are_unknown_with_the_reason():
    why = {"cpu_efficiency": "needs Slurm accounting (x)", "mem_efficiency": "needs Slurm accounting (x)"}
    task = eff.task_figures(3, "COMPLETED", elapsed=600.0, time_limit=1200.0, gpus=2, why=why)
    assert (task.cpu_efficiency, task.mem_efficiency, task.time_used, task.gpu_hours) == (None, None, 0.5, pytest.approx(2 / 6))
    assert task.unknown["cpu_efficiency"] == "needs Slurm accounting (x)"
    assert set(task.unknown) == {"cpu_efficiency", "mem_efficiency", "gpu_utilization", "idle_gpu_hours"}
    pending = eff.task_figures(4, "PENDING", gpus=2, why=why)
    assert not pending.started and pending.unknown == {} and pending.gpu_hours is None
    cpu_only = eff.task_figures(5, "COMPLETED", elapsed=60.0, gpus=0, why=why)
    assert cpu_only.gpu_hours == 0 and "gpu_utilization" not in cpu_only.unknown and "idle_gpu_hours" not in cpu_only.unknown
    assert cpu_only.unknown["time_used"] == "no time limit (UNLIMITED, or none in the script)"


def test_run_line_weights_and_idle_cost():
    a = eff.task_figures(0, "COMPLETED", elapsed=3600.0, time_limit=7200.0, gpus=2, gpu_utilization=0.9)
    b = eff.task_figures(1, "COMPLETED", elapsed=1800.0, time_limit=7200.0, gpus=2, gpu_utilization=0.1)
    c = eff.task_figures(2, "FAILED", elapsed=900.0, time_limit=7200.0, gpus=2, why={"gpu_utilization": "Prometheus down"})
    line = eff.run_figures([a, b], rate=2.5)
    assert line["gpu_hours"] == pytest.approx(3.0)
    assert line["gpu_utilization"] == pytest.approx((2 * 0.9 + 1 * 0.1) / 3)  # weighted by GPU-hours
    assert line["idle_gpu_hours"] == pytest.approx(2 * 0.1 + 1 * 0.9)
    assert line["idle_usd"] == pytest.approx(1.1 * 2.5)
    assert line["time_used"] == pytest.approx(0.5)
    assert line["unknown"]["cpu_efficiency"] == "no data"
    partial = eff.run_figures([a, b, c], rate=None, rate_why="no cost manifest runs/manifests/cost_x.json")
    assert partial["counted"]["idle_gpu_hours"] == (2, 3) and partial["idle_gpu_hours"] == pytest.approx(1.1)
    assert partial["idle_usd"] is None and partial["unknown"]["idle_usd"] == "no cost manifest runs/manifests/cost_x.json"
    nothing = eff.run_figures([c], rate=2.5)
    assert nothing["idle_gpu_hours"] is None and nothing["unknown"]["gpu_utilization"] == "Prometheus down"
    assert eff.run_figures([eff.task_figures(0, "PENDING")], rate=1.0)["unknown"]["cpu_efficiency"] == "no task has started"


def test_idle_cost_and_gpu_mean():
    assert eff.idle_cost(10.0, 0.25, 3.0) == (pytest.approx(7.5), pytest.approx(22.5))
    assert eff.idle_cost(10.0, None, 3.0) == (None, None)
    assert eff.idle_cost(10.0, 1.3, None) == (0.0, None)  # never negative
    assert eff.job_gpu_utilization([0.8, 0.6], 2) == pytest.approx(0.7)
    assert eff.job_gpu_utilization([0.8], 4) == pytest.approx(0.2)  # 3 GPUs held without a process: idle
    assert eff.job_gpu_utilization([], 2) is None


def test_gpu_query_joins_through_the_job_map():
    expr, at = eff.gpu_query("58", 1000.0, 1031.2)
    assert at == 1031.2
    assert 'nexa_gpu_job_info{slurm_job_id="58"}' in expr and "[32s:1s]" in expr
    assert 'DCGM_FI_DEV_GPU_UTIL{hpc_job="58"}' in expr
    assert "count_over_time((max by (instance) (nvidia_smi_compute_apps * 0 + 1)" in expr  # points with a process list
    long_expr, _ = eff.gpu_query("7", 0.0, 86400.0)
    assert "[86400s:87s]" in long_expr  # at most ~1000 points


# --- real Slurm, no accounting: what is unknown, and why ---------------------------------------

# Each task writes its pid where the test can see it, then sleeps: --pidfile=P --seconds=S.
PROGRAM = (
    "import os, sys, time; open(sys.argv[1].split('=', 1)[1], 'w').write(str(os.getpid())); "
    "time.sleep(float(sys.argv[2].split('=')[1]))"
)


def project(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "nexa.toml"
    path.write_text(f'[cluster]\nruns_dir = "runs"\n[cost]\ngpu_type = "H100-80GB"\nprovider = "lambda"\n{extra}\n')
    return path


def sweep(tmp_path: Path, name: str, seconds: float, gpus: int = 2) -> Path:
    path = tmp_path / f"{name}.toml"
    pid_file = tmp_path / f"{name}.pid"
    path.write_text(
        f'name = "{name}"\ncommand = [{json.dumps(sys.executable)}, "-c", {json.dumps(PROGRAM)}]\n'
        f'[fixed]\npidfile = {json.dumps(str(pid_file))}\nseconds = {seconds}\n'
        f'[resources]\ngpus_per_node = {gpus}\ntime = "00:05:00"\nestimated_hours = 0.1\n'
    )
    return path


def submit(nexa_cli, tmp_path, cfg, sweep_path):
    out = nexa_cli("sweep", "--config", str(sweep_path), "--project", str(cfg), "--submit")
    assert out.returncode == 0, out.stderr
    (manifest,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    return json.loads(manifest.read_text())


def test_efficiency_without_accounting_names_what_is_unknown(slurm_cluster, tmp_path, nexa_cli):
    cfg = project(tmp_path)
    doc = submit(nexa_cli, tmp_path, cfg, sweep(tmp_path, "noacct", 1.0))
    slurm_cluster.wait(doc["job_ids"], timeout=120)
    out = nexa_cli("efficiency", doc["run_id"], "--project", str(cfg), "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    (task,) = data["tasks"]
    assert task["state"] == "COMPLETED" and task["gpus"] == 2
    assert task["cpu_efficiency"] is None and task["mem_efficiency"] is None
    no_acct = "needs Slurm accounting (sacct exited with 1: Slurm accounting storage is disabled)"
    assert task["unknown"]["cpu_efficiency"] == no_acct and task["unknown"]["mem_efficiency"] == no_acct
    assert 1.0 <= task["elapsed"] < 60 and task["time_used"] == pytest.approx(task["elapsed"] / 300)  # the script's --time
    assert task["gpu_hours"] == pytest.approx(2 * task["elapsed"] / 3600)
    assert task["gpu_utilization"] is None and "set [monitor] prometheus_url in" in task["unknown"]["gpu_utilization"]
    assert data["gpu_hours"] == pytest.approx(task["gpu_hours"]) and data["idle_gpu_hours"] is None
    assert data["rate_usd_per_gpu_hour"] == doc["rate_usd_per_gpu_hour"] and data["idle_usd"] is None
    assert data["unknown"]["cpu_efficiency"] == no_acct
    table = nexa_cli("efficiency", doc["run_id"], "--project", str(cfg))
    assert table.returncode == 0, table.stderr
    assert "CPU efficiency ?" in table.stdout and "Unknown (never guessed):" in table.stdout
    assert f"  CPU efficiency unknown: {no_acct}" in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "yaml"], "nexa: error: --format: expected table or json, got 'yaml'"),
        (["--prometheus-url", "localhost:9090"], "nexa: error: command line: --prometheus-url: expected a Prometheus URL"),
        (["no-such-run"], "nexa: error: no-such-run: not a run folder or a run id in"),
    ],
)
def test_bad_input(nexa_cli, tmp_path, args, message):
    (tmp_path / "runs").mkdir()
    done = nexa_cli("efficiency", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1


# --- real Slurm task, real Prometheus, nexa gpu-exporter -----------------------------------------


def test_gpu_utilization_of_a_real_task_from_prometheus(slurm_cluster, prometheus_server, tmp_path, nexa_cli):
    """A task holding 2 GPUs runs a process; the stand-in nvidia-smi lists it on GPU 0 (97 %)
    once the test has seen it start; GPU 1 never has it. Prometheus scrapes the exporter every
    2 s; efficiency reads the task's mean over its run: at most 97 % / 2 (GPU 1 idle), less
    the seconds before the process appeared. Idle GPU-hours and cost follow."""
    from tests.services.prometheus import free_port

    require_tool("prometheus", "promtool")
    port = free_port()
    pids = tmp_path / "pids"
    pids.write_text("")
    env = dict(os.environ, PATH=f"{FAKES}{os.pathsep}{os.environ['PATH']}", FAKE_NVIDIA_SMI_PIDS=str(pids))
    exporter = subprocess.Popen(
        [sys.executable, "-m", "nexa_ops", "gpu-exporter", "--port", str(port), "--host-label", "n1", "--cache-seconds", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        prom = tmp_path / "prom"
        done = nexa_cli(
            "monitor-config", "--out", str(prom), "--exporters", "nexa", "--nexa-port", str(port), "--target", "127.0.0.1",
            "--scrape-interval", "2s", "--evaluation-interval", "2s",  # 1.5 s for nvidia-smi, even on a busy machine
        )
        assert done.returncode == 0, done.stderr
        prometheus_server.start(prom / "prometheus.yml")
        prometheus_server.wait_for(f'nvidia_smi_gpus{{instance="127.0.0.1:{port}"}}')
        cfg = project(tmp_path, f'[monitor]\nprometheus_url = "{prometheus_server.url}"\n')
        doc = submit(nexa_cli, tmp_path, cfg, sweep(tmp_path, "gpuuse", 20.0))
        pid_file = tmp_path / "gpuuse.pid"
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline, f"task did not start: {slurm_cluster.active(doc['job_ids'])}"
            time.sleep(0.1)
        pids.write_text(f"{pid_file.read_text().strip()} 0\n")  # the task's process, on GPU 0
        squeue = subprocess.run(["squeue", "-h", "-r", "-j", doc["job_ids"][0], "-o", "%A"], capture_output=True, text=True).stdout.split()
        prometheus_server.wait_for(f'nexa_gpu_job_info{{slurm_job_id="{squeue[0]}"}}')
        slurm_cluster.wait(doc["job_ids"], timeout=120)
        time.sleep(3)  # the last scrapes of the task's window

        out = nexa_cli("efficiency", doc["run_id"], "--project", str(cfg), "--format", "json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        (task,) = data["tasks"]
        assert task["slurm_job_id"] == squeue[0]  # found through scontrol: no accounting here
        util = task["gpu_utilization"]
        assert util is not None, task["unknown"]
        assert 0.25 < util <= 0.97 / 2 + 1e-9, util
        assert task["idle_gpu_hours"] == pytest.approx(task["gpu_hours"] * (1 - util))
        assert data["gpu_utilization"] == pytest.approx(util)
        assert data["idle_gpu_hours"] == pytest.approx(task["idle_gpu_hours"])
        assert data["idle_usd"] == pytest.approx(task["idle_gpu_hours"] * doc["rate_usd_per_gpu_hour"])
        # the same for cost.report, through the function it will call
        idle = eff.idle_gpu(tmp_path / "runs" / doc["run_id"], config=load_config(cfg))
        assert idle.idle_gpu_hours == pytest.approx(data["idle_gpu_hours"], rel=0.05) and idle.why_unknown == ""
        # Prometheus down: unknown, with the reason, never a guess
        out = nexa_cli("efficiency", doc["run_id"], "--project", str(cfg), "--format", "json", "--prometheus-url", f"http://127.0.0.1:{free_port()}")
        data = json.loads(out.stdout)
        assert data["gpu_utilization"] is None and data["idle_usd"] is None
        assert data["unknown"]["gpu_utilization"].startswith("cannot reach Prometheus at http://127.0.0.1:")
    finally:
        exporter.terminate()
        exporter.wait(10)
        prometheus_server.forget(f"127.0.0.1:{port}")
