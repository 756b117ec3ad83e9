"""Cost on the real local Slurm: a submitted sweep gets a manifest, its tasks really run, and
``cost.report`` shows actual figures computed from what ran; ``--max-cost`` submits nothing."""

import json
import secrets
import subprocess
import sys
import time

import pytest

from nexa_ops import runs

pytestmark = pytest.mark.slurm

# Each task sleeps a little, then exits with its `code` parameter.
PROGRAM = "import sys, time; time.sleep(1.5); sys.exit(int(sys.argv[1].split('=')[1]))"


def project(tmp_path, extra=""):
    path = tmp_path / "nexa.toml"
    path.write_text(f'[cluster]\nruns_dir = "runs"\n[cost]\ngpu_type = "H100-80GB"\nprovider = "lambda"\n{extra}\n')
    return path


def sweep_file(tmp_path, name, codes, resources='gpus_per_node = 1\ntime = "00:05:00"\nestimated_hours = 0.5'):
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\ncampaign = "e2e-cost"\n'
        f'command = [{json.dumps(sys.executable)}, "-c", {json.dumps(PROGRAM)}]\n'
        f"[grid]\ncode = {json.dumps(codes)}\n[resources]\n{resources}\n"
    )
    return path


def known_to_slurm(name):
    """Every job Slurm still knows (queued, running, or finished within MinJobAge) by name."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"JobName={name} " in line]


def test_submitted_sweep_is_costed_from_what_really_ran(slurm_cluster, tmp_path, nexa_cli):
    cfg = project(tmp_path)
    sweep = sweep_file(tmp_path, "costed", [0, 0, 0, 3])
    started = time.time()
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit")
    assert out.returncode == 0, out.stderr
    # the estimate is printed before submitting: 4 tasks x 1 GPU x 0.5 h x 3.29 (Lambda 1x H100 PCIe)
    assert "4 task(s) x 1 node(s) x 1 GPU(s) x 0.5 h (estimated_hours) = 2.00 GPU-hours" in out.stdout
    assert "Estimated cost: $6.58 (lambda gpu_1x_h100_pcie" in out.stdout
    assert out.stdout.index("Estimated cost") < out.stdout.index("Submitted job array")

    (manifest,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    doc = json.loads(manifest.read_text())
    run_dir = tmp_path / "runs" / doc["run_id"]
    run_manifest = runs.read_manifest(run_dir)
    assert doc["job_ids"] == run_manifest["job_ids"] and len(doc["job_ids"]) == 1
    assert (doc["status"], doc["campaign"], doc["kind"], doc["tasks"], doc["backend"]) == ("submitted", "e2e-cost", "sweep", 4, "slurm")
    assert (doc["gpu_type"], doc["provider"], doc["rate_usd_per_gpu_hour"]) == ("H100-80GB", "lambda", 3.29)
    assert doc["estimated_usd"] == pytest.approx(6.58) and doc["actual_usd"] is None

    slurm_cluster.wait(doc["job_ids"], timeout=120)
    elapsed = time.time() - started

    out = nexa_cli("cost.report", "--project", str(cfg), "--by", "run", "--format", "json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["rows"]
    assert (row["run_id"], row["status"], row["tasks"], row["tasks_done"]) == (doc["run_id"], "failed", 4, 4)

    # actual = the real task durations from the worker's records (no accounting here)
    records = runs.task_records(run_dir)
    assert sorted(records) == [0, 1, 2, 3] and all("start" in r and "end" in r for r in records.values())
    seconds = sum(max(0.0, r["end"] - r["start"]) for r in records.values())
    assert 4 * 0.5 <= seconds <= 4 * elapsed  # each task slept 1.5 s; all ran within the test
    assert row["actual_gpu_hours"] == pytest.approx(seconds / 3600, abs=1e-6)
    assert row["actual_usd"] == pytest.approx(seconds / 3600 * 3.29, abs=1e-6)
    assert row["estimated_usd"] == pytest.approx(6.58)

    doc = json.loads(manifest.read_text())  # the report wrote the reconciled figures back
    assert (doc["status"], doc["tasks_ok"], doc["tasks_failed"], doc["actual_source"]) == ("failed", 3, 1, "worker")
    assert doc["reconciled_at"] and doc["actual_usd"] == row["actual_usd"]

    out = nexa_cli("cost.report", "--project", str(cfg), "--campaign", "e2e-cost", "--format", "markdown", "--output", "report.md")
    assert out.returncode == 0 and out.stdout == ""
    text = (tmp_path / "report.md").read_text()
    assert "| e2e-cost" in text and "6.58" in text


def test_chunked_submission_records_every_chunk(slurm_cluster, tmp_path, nexa_cli):
    cfg = project(tmp_path)
    count = slurm_cluster.max_array_size + 3
    sweep = sweep_file(tmp_path, "chunked", [0] * count, 'gpus_per_node = 0\ncpus_per_task = 1\ntime = "00:05:00"')
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit")
    assert out.returncode == 0, out.stderr
    assert "Estimated cost: $0.00 (no GPUs requested)" in out.stdout
    (manifest,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    doc = json.loads(manifest.read_text())
    assert len(doc["job_ids"]) == 2 and [c["offset"] for c in doc["chunks"]] == [0, slurm_cluster.max_array_size]
    slurm_cluster.wait(doc["job_ids"], timeout=180)
    out = nexa_cli("cost.reconcile", "--project", str(cfg))
    assert out.returncode == 0, out.stderr
    doc = json.loads(manifest.read_text())
    assert (doc["status"], doc["tasks_ok"], doc["actual_usd"]) == ("finished", count, 0.0)


@pytest.mark.parametrize(
    "args, extra, message",
    [
        (["--max-cost", "5"], "", r"estimated cost $6.58 is above --max-cost $5.00"),
        ([], "max_cost = 1.0", r"estimated cost $6.58 is above --max-cost $1.00"),
    ],
)
def test_max_cost_refusal_leaves_nothing_submitted(slurm_cluster, tmp_path, nexa_cli, args, extra, message):
    cfg = project(tmp_path, extra)
    name = f"refused{secrets.token_hex(3)}"
    sweep = sweep_file(tmp_path, name, [0, 0, 0, 0])
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit", *args)
    assert out.returncode == 3, out.stderr
    assert out.stderr.startswith("nexa: error: ") and message in out.stderr and "nothing submitted" in out.stderr
    assert "Traceback" not in out.stderr
    assert "Estimated cost: $6.58" in out.stdout  # the estimate was shown, then refused
    assert known_to_slurm(name) == []
    assert not (tmp_path / "runs" / "manifests").exists()
    assert not list((tmp_path / "runs").glob("*/manifest.json"))


def test_command_line_max_cost_overrides_the_config_default(slurm_cluster, tmp_path, nexa_cli):
    cfg = project(tmp_path, "max_cost = 1.0")
    name = f"allowed{secrets.token_hex(3)}"
    sweep = sweep_file(tmp_path, name, [0])
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit", "--max-cost", "2")
    assert out.returncode == 0, out.stderr
    (manifest,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    job_ids = json.loads(manifest.read_text())["job_ids"]
    assert known_to_slurm(name)
    slurm_cluster.wait(job_ids)


def test_unpriced_sweep_with_max_cost_is_refused(slurm_cluster, tmp_path, nexa_cli):
    cfg = tmp_path / "nexa.toml"
    cfg.write_text('[cluster]\nruns_dir = "runs"\n')  # no GPU type anywhere
    name = f"unpriced{secrets.token_hex(3)}"
    sweep = sweep_file(tmp_path, name, [0])
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit", "--max-cost", "100")
    assert out.returncode == 3 and "cannot check --max-cost $100.00: no GPU type" in out.stderr
    assert known_to_slurm(name) == []


def submit_and_wait_for_start(tmp_path, nexa_cli, cfg, name):
    sweep = sweep_file(tmp_path, name, [0, 0], 'gpus_per_node = 1\ntime = "00:05:00"')
    sweep.write_text(sweep.read_text().replace("time.sleep(1.5)", "time.sleep(60)"))
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit")
    assert out.returncode == 0, out.stderr
    (manifest,) = [p for p in (tmp_path / "runs" / "manifests").glob("cost_*.json") if json.loads(p.read_text())["name"] == name]
    doc = json.loads(manifest.read_text())
    run_dir = tmp_path / "runs" / doc["run_id"]
    deadline = time.monotonic() + 60
    while len(runs.task_records(run_dir)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    return doc, run_dir


def test_cancelled_tasks_are_billed_and_lost_ones_reported_incomplete(slurm_cluster, tmp_path, nexa_cli):
    """scancel (TERM): the script still records each task's end, so the run is "failed" and
    billed for the time it ran. A task whose end was never recorded (a node that died) makes
    the run "incomplete" once its jobs have left the queue; nothing unrecorded is billed."""
    cfg = project(tmp_path)
    doc, run_dir = submit_and_wait_for_start(tmp_path, nexa_cli, cfg, "cancelled")
    time.sleep(2.0)
    out = nexa_cli("cost.reconcile", "--project", str(cfg))
    assert out.returncode == 0 and " running " in out.stdout and " 0/2 " in out.stdout, out.stdout
    subprocess.run(["scancel", *doc["job_ids"]], check=True)
    slurm_cluster.wait(doc["job_ids"])
    out = nexa_cli("cost.report", "--project", str(cfg), "--by", "run", "--format", "json")
    (row,) = json.loads(out.stdout)["rows"]
    records = runs.task_records(run_dir)
    seconds = sum(r["end"] - r["start"] for r in records.values())
    assert (row["status"], row["tasks_done"]) == ("failed", 2) and seconds >= 2
    assert all(r["exit_code"] != 0 for r in records.values())
    assert row["actual_gpu_hours"] == pytest.approx(seconds / 3600, abs=1e-6)

    (run_dir / "tasks" / "1.end.json").unlink()  # as if the node died before writing it
    out = nexa_cli("cost.reconcile", "--project", str(cfg), "--run", doc["run_id"])
    assert out.returncode == 0 and " incomplete " in out.stdout and " 1/2 " in out.stdout, out.stdout
    first = records[0]["end"] - records[0]["start"]
    assert json.loads(next((tmp_path / "runs" / "manifests").glob("cost_*.json")).read_text())["actual_gpu_hours"] == pytest.approx(
        first / 3600, abs=1e-6
    )


# Fails once with its `code` (when non-zero), succeeds when run again: a task to resubmit.
RETRIED = (
    "import os, sys, time; time.sleep(1.5); code = int(sys.argv[1].split('=')[1]); "
    "mark = os.path.join(os.environ['NEXA_RUN_DIR'], 'tried.' + os.environ['NEXA_TASK_INDEX']); "
    "first = not os.path.exists(mark); open(mark, 'w').close(); sys.exit(code if first else 0)"
)


def resubmitted_run(tmp_path, nexa_cli):
    """A 2-task sweep (1 GPU per task) whose task 1 fails, then succeeds on `nexa resubmit
    --failed`; returns the project file, the cost manifest's path and the first attempt's
    records (which the second attempt replaces)."""
    cfg = project(tmp_path)
    sweep = tmp_path / "retried.toml"
    sweep.write_text(
        f'name = "retried"\ncampaign = "e2e-cost"\ncommand = [{json.dumps(sys.executable)}, "-c", {json.dumps(RETRIED)}]\n'
        '[grid]\ncode = [0, 4]\n[resources]\ngpus_per_node = 1\ntime = "00:05:00"\nestimated_hours = 0.5\n'
    )
    out = nexa_cli("sweep", "--config", str(sweep), "--project", str(cfg), "--submit", "--wait")
    assert out.returncode == 1, out.stdout + out.stderr
    (manifest,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    run_id = json.loads(manifest.read_text())["run_id"]
    first = runs.task_records(tmp_path / "runs" / run_id)
    out = nexa_cli("cost.reconcile", "--project", str(cfg))
    assert out.returncode == 0 and json.loads(manifest.read_text())["status"] == "failed", out.stdout + out.stderr
    out = nexa_cli("resubmit", "--project", str(cfg), "--failed", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    return cfg, manifest, first


def test_resubmitted_tasks_are_billed_for_both_attempts(slurm_cluster, tmp_path, nexa_cli):
    cfg, manifest, first = resubmitted_run(tmp_path, nexa_cli)
    doc = json.loads(manifest.read_text())
    assert len(doc["job_ids"]) == 2 and doc["status"] == "submitted"  # reopened by the resubmission
    out = nexa_cli("cost.report", "--project", str(cfg), "--by", "run", "--format", "json")  # no --all
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["rows"]
    assert (row["status"], row["tasks_done"]) == ("finished", 2)
    now = runs.task_records(tmp_path / "runs" / doc["run_id"])
    assert now[1]["start"] > first[1]["end"]  # the second attempt replaced the first one's records
    seconds = sum(r["end"] - r["start"] for r in now.values()) + (first[1]["end"] - first[1]["start"])
    assert row["actual_gpu_hours"] == pytest.approx(seconds / 3600, abs=1e-6)
    doc = json.loads(manifest.read_text())
    assert (doc["tasks_ok"], doc["tasks_failed"], doc["actual_source"]) == (2, 0, "worker")
