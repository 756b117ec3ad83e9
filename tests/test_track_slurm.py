"""Following runs on the real local Slurm: truthful states (completed, failed, timed out,
cancelled, requeued), wait's exit code, resubmission of only the failed tasks, logs.

Two sweeps with a 1-minute limit (Slurm's minimum) are submitted once for the module, so
their clocks run while the quicker tests go; the whole file takes about 1.5 minutes.
"""

import json
import subprocess
import sys
import time

import pytest

from nexa_ops import launch_slurm_sweep, runs, track
from nexa_ops.config import load_config
from nexa_ops.runs import attempt_records, task_records

pytestmark = pytest.mark.slurm

# --mode=ok: exit 0. fail: exit 3 on its first attempt only. slow: on its first attempt
# note the warning signal (checkpoint) and keep sleeping past the limit; later attempts
# exit 0. sleep: sleep until cancelled. Every attempt is counted in <dir>/<task>.attempts.
PROGRAM = """
import os, signal, sys, time
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:])
task = os.environ["NEXA_TASK_INDEX"]
counter = os.path.join(opts["dir"], task + ".attempts")
with open(counter, "a") as fh:
    fh.write("x")
attempt = len(open(counter).read())
restart = os.environ.get("SLURM_RESTART_COUNT", "0")
print(f"task {task} mode {opts['mode']} attempt {attempt} restart {restart}", flush=True)
def warned(sig, frame):
    open(os.path.join(opts["dir"], task + ".warned"), "a").write(restart)
    print(f"task {task}: warning signal {sig}, checkpointing", flush=True)
signal.signal(signal.SIGUSR1, warned)
mode = opts["mode"]
if mode == "fail" and attempt == 1:
    print("failing on purpose", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "slow" and attempt == 1 or mode == "sleep":
    while True:
        time.sleep(1)
print(f"task {task} done", flush=True)
"""


def write_sweep(folder, name, grid, fixed, resources):
    lines = [f'name = "{name}"', f"command = [{json.dumps(sys.executable)}, {json.dumps(str(folder / 'prog.py'))}]", "[grid]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in grid.items()]
    lines += ["[fixed]"] + [f"{k} = {json.dumps(v)}" for k, v in fixed.items()]
    lines += ["[resources]", "cpus_per_task = 1"] + resources
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Sweep:
    def __init__(self, root, name, grid, resources, fixed=None):
        self.dir = root / name
        self.dir.mkdir()
        (self.dir / "prog.py").write_text(PROGRAM)
        (self.dir / "marks").mkdir()
        self.config = load_config(cwd=self.dir)
        path = write_sweep(self.dir, name, grid, dict(fixed or {}, dir=str(self.dir / "marks")), resources)
        self.artifacts = launch_slurm_sweep(path, submit=True, out=self.dir / "run", config=self.config)
        self.run = self.dir / "run"

    def status(self):
        return track.status(str(self.run), config=self.config)

    def attempts(self, index):
        path = self.dir / "marks" / f"{index}.attempts"
        return len(path.read_text()) if path.exists() else 0


@pytest.fixture(scope="module")
def limited(slurm_cluster, tmp_path_factory):
    """Started first: ok / fail-once / slow-past-the-limit, 1 minute, no requeue."""
    return Sweep(tmp_path_factory.mktemp("limited"), "limited", {"mode": ["ok", "fail", "slow"]}, ['time = "1"'])


@pytest.fixture(scope="module")
def requeued(slurm_cluster, tmp_path_factory):
    """A slow task with requeue = true: warned, requeued once, then done."""
    resources = ['time = "1"', "requeue = true", "max_requeues = 1", "signal_seconds = 50"]
    return Sweep(tmp_path_factory.mktemp("requeued"), "requeued", {"mode": ["slow"]}, resources)


def poll(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_status_of_a_fresh_run(limited, requeued, nexa_cli):
    out = nexa_cli("status", str(limited.run), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [t["index"] for t in doc["tasks"]] == [0, 1, 2]
    assert all("state" in t and "exit_code" in t for t in doc["tasks"])
    assert doc["job_ids"] == limited.artifacts.job_ids and doc["keys"] == ["mode"]
    # the slow task is running (or about to) and Slurm's word is used for it
    st = poll(lambda: (lambda s: s if s.tasks[2].state == "RUNNING" else None)(limited.status()), 30, "task 2 running")
    assert st.tasks[2].source == "squeue" and st.tasks[2].node in ("n1", "n2")
    text = nexa_cli("status", str(limited.run)).stdout
    assert "RUNNING" in text and "pending" in text and "log" in text


def test_sweep_submit_wait_exits_nonzero_on_failure(slurm_cluster, tmp_path, nexa_cli):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "marks").mkdir()
    path = write_sweep(tmp_path, "quick", {"mode": ["ok", "fail"]}, {"dir": str(tmp_path / "marks")}, ['time = "5"'])
    out = nexa_cli("sweep", "--config", str(path), "--submit", "--wait", "--out", str(tmp_path / "run"))
    assert out.returncode == 1, out.stderr
    assert "1 of 2 task(s) failed" in out.stderr and "nexa resubmit" in out.stderr
    assert "1 done, 1 failed" in out.stderr  # the plain progress line (not a TTY)
    st = track.status(str(tmp_path / "run"))
    assert [(t.state, t.exit_code) for t in st.tasks] == [("COMPLETED", 0), ("FAILED", 3)]
    # the second attempt succeeds: resubmit and wait in one go
    out = nexa_cli("resubmit", str(tmp_path / "run"), "--failed", "--wait")
    assert out.returncode == 0, out.stderr
    assert "resubmitted 1 task(s) [1]" in out.stdout and "all 2 task(s) completed" in out.stdout


def test_cancel_one_task_then_the_whole_array(slurm_cluster, tmp_path, nexa_cli):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "marks").mkdir()
    path = write_sweep(tmp_path, "sleepers", {"n": [0, 1, 2]}, {"mode": "sleep", "dir": str(tmp_path / "marks")}, ['time = "5"'])
    cfg = load_config(cwd=tmp_path)
    artifacts = launch_slurm_sweep(path, submit=True, out=tmp_path / "run", config=cfg)
    run = str(tmp_path / "run")
    poll(lambda: all(t.state == "RUNNING" for t in track.status(run, config=cfg).tasks), 30, "all tasks running")
    out = nexa_cli("cancel", run, "--task", "1")
    assert out.returncode == 0, out.stderr
    assert f"cancelled {artifacts.job_ids[0]}_1" in out.stdout
    st = poll(lambda: (lambda s: s if s.tasks[1].state == "CANCELLED" else None)(track.status(run, config=cfg)), 30, "task 1 cancelled")
    assert [t.state for t in st.tasks] == ["RUNNING", "CANCELLED", "RUNNING"]
    assert nexa_cli("cancel", run, "--dry-run").stdout.strip() == f"scancel {artifacts.job_ids[0]}"
    out = nexa_cli("cancel", run)
    assert out.returncode == 0, out.stderr
    slurm_cluster.wait(artifacts.job_ids, timeout=60)
    st = track.status(run, config=cfg)
    assert {t.state for t in st.tasks} == {"CANCELLED"} and st.finished
    assert runs.record_state(task_records(tmp_path / "run")[0]) == "CANCELLED"  # TERM without a warning
    out = nexa_cli("cancel", run, "--task", "2")  # already ended: not an error
    assert out.returncode == 0 and "already ended" in out.stdout
    out = nexa_cli("wait", run)
    assert out.returncode == 1 and "3 of 3 task(s) failed" in out.stderr


def test_task_cancelled_while_pending_is_unknown_and_said_so(slurm_cluster, tmp_path, nexa_cli):
    """Slurm drops an array element cancelled while it waits (here behind a throttle of 1)
    from the queue and keeps no record of it: status says it never started."""
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "marks").mkdir()
    path = write_sweep(tmp_path, "throttled", {"n": [0, 1, 2]}, {"mode": "sleep", "dir": str(tmp_path / "marks")},
                       ['time = "5"', "max_parallel = 1"])
    cfg = load_config(cwd=tmp_path)
    artifacts = launch_slurm_sweep(path, submit=True, out=tmp_path / "run", config=cfg)
    run = str(tmp_path / "run")
    poll(lambda: track.status(run, config=cfg).tasks[0].state == "RUNNING", 30, "task 0 running")
    assert track.status(run, config=cfg).tasks[2].state == "PENDING"
    out = nexa_cli("cancel", run, "--task", "2")
    assert out.returncode == 0 and f"cancelled {artifacts.job_ids[0]}_2" in out.stdout, out.stdout + out.stderr
    row = poll(lambda: (lambda t: t if t.state != "PENDING" else None)(track.status(run, config=cfg).tasks[2]), 30, "task 2 gone")
    assert (row.state, row.source, row.reason, row.bucket) == ("UNKNOWN", "none", "never started: cancelled while pending?", "failed")
    assert nexa_cli("cancel", run).returncode == 0
    slurm_cluster.wait(artifacts.job_ids, timeout=60)


def test_requeued_task_runs_again_and_its_count_shows(requeued, nexa_cli):
    job = requeued.artifacts.job_ids[0]
    # Slurm's warning comes up to ~60 s before the limit; the script requeues the task, which
    # Slurm then holds for about 2 minutes (BeginTime): release it at once.
    st = poll(lambda: (lambda s: s if s.tasks[0].restarts == 1 else None)(requeued.status()), 100, "the requeue")
    assert st.tasks[0].state in ("PENDING", "REQUEUED", "RUNNING", "COMPLETING", "COMPLETED"), st.tasks[0]
    assert (requeued.dir / "marks" / "0.warned").read_text() == "0"  # the program got the warning first
    # Not "now": a restart in the same second as the requeue's kill finds its credential still
    # revoked and Slurm fails it at once ("Job credential revoked", exit 1).
    subprocess.run(["scontrol", "update", f"JobId={job}_0", "StartTime=now+3"], capture_output=True)
    out = nexa_cli("wait", str(requeued.run), "--poll", "1")
    assert out.returncode == 0, out.stderr
    st = requeued.status()
    row = st.tasks[0]
    assert (row.state, row.exit_code, row.restarts) == ("COMPLETED", 0, 1)
    assert requeued.attempts(0) == 2
    text = nexa_cli("status", str(requeued.run)).stdout
    assert "restarts" in text and "COMPLETED" in text
    log = open(row.log).read()  # --open-mode=append: both attempts in one log
    assert (
        "attempt 1 restart 0" in log and "attempt 2 restart 1" in log and "requeued (restart 1 of 1)" in open(row.log[:-4] + ".err").read()
    )
    # The requeued attempt's records were kept aside for the cost; tasks/ holds the last one's.
    (first,) = attempt_records(requeued.run)
    last = task_records(requeued.run)[0]
    assert (first["restart_count"], first["signals"], last["restart_count"], last["exit_code"]) == (0, "USR1 TERM", 1, 0)
    assert first["start"] < first["end"] < last["start"] < last["end"]


def test_wait_reports_each_state_truthfully(limited, nexa_cli):
    out = nexa_cli("wait", str(limited.run), "--poll", "2", "--every", "5")
    assert out.returncode == 1, out.stderr
    assert "2 of 3 task(s) failed" in out.stderr
    st = limited.status()
    got = [(t.state, t.exit_code) for t in st.tasks]
    assert got[0] == ("COMPLETED", 0) and got[1] == ("FAILED", 3)
    assert got[2][0] == "TIMEOUT"
    assert (limited.dir / "marks" / "2.warned").exists()  # the warning reached the program
    assert st.counts == {"COMPLETED": 1, "FAILED": 1, "TIMEOUT": 1}
    # The run folder's records alone (once Slurm has forgotten the jobs) say the same.
    records = task_records(limited.run)
    where = runs.slots(json.loads((limited.run / "manifest.json").read_text()))
    alone = [track.merge_task(i, where[i], None, None, None, records[i]).state for i in range(3)]
    assert alone == ["COMPLETED", "FAILED", "TIMEOUT"]


def test_resubmit_runs_only_the_failed_tasks(limited, nexa_cli):
    before = json.loads((limited.run / "manifest.json").read_text())
    out = nexa_cli("resubmit", str(limited.run), "--failed", "--dry-run")
    assert out.returncode == 0 and "--array=0,1" in out.stdout and out.stdout.rstrip().endswith(" 1")
    assert json.loads((limited.run / "manifest.json").read_text()) == before
    out = nexa_cli("resubmit", str(limited.run), "--failed")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((limited.run / "manifest.json").read_text())
    new = manifest["chunks"][-1]
    assert (new["offset"], new["array"], new["count"], new["resubmit"]) == (1, "0,1", 2, 1)
    assert manifest["job_ids"] == before["job_ids"] + [new["job_id"]]
    assert manifest["resubmits"][0]["indices"] == [1, 2]
    out = nexa_cli("wait", str(limited.run), "--poll", "1")
    assert out.returncode == 0, out.stderr
    st = limited.status()
    assert [t.state for t in st.tasks] == ["COMPLETED"] * 3
    assert st.tasks[1].job_id == f"{new['job_id']}_0" and st.tasks[2].job_id == f"{new['job_id']}_1"
    assert [limited.attempts(i) for i in range(3)] == [1, 2, 2]  # task 0 never ran again
    out = nexa_cli("resubmit", str(limited.run), "--failed")
    assert out.returncode == 0 and "nothing to resubmit" in out.stdout


def test_logs_of_a_task(limited, nexa_cli):
    out = nexa_cli("logs", str(limited.run), "--task", "1")
    assert out.returncode == 0, out.stderr
    assert "task 1 mode fail attempt 2" in out.stdout and "task 1 done" in out.stdout
    first = limited.artifacts.job_ids[0]
    old = (limited.run / "logs" / f"{first}_1.err").read_text()
    assert "failing on purpose" in old  # the first attempt's log stays where it was
    out = nexa_cli("logs", str(limited.run), "--task", "0", "--follow")
    assert out.returncode == 0, out.stderr
    assert "task 0 done" in out.stdout and "==> task 0 (COMPLETED)" in out.stderr
    out = nexa_cli("logs", str(limited.run), "--task", "9")
    assert out.returncode == 2 and "--task: expected 0..2, got 9" in out.stderr


def test_one_squeue_call_per_poll_whatever_the_chunk_count(slurm_cluster, tmp_path, monkeypatch):
    """60 tasks in 3 chunks: every look at the run is ONE squeue call naming all 3 jobs;
    scontrol never; sacct never (every task's end record explains it)."""
    from nexa_ops import proc

    (tmp_path / "nexa.toml").write_text("[cluster]\nmax_array_size = 25\n")
    command = json.dumps([sys.executable, "-S", "-c", "import time; time.sleep(0.5)"])
    sweep = f'name = "many"\ncommand = {command}\n[grid]\ni = {list(range(60))}\n[resources]\ncpus_per_task = 1\n'
    (tmp_path / "many.toml").write_text(sweep)
    cfg = load_config(cwd=tmp_path)
    calls = []
    real = proc.run
    monkeypatch.setattr(proc, "run", lambda argv, *a, **k: calls.append(list(argv)) or real(argv, *a, **k))
    artifacts = launch_slurm_sweep(tmp_path / "many.toml", submit=True, out=tmp_path / "run", config=cfg)
    assert len(artifacts.job_ids) == 3 and [c[0] for c in calls if c[0] != "git"] == ["sbatch"] * 3  # git: provenance
    jobs = ",".join(artifacts.job_ids)

    def asked():
        names = [c[0] for c in calls]
        assert "scontrol" not in names and "sacct" not in names, calls
        assert all(c[c.index("-j") + 1] == jobs for c in calls), calls  # every job of the run, each time
        return names.count("squeue")

    calls.clear()
    track.status(str(tmp_path / "run"), config=cfg)
    assert asked() == 1
    calls.clear()
    polls = []
    started = time.monotonic()
    st = track.wait(str(tmp_path / "run"), poll=4, config=cfg, progress=lambda s: polls.append(s.summary()))
    seconds = time.monotonic() - started
    assert st.finished and st.counts == {"COMPLETED": 60}
    # At once, then 2 s, 4 s, 4 s... apart (or at once when every end record is there).
    assert 1 <= asked() <= 2 + seconds / 2, (asked(), seconds)
    assert len(polls) >= asked()  # the progress line also moved between polls (the run folder)
