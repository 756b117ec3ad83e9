"""Pipelines on the real local Slurm: ``--after RUN:corr`` is per task (proven from the task
records' times), ``--after RUN:ok`` with a failing upstream task is cancelled by Slurm and
``status`` says why, an upstream Slurm has forgotten is decided from its records, and a
launch waits on a sweep's task. About a minute in all."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nexa_ops import launch_slurm_sweep, runs, track
from nexa_ops.config import load_config
from nexa_ops.errors import ConfigError
from nexa_ops.launcher.run import launch
from tests.test_launcher_run import torch_path  # noqa: F401 - fixture

pytestmark = pytest.mark.slurm

# A training task sleeps, writes a "checkpoint" into its own folder ($NEXA_TASK_DIR) and exits
# with --exit; an evaluation task also reads the checkpoint of its upstream task, when it has
# one ($NEXA_UPSTREAM_TASK_DIR). Both print what they saw as JSON (the task's log).
PROGRAM = """
import json, os, sys, time
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:])
time.sleep(float(opts.get("sleep", 0)))
env = {k: os.environ.get(k) for k in os.environ if k.startswith("NEXA_")}
os.makedirs(env["NEXA_TASK_DIR"], exist_ok=True)
with open(os.path.join(env["NEXA_TASK_DIR"], "ckpt"), "w") as fh:
    fh.write("checkpoint of " + env["NEXA_RUN_DIR"] + " task " + env["NEXA_TASK_INDEX"])
seen = None
if env.get("NEXA_UPSTREAM_TASK_DIR"):
    with open(os.path.join(env["NEXA_UPSTREAM_TASK_DIR"], "ckpt")) as fh:
        seen = fh.read()
print(json.dumps({"env": env, "cwd": os.getcwd(), "upstream_ckpt": seen}), flush=True)
sys.exit(int(opts.get("exit", 0)))
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "nexa.toml").write_text("")
    return tmp_path


def sweep_file(project, name, grid, fixed=None):
    lines = [f'name = "{name}"', f'command = [{json.dumps(sys.executable)}, "prog.py"]', "[grid]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in grid.items()]
    lines += ["[fixed]"] + [f"{k} = {json.dumps(v)}" for k, v in (fixed or {}).items()]
    lines += ["[resources]", "cpus_per_task = 1", 'time = "00:05:00"']
    path = project / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def records(run_dir, kind):
    """Task index -> its start or end time, from the run folder's task records."""
    field = "start" if kind == "start" else "end"
    return {i: r[field] for i, r in runs.task_records(run_dir).items() if field in r}


def printed(run_dir):
    """Task index -> what the program printed (its log)."""
    out = {}
    for log in (run_dir / "logs").glob("*.out"):
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                out[int(doc["env"]["NEXA_TASK_INDEX"])] = doc
    return out


def wait_run(run_dir, config, timeout=120):
    return track.wait(str(run_dir), poll=0.5, timeout=timeout, config=config)


def test_corr_is_per_task(slurm_cluster, project, nexa_cli):
    cfg = load_config(cwd=project)
    sleeps = [16, 8, 4, 0.5]
    train = launch_slurm_sweep(sweep_file(project, "train", {"sleep": sleeps}), submit=True, out=project / "train", config=cfg)
    out = nexa_cli("sweep", "--config", str(sweep_file(project, "eval", {"i": [0, 1, 2, 3]})), "--submit", "--after", "train:corr")
    assert out.returncode == 0, out.stderr
    assert f"After: {train.run_id} (corr), Slurm waits for its 4 task(s) still pending or running" in out.stdout
    (eval_dir,) = (p for p in (project / "runs").iterdir() if p.name.startswith("eval-"))
    manifest = json.loads((eval_dir / "manifest.json").read_text())
    assert [c["dependency"] for c in manifest["chunks"]] == [f"aftercorr:{train.job_ids[0]}"]
    assert manifest["after"][0]["kind"] == "corr" and manifest["after"][0]["decided_by"] == "slurm"
    first = track.status(str(eval_dir), config=cfg).tasks[0]
    assert (first.state, first.reason) == ("PENDING", f"waiting for {train.run_id} task 0")
    wait_run(train.run_dir, cfg)
    final = wait_run(eval_dir, cfg)
    assert [t.state for t in final.tasks] == ["COMPLETED"] * 4
    ended, started = records(train.run_dir, "end"), records(eval_dir, "start")
    slowest = max(ended.values())
    for i in range(4):
        assert started[i] > ended[i], f"eval task {i} started before its training task ended"
    for i in (1, 2, 3):
        assert started[i] < slowest, f"eval task {i} waited for the slowest training task: not per task"
    seen = printed(eval_dir)
    for i in range(4):
        assert seen[i]["env"]["NEXA_UPSTREAM_RUN_DIR"] == str(train.run_dir)
        assert seen[i]["env"]["NEXA_UPSTREAM_TASK_DIR"] == str(train.run_dir / "out" / str(i))
        assert seen[i]["upstream_ckpt"] == f"checkpoint of {train.run_dir} task {i}"
        assert seen[i]["env"]["NEXA_TASK_DIR"] == str(eval_dir / "out" / str(i))


def test_ok_after_a_failing_task_is_cancelled_by_slurm_and_status_says_why(slurm_cluster, project, nexa_cli):
    cfg = load_config(cwd=project)
    train = launch_slurm_sweep(sweep_file(project, "train", {"exit": [0, 3]}, {"sleep": 5}), submit=True, out=project / "A", config=cfg)
    out = nexa_cli("sweep", "--config", str(sweep_file(project, "eval", {"i": [0, 1, 2]})), "--submit", "--after", str(train.run_dir))
    assert out.returncode == 0, out.stderr
    (eval_dir,) = (p for p in (project / "runs").iterdir() if p.name.startswith("eval-"))
    assert json.loads((eval_dir / "manifest.json").read_text())["chunks"][0]["dependency"] == f"afterok:{train.job_ids[0]}"
    wait_run(train.run_dir, cfg)
    final = wait_run(eval_dir, cfg, timeout=60)
    why = f"cancelled by Slurm: dependency never satisfied ({train.run_id} task(s) 1 failed)"
    assert [(t.state, t.reason, t.exit_code, t.elapsed) for t in final.tasks] == [("CANCELLED", why, None, None)] * 3
    assert not runs.task_records(eval_dir)  # no task started
    text = nexa_cli("status", str(eval_dir))
    assert text.returncode == 0, text.stderr
    assert f"After {train.run_id} (ok): waited on by Slurm" in text.stdout and why in text.stdout
    doc = json.loads(nexa_cli("status", str(eval_dir), "--json").stdout)
    assert doc["after"][0]["run_id"] == train.run_id and doc["tasks"][2]["reason"] == why
    # the same request now: refused at once, naming the failed task (Slurm would cancel it)
    eval_file = str(project / "eval.toml")
    again = nexa_cli("sweep", "--config", eval_file, "--submit", "--after", str(train.run_dir), "--out", str(project / "B"))
    assert again.returncode == 3 and f"{train.run_id} task(s) 1 failed" in again.stderr and "Traceback" not in again.stderr
    assert not (project / "B").exists()


GONE = "60000001"  # a job id this cluster never gave (ids restart at 1): "forgotten" by slurmctld


def forgotten_run(project, name, exits):
    """A finished run Slurm no longer knows (as after MinJobAge): its manifest names a job id
    that is not in the queue, its task records say how each task ended."""
    run = project / "runs" / name
    (run / "tasks").mkdir(parents=True)
    spec = {"name": "old", "count": len(exits), "tasks": [{"index": i, "params": {"i": i}, "argv": ["x"]} for i in range(len(exits))]}
    (run / "spec.json").write_text(json.dumps(spec))
    chunks = [{"offset": 0, "count": len(exits), "job_id": GONE}]
    manifest = {"run_id": name, "backend": "slurm", "tasks": len(exits), "job_ids": [GONE], "chunks": chunks}
    (run / "manifest.json").write_text(json.dumps(manifest))
    now = time.time()
    for i, code in enumerate(exits):
        (run / "tasks" / f"{i}.start.json").write_text(json.dumps({"start": now - 60, "host": "n1"}))
        (run / "tasks" / f"{i}.end.json").write_text(json.dumps({"exit_code": code, "end": now - 30}))
        (run / "out" / str(i)).mkdir(parents=True)
        (run / "out" / str(i) / "ckpt").write_text(f"checkpoint of {name} task {i}")
    return run


def test_an_upstream_slurm_forgot_is_decided_from_its_records(slurm_cluster, project, nexa_cli):
    assert subprocess.run(["squeue", "-h", "-j", GONE], capture_output=True, text=True).stdout.strip() == ""
    cfg = load_config(cwd=project)
    done = forgotten_run(project, "old-done", [0, 0, 0])
    failed = forgotten_run(project, "old-failed", [0, 4, 0])
    eval_file = sweep_file(project, "eval", {"i": [0, 1, 2]})
    # all done: submitted without a dependency, the tasks find the old run's folders
    out = nexa_cli("sweep", "--config", str(eval_file), "--submit", "--after", "old-done:corr", "--out", str(project / "e1"))
    assert out.returncode == 0, out.stderr
    assert "After: old-done (corr), all 3 task(s) over: no dependency needed" in out.stdout
    manifest = json.loads((project / "e1" / "manifest.json").read_text())
    assert "dependency" not in manifest["chunks"][0]
    assert manifest["after"][0]["decided_by"] == "records" and manifest["after"][0]["done"] == 3
    assert "--dependency" not in (project / "e1" / "eval.sbatch").read_text()
    assert [t.state for t in wait_run(project / "e1", cfg).tasks] == ["COMPLETED"] * 3
    seen = printed(project / "e1")[2]
    assert seen["env"]["NEXA_UPSTREAM_TASK_DIR"] == str(done.resolve() / "out" / "2")
    assert seen["upstream_ckpt"] == "checkpoint of old-done task 2"
    # a failed task: ok and corr refuse, naming it, and leave nothing behind; any submits
    for kind in ("ok", "corr"):
        out = nexa_cli("sweep", "--config", str(eval_file), "--submit", "--after", f"old-failed:{kind}", "--out", str(project / "e2"))
        assert out.returncode == 3, out.stdout + out.stderr
        assert out.stderr.startswith(f"nexa: error: refusing --after old-failed:{kind}: old-failed task(s) 1 failed")
        assert len(out.stderr.splitlines()) == 1 and not (project / "e2").exists()
    out = nexa_cli("sweep", "--config", str(eval_file), "--submit", "--after", "old-failed:any", "--out", str(project / "e3"))
    assert out.returncode == 0, out.stderr
    entry = json.loads((project / "e3" / "manifest.json").read_text())["after"][0]
    assert (entry["kind"], entry["decided_by"], entry["failed"], entry["targets"]) == ("any", "records", [1], [])
    assert [t.state for t in wait_run(project / "e3", cfg).tasks] == ["COMPLETED"] * 3
    assert printed(project / "e3")[0]["env"]["NEXA_UPSTREAM_RUN_DIR"] == str(failed.resolve())
    # the Python API: after= as a string or a list, only with submit
    planned = launch_slurm_sweep(eval_file, submit=True, dry_run=True, after=["old-done:corr"], out=project / "e5", config=cfg)
    assert [u.run_id for u in planned.upstreams] == ["old-done"] and [c.dependency for c in planned.chunks] == [None]
    with pytest.raises(ConfigError, match="--after goes with --submit"):
        launch_slurm_sweep(eval_file, after="old-done", config=cfg)
    # corr with another task count: exit 2 with both counts
    two = sweep_file(project, "two", {"i": [0, 1]})
    out = nexa_cli("sweep", "--config", str(two), "--submit", "--after", "old-done:corr", "--out", str(project / "e4"))
    message = "--after old-done:corr: old-done has 3 task(s) and this sweep 2: corr pairs task i with task i, so the counts must be equal"
    assert (out.returncode, out.stderr) == (2, f"nexa: error: {message}\n")
    assert not (project / "e4").exists()


def test_launch_waits_on_a_sweep_task(slurm_cluster, project, torch_path, monkeypatch):  # noqa: F811
    """``nexa launch --mode slurm --after RUN:corr``: one job after the one task of a sweep."""
    monkeypatch.chdir(project)
    cfg = load_config(cwd=project)
    train = launch_slurm_sweep(sweep_file(project, "train", {"sleep": [4]}), submit=True, out=project / "train", config=cfg)
    after = [f"{train.run_dir}:corr"]
    result = launch(["python", "prog.py"], mode="slurm", project=cfg, after=after, workdir=project, wait=True, wait_timeout=120)
    assert result.exit_code == 0 and result.dependency == f"afterok:{train.job_ids[0]}_0"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["dependency"] == result.dependency and manifest["after"][0]["run_id"] == train.run_id
    assert f"--dependency={result.dependency}" in result.argv and "--kill-on-invalid-dep=yes" in result.argv
    start = json.loads((result.run_dir / "tasks" / "0.start.json").read_text())["start"]
    assert start > records(train.run_dir, "end")[0]
    log = Path(result.log_path).read_text()
    doc = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert doc["upstream_ckpt"] == f"checkpoint of {train.run_dir} task 0"
    assert doc["env"]["NEXA_TASK_DIR"] == str(result.run_dir / "out" / "0")
