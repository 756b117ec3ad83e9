"""`nexa sweep --local` as a researcher meets it: interrupted with a real Ctrl-C (SIGINT to the
process group, as a terminal sends it), cancelled, rerun with `resubmit --failed --local`,
its runner killed; GPU slices; live progress and the first failure's stderr; dry runs that
leave nothing behind; `--json`; working from a subfolder."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nexa_ops.errors import ConfigError
from nexa_ops.sweep import local
from tests.conftest import ROOT

PROGRAM = """
import os, sys, time
i = int(os.environ["NEXA_TASK_INDEX"])
with open(os.path.join(os.environ["PROBE_DIR"], f"{i}.json"), "w") as fh:
    fh.write('{"gpus": %s}' % ('"%s"' % os.environ["CUDA_VISIBLE_DEVICES"] if "CUDA_VISIBLE_DEVICES" in os.environ else "null"))
time.sleep(float(os.environ.get("TASK_SLEEP", "0")))
if str(i) in os.environ.get("FAIL_TASKS", "").split(","):
    print(f"task {i} is starting", file=sys.stderr)
    sys.exit(f"ValueError: bad learning rate for task {i}")
print(f"task {i} done")
"""


@pytest.fixture
def project(tmp_path):
    """A project: nexa.toml, train.py and a sweep of 6 tasks (2 at a time) at its root."""
    (tmp_path / "nexa.toml").write_text("[cluster]\nmax_array_size = 25\n")
    (tmp_path / "train.py").write_text(PROGRAM)
    (tmp_path / "probe").mkdir()
    (tmp_path / "src").mkdir()
    write_sweep(tmp_path)
    return tmp_path


def write_sweep(root, grid="lr = [1, 2, 3, 4, 5, 6]", resources="max_parallel = 2", command='["python3", "train.py"]', extra=""):
    text = f'name = "loc"\ncommand = {command}\n{extra}\n[grid]\n{grid}\n[resources]\n{resources}\n'
    (root / "sweep.toml").write_text(text)
    return root / "sweep.toml"


def nexa(*args, cwd, env=None, **kw):
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "nexa_ops", *args], cwd=str(cwd), env=full, capture_output=True, text=True, **kw)


def start(project, *args, env=None):
    """`nexa sweep --local` in a process group of its own, like a terminal's foreground job."""
    full = dict(os.environ, PROBE_DIR=str(project / "probe"), **(env or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "nexa_ops", "sweep", "--config", "sweep.toml", "--local", *args],
        cwd=str(project),
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def only_run(project):
    (run,) = [p for p in (project / "runs").iterdir() if p.name != "manifests"]
    return run


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def started(project, n):
    return lambda: (project / "runs").is_dir() and len(list((project / "runs").glob("*/tasks/*.start.json"))) >= n


def status(project, *args):
    out = nexa("status", "--json", *args, cwd=project)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def end_record(run, i):
    return json.loads((run / "tasks" / f"{i}.end.json").read_text())


# --- interrupted, cancelled, rerun ----------------------------------------------------------


@pytest.mark.parametrize("sig, name, code", [(signal.SIGINT, "INT", 130), (signal.SIGTERM, "TERM", 143)])
def test_an_interrupted_local_sweep_records_every_task_and_reruns_here(project, sig, name, code):
    proc = start(project, env={"TASK_SLEEP": "60"})
    wait_for(started(project, 2))
    os.killpg(proc.pid, sig)  # what Ctrl-C in a terminal does (SIGINT), or a kill of the job
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"nexa: error: interrupted by SIG{name}: 6 task(s) interrupted and recorded" in err
    run = only_run(project)
    assert f"nexa resubmit {run.name} --failed --local" in err
    assert "0 succeeded, 6 failed (6 interrupted)" in out
    ran = [i for i in range(6) if (run / "tasks" / f"{i}.start.json").exists()]
    assert len(ran) == 2
    for i in range(6):
        end = end_record(run, i)
        assert end["state"] == "INTERRUPTED" and end["signals"] == name
        assert end["exit_code"] == (128 + sig if i in ran else None)  # killed by the signal passed on; never started
    st = status(project)
    assert [t["state"] for t in st["tasks"]] == ["INTERRUPTED"] * 6 and st["finished"]
    assert st["tasks"][ran[0]]["reason"] == f"interrupted by SIG{name}"
    assert nexa("wait", "--timeout", "3", cwd=project).returncode == 1  # over, failed: not a timeout (124)
    cost = json.loads((project / "runs" / "manifests" / f"cost_{run.name}.json").read_text())
    assert (cost["status"], cost["tasks_failed"]) == ("failed", 6)  # reconciled on the way out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["runner"]["pid"] == proc.pid and manifest["runner"]["host"] == os.uname().nodename

    again = nexa("resubmit", run.name, "--failed", "--local", cwd=project, env={"PROBE_DIR": str(project / "probe")})
    assert again.returncode == 0, again.stderr
    assert "6 succeeded, 0 failed" in again.stdout
    st = status(project)
    assert [t["state"] for t in st["tasks"]] == ["COMPLETED"] * 6
    attempts = sorted(p.name for p in (run / "tasks" / "attempts").iterdir())
    assert f"{ran[0]}.local.1.start.json" in attempts and "5.local.1.end.json" in attempts  # the first attempts are kept
    cost = json.loads((project / "runs" / "manifests" / f"cost_{run.name}.json").read_text())
    assert (cost["status"], cost["tasks_ok"]) == ("finished", 6)
    assert json.loads((run / "manifest.json").read_text())["resubmits"][0]["indices"] == list(range(6))


def test_cancel_a_local_run_one_task_then_all(project):
    proc = start(project, env={"TASK_SLEEP": "60"})
    wait_for(started(project, 2))
    run = only_run(project)
    dry = nexa("cancel", "--dry-run", cwd=project)
    assert (dry.returncode, dry.stdout) == (0, f"kill -USR1 {proc.pid}\n")
    one = nexa("cancel", run.name[:6], "--task", "5", cwd=project)  # a pending task; a run prefix
    assert one.returncode == 0 and f"cancelled task(s) 5 (local runner pid {proc.pid})" in one.stdout, one.stderr
    assert end_record(run, 5)["state"] == "CANCELLED"
    everything = nexa("cancel", cwd=project)
    assert everything.returncode == 0 and "cancelled task(s) 0, 1, 2, 3, 4" in everything.stdout, everything.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "cancelled (nexa cancel)" in err
    states = [t["state"] for t in status(project)["tasks"]]
    assert states == ["CANCELLED"] * 6
    assert [end_record(run, i).get("signals") for i in (0, 1)] == ["TERM", "TERM"]
    again = nexa("cancel", cwd=project)
    assert again.returncode == 0 and "cancelled nothing" in again.stdout


def test_a_runner_killed_hard_leaves_interrupted_tasks(project):
    proc = start(project, env={"TASK_SLEEP": "2"})
    wait_for(started(project, 2))
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs: no end record is written
    proc.communicate(timeout=30)
    run = only_run(project)
    st = status(project)
    assert {t["state"] for t in st["tasks"]} == {"INTERRUPTED"}
    assert st["tasks"][0]["reason"] == f"its runner pid {proc.pid} on host {os.uname().nodename} is gone"
    assert st["tasks"][5]["reason"].endswith("is gone; never started")
    assert nexa("wait", "--timeout", "3", cwd=project).returncode == 1
    rec = nexa("cost.reconcile", cwd=project)
    assert rec.returncode == 0 and "incomplete" in rec.stdout, rec.stdout + rec.stderr
    refused = nexa("resubmit", run.name, "--failed", cwd=project)
    assert refused.returncode == 3 and "--local" in refused.stderr
    time.sleep(2.5)  # the orphaned tasks end on their own


def test_a_live_runner_is_not_rerun_and_a_slurm_run_not_run_here(project):
    proc = start(project, env={"TASK_SLEEP": "60"})
    try:
        wait_for(started(project, 2))
        out = nexa("resubmit", "--failed", "--local", cwd=project)
        assert out.returncode == 3 and f"still running (runner pid {proc.pid}" in out.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)
    slurm_run = project / "runs" / "s-1"
    (slurm_run / "tasks").mkdir(parents=True)
    (slurm_run / "spec.json").write_text(json.dumps({"name": "s", "count": 1, "tasks": [{"index": 0, "params": {}, "argv": ["x"]}]}))
    (slurm_run / "manifest.json").write_text(json.dumps({"run_id": "s-1", "backend": "slurm", "job_ids": [], "chunks": []}))
    out = nexa("resubmit", "s-1", "--failed", "--local", cwd=project)
    assert out.returncode == 3 and "was submitted to Slurm; --local reruns the tasks of a run that ran locally" in out.stderr


# --- output -----------------------------------------------------------------------------------


def test_progress_when_piped_and_the_first_failure_s_stderr(project):
    out = nexa("sweep", "--config", "sweep.toml", "--local", cwd=project, env={"PROBE_DIR": str(project / "probe"), "FAIL_TASKS": "3,4"})
    assert out.returncode == 1
    run = only_run(project)
    lines = [line for line in out.stderr.splitlines() if " task " in line and "[" in line]
    assert len(lines) == 6 and any("task 3 FAILED (exit 1, " in line for line in lines), out.stderr
    assert "task 3 failed (exit 1); the end of" in out.stderr and "local_3.err" in out.stderr
    assert "    task 3 is starting\n    ValueError: bad learning rate for task 3\n" in out.stderr
    assert f"nexa: all of it: nexa logs {run.name} --task 3\n" in out.stderr
    assert "4 succeeded, 2 failed" in out.stdout and "local_3.err" in out.stdout  # the log column points at the cause
    logs = nexa("logs", run.name, "--task", "3", cwd=project)
    assert "bad learning rate" in logs.stderr


def test_the_progress_line_on_a_terminal():
    from nexa_ops.commands.track import local_progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    show = local_progress(stream)
    show(local.Progress("r-1", 2, 1, 1, 0, 0))
    show(local.Progress("r-1", 2, 0, 0, 2, 0))
    text = stream.getvalue()
    assert text.startswith("\r\x1b[Kr-1: 1 pending, 1 running, 0 done, 0 failed (2 tasks)")
    assert text.endswith("\n") and text.count("\r\x1b[K") == 2


def test_json_is_one_document_on_stdout(project):
    env = {"PROBE_DIR": str(project / "probe")}
    out = nexa("sweep", "--config", "sweep.toml", "--json", cwd=project)
    doc = json.loads(out.stdout)
    assert (doc["mode"], doc["tasks"], doc["written"], doc["job_ids"]) == ("plan", 6, True, [])
    assert doc["run_dir"] == str(project / "runs" / doc["run_id"]) and "estimate" in doc and doc["estimate"]["tasks"] == 6
    assert "Sweep loc: 6 task(s)" in out.stderr
    out = nexa("sweep", "--config", "sweep.toml", "--local", "--json", cwd=project, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["mode"] == "local" and [r["state"] for r in doc["results"]] == ["COMPLETED"] * 6 and doc["stopped_by"] is None
    out = nexa("sweep", "--config", "sweep.toml", "--local", "--json", cwd=project, env=dict(env, FAIL_TASKS="1"))
    assert out.returncode == 1 and json.loads(out.stdout)["results"][1]["exit_code"] == 1
    out = nexa("sweep", "--config", "sweep.toml", "--submit", "--dry-run", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["written"] is False and doc["commands"] == [["sbatch", "--parsable", doc["script"], "0"]]
    assert "sbatch --parsable" in out.stderr


# --- dry runs ---------------------------------------------------------------------------------


def test_dry_runs_leave_nothing_behind(project):
    before = sorted(p.name for p in project.iterdir())
    out = nexa("sweep", "--config", "sweep.toml", "--local", "--dry-run", cwd=project, env={"PROBE_DIR": str(project / "probe")})
    assert out.returncode == 0, out.stderr
    assert "Would run 6 task(s) here, 2 at a time, in " + str(project) in out.stdout
    assert "  task 0: python3 train.py --lr=1\n" in out.stdout and "nothing run, nothing written" in out.stdout
    assert not list((project / "probe").iterdir())  # no task ran
    for args in ([], ["--submit"]):
        out = nexa("sweep", "--config", "sweep.toml", "--dry-run", *args, cwd=project)
        assert out.returncode == 0, out.stderr
    assert "sbatch --parsable" in out.stdout and "nothing written, nothing submitted" in out.stdout
    assert sorted(p.name for p in project.iterdir()) == before  # no runs/, so never the latest run
    out = nexa("sweep", "--config", "sweep.toml", "--dry-run", "--out", "sweep.toml", cwd=project)
    assert out.returncode == 2 and "--out: cannot make the run folder sweep.toml: File exists" in out.stderr


# --- GPUs -------------------------------------------------------------------------------------


def test_parallel_local_tasks_get_their_own_gpus(project):
    write_sweep(project, grid="lr = [1, 2, 3, 4, 5, 6]", resources="gpus_per_node = 2\nmax_parallel = 4")
    out = nexa(
        "sweep",
        "--config",
        "sweep.toml",
        "--local",
        cwd=project,
        env={"PROBE_DIR": str(project / "probe"), "CUDA_VISIBLE_DEVICES": "0,1,2,3", "TASK_SLEEP": "0.5"},
    )
    assert out.returncode == 0, out.stderr
    run = only_run(project)
    seen = {i: json.loads((project / "probe" / f"{i}.json").read_text())["gpus"] for i in range(6)}
    assert set(seen.values()) == {"0,1", "2,3"}
    spans = {}
    for i in range(6):
        start_time = json.loads((run / "tasks" / f"{i}.start.json").read_text())["start"]
        spans[i] = (start_time, end_record(run, i)["end"])
    for i in range(6):
        for j in range(i + 1, 6):
            overlap = spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]
            assert not (overlap and seen[i] == seen[j]), (i, j, spans, seen)  # never the same GPUs at once
    busiest = max(sum(1 for a, b in spans.values() if a <= t < b) for t, _ in spans.values())
    assert busiest <= 2  # 4 GPUs, 2 per task: 2 at a time although max_parallel is 4


def test_gpus_from_cuda_visible_devices_or_nvidia_smi(monkeypatch):
    assert local.gpu_slots(0, {"CUDA_VISIBLE_DEVICES": "0,1"}) == (None, None)
    assert local.gpu_slots(2, {"CUDA_VISIBLE_DEVICES": "3,5,7,9,11"}) == (["3,5", "7,9"], None)
    assert local.machine_gpus({"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b,-1,2"}) == (["GPU-a", "GPU-b"], "CUDA_VISIBLE_DEVICES=GPU-a,GPU-b,-1,2")
    with pytest.raises(ConfigError, match=r"each task needs 2 GPU\(s\) \(resources.gpus_per_node\) but this machine has 1"):
        local.gpu_slots(2, {"CUDA_VISIBLE_DEVICES": "0"})
    slots, warning = local.gpu_slots(1, {"CUDA_VISIBLE_DEVICES": ""})
    assert slots is None and "none were found (CUDA_VISIBLE_DEVICES=)" in warning
    monkeypatch.setenv("PATH", f"{ROOT / 'tests' / 'fakes'}:{os.environ['PATH']}")  # nvidia-smi's real -L format
    assert local.gpu_slots(1, {}) == (["0", "1", "2"], None)
    monkeypatch.setenv("FAKE_NVIDIA_SMI_MODE", "nodevices")
    assert local.gpu_slots(1, {})[0] is None
    monkeypatch.setenv("FAKE_NVIDIA_SMI_MODE", "error")
    slots, warning = local.gpu_slots(1, {})
    assert slots is None and "nvidia-smi -L failed" in warning
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "no nvidia-smi on PATH" in local.gpu_slots(1, {})[1]


def test_nvidia_smi_list_format():
    from nexa_ops.tools.nvidia_smi import parse_list

    text = (
        "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-5b6a1c52-9e0d-3f4e-8a71-2c9f0d6e4b13)\n"
        "  MIG 3g.40gb     Device  0: (UUID: MIG-0e3d8f21-47aa-6c1b-93d2-7f5e1a0c8d94)\n"
        "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-a41f9c07-2b8e-5d36-b1e0-6d2c4f8a9e57)\n"
    )
    assert parse_list(text) == ["0", "1"]


# --- the project root, mistakes ---------------------------------------------------------------


def test_from_a_subfolder_the_project_root_is_used(project):
    out = nexa("sweep", "--config", "../sweep.toml", "--local", cwd=project / "src", env={"PROBE_DIR": str(project / "probe")})
    assert out.returncode == 0, out.stderr
    assert "6 succeeded, 0 failed" in out.stdout and "warning" not in out.stderr
    assert not (project / "src" / "runs").exists() and only_run(project)
    assert nexa("status", "--json", cwd=project / "src").returncode == 0  # status finds it from there too


def test_a_missing_script_is_warned_about_before_running(project):
    write_sweep(project, command='["python3", "src/train.py"]')
    out = nexa("sweep", "--config", "../sweep.toml", "--local", "--dry-run", cwd=project / "src")
    assert out.returncode == 0, out.stderr
    warning = f"nexa: warning: ../sweep.toml: command: src/train.py not found in {project} (the tasks' working directory, the project root)"
    assert warning in out.stderr, out.stderr


def test_silent_mistakes_are_warned_about(project):
    write_sweep(project, grid='lr = [0.1, 0.2]\n[[exclude]]\nlr = "0.1"\n[[exclude]]\nlr = 0.2')
    out = nexa("sweep", "--config", "sweep.toml", "--dry-run", cwd=project)
    assert out.returncode == 0
    assert out.stderr == "nexa: warning: sweep.toml: exclude[0]: matches no combination, so it excludes nothing\n"
    write_sweep(project, grid="")
    out = nexa("sweep", "--config", "sweep.toml", "--dry-run", cwd=project)
    assert out.stderr == "nexa: warning: sweep.toml: grid: no [grid] (or [random]) values: the sweep is one task with no arguments\n"


def test_script_path_heuristics(tmp_path):
    from nexa_ops.sweep.plan import missing_script, script_path

    assert script_path(["python", "-u", "train.py", "--lr", "x.py"]) == "train.py"
    assert script_path(["torchrun", "--nproc_per_node", "2", "src/train.py"]) == "src/train.py"
    assert script_path(["./run"]) == "./run" and script_path(["python", "-m", "pkg.train"]) is None
    assert script_path(["bash", "-c", "python train.py"]) is None and script_path(["train-model"]) is None
    assert missing_script([sys.executable, str(ROOT / "tests" / "data" / "argv_probe.py")], tmp_path) is None
    assert missing_script(["python", "nope.py"], tmp_path).startswith(f"nope.py not found in {tmp_path}")


def test_cancel_requests_are_taken_once(tmp_path):
    local.request_cancel(tmp_path, 3)
    local.request_cancel(tmp_path, None)
    (tmp_path / local.CANCEL_DIR / "junk.json").write_text("[1]")
    assert sorted(local.take_cancel_requests(tmp_path), key=str) == [3, None]
    assert local.take_cancel_requests(tmp_path) == [] and not list((tmp_path / local.CANCEL_DIR).iterdir())

