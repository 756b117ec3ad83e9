"""Slurm with job accounting, for real (slurmdbd on MariaDB): ``cost.reconcile`` bills what
sacct recorded (elapsed x allocated GPUs), and ``status`` still knows a task that never ran
after slurmctld has forgotten its job, where the run folder has no record of it."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nexa_ops import runs
from tests.test_cost_slurm import project, resubmitted_run, sweep_file

pytestmark = pytest.mark.slurm

FIELDS = "JobID,State,ElapsedRaw,ExitCode,AllocTRES"


def accounted(job, count, timeout=60.0, every_attempt=False):
    """sacct's rows for the job's elements once all ``count`` have finished there: slurmdbd
    records asynchronously, a few seconds behind the queue. ``every_attempt``: with -D, a
    row per attempt of a requeued element."""
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        argv = ["sacct", "-n", "-P", "-X", *(["-D"] if every_attempt else []), "-o", FIELDS, "-j", job]
        out = subprocess.run(argv, capture_output=True, text=True)
        rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith(f"{job}_")]
        if len(rows) == count and all(r[1] not in ("PENDING", "RUNNING", "COMPLETING") for r in rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"sacct did not record the {count} elements of job {job} within {timeout} s: {rows}")


def forgotten(job, timeout=90.0):
    """Wait until slurmctld has purged the job (MinJobAge=2 here; default 300 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["scontrol", "show", "job", job], capture_output=True).returncode != 0:
            return
        time.sleep(1)
    raise AssertionError(f"slurmctld still knows job {job} after {timeout} s")


def test_reconcile_bills_what_accounting_recorded(slurm_accounting, tmp_path, nexa_cli):
    cfg = project(tmp_path)
    sweep = sweep_file(tmp_path, "billed", [0, 0, 3], resources='gpus_per_node = 2\ntime = "00:05:00"\nestimated_hours = 0.5')
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit", "--wait")
    assert out.returncode == 1, out.stdout + out.stderr  # one task exits 3
    (manifest,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    doc = json.loads(manifest.read_text())
    (job,) = doc["job_ids"]
    rows = accounted(job, 3)
    assert all("gres/gpu=2" in r[4] for r in rows)  # the fake GPUs, as accounting saw them
    gpu_seconds = sum(int(r[2]) * 2 for r in rows)

    out = nexa_cli("cost.reconcile", "--project", str(cfg), "--run", doc["run_id"])
    assert out.returncode == 0, out.stderr
    doc = json.loads(manifest.read_text())
    assert (doc["actual_source"], doc["status"], doc["tasks_ok"], doc["tasks_failed"]) == ("sacct", "failed", 2, 1)
    assert doc["actual_gpu_hours"] == pytest.approx(gpu_seconds / 3600, abs=1e-6)
    assert doc["actual_usd"] == pytest.approx(gpu_seconds / 3600 * doc["rate_usd_per_gpu_hour"], abs=1e-6)

    out = nexa_cli("cost.reconcile", "--project", str(cfg), "--run", doc["run_id"], "--no-sacct")
    assert out.returncode == 0, out.stderr
    assert json.loads(manifest.read_text())["actual_source"] == "worker"


def test_reconcile_bills_both_attempts_of_a_resubmitted_task(slurm_accounting, tmp_path, nexa_cli):
    cfg, manifest, _ = resubmitted_run(tmp_path, nexa_cli)
    doc = json.loads(manifest.read_text())
    first, second = doc["job_ids"]
    rows = accounted(first, 2) + accounted(second, 1)
    assert [r[1] for r in rows] == ["COMPLETED", "FAILED", "COMPLETED"]
    gpu_seconds = sum(int(r[2]) * int(r[4].split("gres/gpu=")[1].split(",")[0]) for r in rows)
    out = nexa_cli("cost.reconcile", "--project", str(cfg), "--run", doc["run_id"])
    assert out.returncode == 0, out.stderr
    doc = json.loads(manifest.read_text())
    assert (doc["actual_source"], doc["status"], doc["tasks_ok"], doc["tasks_failed"]) == ("sacct", "finished", 2, 0)
    assert doc["actual_gpu_hours"] == pytest.approx(gpu_seconds / 3600, abs=1e-6)


def test_a_task_requeued_by_slurm_is_billed_for_both_attempts(slurm_accounting, tmp_path, nexa_cli):
    """`scontrol requeue` (as preemption does): the task's first attempt ends with TERM, it
    runs again in the same job; sacct -D lists both attempts, and the run folder keeps the
    first one's records under tasks/attempts/."""
    cfg = project(tmp_path)
    sweep = tmp_path / "requeued.toml"
    sweep.write_text(
        f'name = "requeued"\ncommand = [{json.dumps(sys.executable)}, "-c", "import time; time.sleep(4)"]\n'
        '[grid]\nx = [0, 1]\n[resources]\ngpus_per_node = 1\ntime = "00:05:00"\nrequeue = true\nmax_requeues = 1\n'
    )
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit")
    assert out.returncode == 0, out.stderr
    (manifest,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    doc = json.loads(manifest.read_text())
    (job,) = doc["job_ids"]
    run_dir = tmp_path / "runs" / doc["run_id"]
    deadline = time.monotonic() + 60
    while not (run_dir / "tasks" / "0.start.json").exists():
        assert time.monotonic() < deadline, "task 0 did not start"
        time.sleep(0.2)
    time.sleep(1)
    subprocess.run(["scontrol", "requeue", f"{job}_0"], check=True)
    time.sleep(1)  # Slurm holds a requeued task ~2 minutes: release it (not "now": see test_track_slurm)
    subprocess.run(["scontrol", "update", f"JobId={job}_0", "StartTime=now+3"], check=True)
    slurm_accounting.wait([job], timeout=90)

    rows = accounted(job, 3, every_attempt=True)
    assert sorted(r[1] for r in rows) == ["COMPLETED", "COMPLETED", "REQUEUED"]
    gpu_seconds = sum(int(r[2]) for r in rows)  # one GPU each
    out = nexa_cli("cost.reconcile", "--project", str(cfg), "--run", doc["run_id"])
    assert out.returncode == 0, out.stderr
    doc = json.loads(manifest.read_text())
    assert (doc["actual_source"], doc["status"], doc["tasks_ok"], doc["tasks_failed"]) == ("sacct", "finished", 2, 0)
    assert doc["actual_gpu_hours"] == pytest.approx(gpu_seconds / 3600, abs=1e-6)

    (first,) = runs.attempt_records(run_dir)
    last = runs.task_records(run_dir)
    assert (first["restart_count"], first["signals"], last[0]["restart_count"]) == (0, "TERM", 1)
    seconds = sum(r["end"] - r["start"] for r in [first, *last.values()])
    out = nexa_cli("cost.reconcile", "--project", str(cfg), "--run", doc["run_id"], "--no-sacct")
    assert out.returncode == 0, out.stderr
    doc = json.loads(manifest.read_text())
    assert (doc["actual_source"], doc["status"]) == ("worker", "finished")
    assert doc["actual_gpu_hours"] == pytest.approx(seconds / 3600, abs=1e-6)


def test_status_knows_a_task_killed_hard_after_slurm_forgot_it(slurm_accounting, tmp_path, nexa_cli):
    """Task 1 and its batch shell are killed with SIGKILL, as the OOM killer would: the run
    folder has its start but no end. Once slurmctld purges the job, only accounting knows
    what became of it; without it, status could only say UNKNOWN."""
    pids = tmp_path / "pids.1"  # task i writes pids.<i>: its parent (the batch shell), itself
    program = (
        f"import os, sys, time; path = {str(tmp_path / 'pids.')!r} + os.environ['NEXA_TASK_INDEX']; "
        "open(path + '.tmp', 'w').write('%d %d' % (os.getppid(), os.getpid())); os.replace(path + '.tmp', path); "
        "time.sleep(float(sys.argv[1].split('=')[1]))"
    )
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        f'name = "acct"\ncommand = [{json.dumps(sys.executable)}, "-c", {json.dumps(program)}]\n'
        '[grid]\nseconds = [0, 120]\n[resources]\ntime = "00:05:00"\n'
    )
    out = nexa_cli("sweep", "--config", str(sweep), "--submit")
    assert out.returncode == 0, out.stderr
    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if p.name != "manifests")
    (job,) = json.loads((run_dir / "manifest.json").read_text())["job_ids"]
    deadline = time.monotonic() + 60
    while not pids.exists():
        assert time.monotonic() < deadline, "task 1 did not start"
        time.sleep(0.2)
    for pid in map(int, pids.read_text().split()):
        os.kill(pid, signal.SIGKILL)
    slurm_accounting.wait([job], timeout=60)
    rows = accounted(job, 2)
    forgotten(job)
    assert not (run_dir / "tasks" / "1.end.json").exists()

    out = nexa_cli("status", "--json")
    assert out.returncode == 0, out.stderr
    tasks = {t["index"]: t for t in json.loads(out.stdout)["tasks"]}
    assert (tasks[0]["state"], tasks[0]["exit_code"]) == ("COMPLETED", 0)
    assert (tasks[1]["state"], tasks[1]["source"]) == (rows[1][1], "sacct") == ("FAILED", "sacct")
    assert tasks[1]["exit_code"] == 128 + 9  # sacct's "0:9": killed by signal 9


def test_efficiency_tells_a_cpu_burning_task_from_a_sleeping_one(slurm_accounting, tmp_path, nexa_cli):
    """nexa efficiency from sacct (slurmdbd, jobacct_gather/linux): a task that spins for 6 s
    has a high CPU efficiency, one that sleeps 6 s a near-zero one; memory against the 200M
    request and time against the 5-minute limit are known; GPU utilisation is unknown (no
    Prometheus configured) and says why."""
    cfg = project(tmp_path)
    program = (
        "import sys, time\nend = time.time() + 6\n"
        "if sys.argv[1] == '--mode=burn':\n    while time.time() < end:\n        pass\nelse:\n    time.sleep(6)\n"
    )
    sweep = tmp_path / "eff.toml"
    sweep.write_text(
        f'name = "eff"\ncommand = [{json.dumps(sys.executable)}, "-c", {json.dumps(program)}]\n'
        '[grid]\nmode = ["burn", "sleep"]\n'
        '[resources]\ngpus_per_node = 1\ncpus_per_task = 1\nmem = "200M"\ntime = "00:05:00"\n'
    )
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    (manifest,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    doc = json.loads(manifest.read_text())
    (job,) = doc["job_ids"]
    rows = accounted(job, 2)
    deadline = time.monotonic() + 60  # the .batch steps reach slurmdbd after the elements
    while True:
        out = nexa_cli("efficiency", doc["run_id"], "--project", str(cfg), "--format", "json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        tasks = {t["index"]: t for t in data["tasks"]}
        if all(t["cpu_efficiency"] is not None and t["mem_efficiency"] is not None for t in tasks.values()):
            break
        assert time.monotonic() < deadline, data
        time.sleep(1)
    burn, nap = tasks[0], tasks[1]
    assert burn["cpu_efficiency"] > 0.3, burn  # one CPU spun for most of the run (a busy machine gives less)
    assert nap["cpu_efficiency"] < 0.05, nap
    assert burn["cpu_efficiency"] > 10 * nap["cpu_efficiency"]
    raw = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,JobIDRaw", "-j", job], capture_output=True, text=True).stdout
    own = dict(line.split("|") for line in raw.splitlines() if line.startswith(f"{job}_"))
    for index, task in tasks.items():
        assert task["job_id"] == f"{job}_{index}" and task["slurm_job_id"] == own[task["job_id"]]
        assert task["req_mem_bytes"] == 200 * 1024 * 1024 and 0 < task["mem_efficiency"] < 1
        assert task["time_used"] == pytest.approx(task["elapsed"] / 300)
        assert task["gpus"] == 1 and task["gpu_hours"] == pytest.approx(task["elapsed"] / 3600)
        assert task["gpu_utilization"] is None and "prometheus_url" in task["unknown"]["gpu_utilization"]
    assert [r[1] for r in rows] == ["COMPLETED", "COMPLETED"]
    total_cpu = burn["cpu_seconds"] + nap["cpu_seconds"]
    assert data["cpu_efficiency"] == pytest.approx(total_cpu / (burn["elapsed"] * burn["cpus"] + nap["elapsed"] * nap["cpus"]))
    table = nexa_cli("efficiency", doc["run_id"], "--project", str(cfg))
    assert table.returncode == 0 and f"{job}_0" in table.stdout and "GPU utilisation unknown: set [monitor] prometheus_url" in table.stdout
