"""`nexa runs`: every run under runs/, newest first, summed up from its own folder."""

import json

import pytest

from nexa_ops import runs
from nexa_ops.config import load_config
from nexa_ops.cost import book
from nexa_ops.errors import ConfigError
from nexa_ops.run_list import format_age, launch_buckets, list_runs, run_state, task_buckets

NOW = 1_800_000_000.0


def make(runs_dir, run_id, *, backend="local", count=3, ends=(), starts=(), campaign=None, when="2026-01-01T00:00:00Z", **manifest):
    run = runs_dir / run_id
    (run / "tasks").mkdir(parents=True)
    tasks = [{"index": i, "params": {}, "argv": ["x"]} for i in range(count)]
    spec = {"name": run_id.split("-")[0], "count": count, "campaign": campaign, "tasks": tasks}
    (run / "spec.json").write_text(json.dumps(spec))
    if backend:
        doc = {"run_id": run_id, "name": spec["name"], "backend": backend, "campaign": campaign, "submitted_at": when, "tasks": count}
        doc.update(manifest)
        (run / "manifest.json").write_text(json.dumps(doc))
    for i in starts:
        (run / "tasks" / f"{i}.start.json").write_text(json.dumps({"start": NOW}))
    for i, code in ends:
        (run / "tasks" / f"{i}.end.json").write_text(json.dumps({"end": NOW + 1, "exit_code": code}))
    return run


@pytest.fixture
def project(tmp_path):
    cfg = load_config(cwd=tmp_path)
    make(cfg.runs_dir, "old-1", ends=[(0, 0), (1, 0), (2, 0)], campaign="a", when="2026-01-01T00:00:00Z")
    make(cfg.runs_dir, "mid-1", ends=[(0, 0), (1, 3)], starts=[2], campaign="b", when="2026-01-02T00:00:00Z", runner=runs.new_runner())
    make(cfg.runs_dir, "new-1", ends=[(0, 1), (1, 0), (2, 0)], campaign="a", when="2026-01-03T00:00:00Z")
    make(cfg.runs_dir, "dead-1", starts=[0], when="2025-12-01T00:00:00Z", runner=dict(runs.new_runner(), pid_start=-1))
    (cfg.runs_dir / "broken-1").mkdir()
    (cfg.runs_dir / "broken-1" / "manifest.json").write_text("[]")
    doc = {"schema": book.SCHEMA, "run_id": "new-1", "actual_usd": 1.5, "estimated_usd": 2.0, "status": "failed"}
    (cfg.runs_dir / "manifests").mkdir()
    (cfg.runs_dir / "manifests" / "cost_new-1.json").write_text(json.dumps(doc))
    return cfg


def test_runs_newest_first_with_states_and_cost(project, capsys):
    found = list_runs(project)
    assert [r.run_id for r in found.runs] == ["new-1", "mid-1", "old-1", "dead-1"]
    by_id = {r.run_id: r for r in found.runs}
    assert (by_id["new-1"].state, by_id["new-1"].buckets["failed"], by_id["new-1"].actual_usd) == ("failed", 1, 1.5)
    assert by_id["mid-1"].state == "running" and by_id["mid-1"].buckets == {"pending": 0, "running": 1, "done": 1, "failed": 1}
    assert by_id["old-1"].state == "done" and by_id["old-1"].actual_usd is None
    assert by_id["dead-1"].state == "failed" and by_id["dead-1"].buckets["failed"] == 3  # its runner is gone: interrupted
    assert found.skipped and "broken-1" in found.skipped[0][0]
    assert "nexa: warning: skipped:" in capsys.readouterr().err


def test_filters_and_limit(project):
    assert [r.run_id for r in list_runs(project, campaign="a").runs] == ["new-1", "old-1"]
    assert [r.run_id for r in list_runs(project, state="failed").runs] == ["new-1", "dead-1"]
    assert [r.run_id for r in list_runs(project, limit=2).runs] == ["new-1", "mid-1"]
    with pytest.raises(ConfigError, match="--state: expected one of planned, pending, running, done, failed, got 'FAILED'"):
        list_runs(project, state="FAILED")


def test_task_buckets_of_a_slurm_run_use_the_queue_once_asked():
    manifest = {"backend": "slurm", "job_ids": ["7"], "chunks": [{"offset": 0, "count": 3, "job_id": "7"}]}
    run = runs.Run(runs.Path("/r"), manifest, {"count": 3}, "")
    records = {0: {"start": NOW, "end": NOW + 1, "exit_code": 0}, 1: {"start": NOW}}
    assert task_buckets(run, records, None) == {"pending": 1, "running": 1, "done": 1, "failed": 0}  # no answer: the records
    assert task_buckets(run, records, {"7"}) == {"pending": 1, "running": 1, "done": 1, "failed": 0}
    assert task_buckets(run, records, set()) == {"pending": 0, "running": 0, "done": 1, "failed": 2}  # left the queue unrecorded
    assert run_state("planned", {"pending": 3, "running": 0, "done": 0, "failed": 0}) == "planned"
    assert run_state("slurm", {"pending": 3, "running": 0, "done": 0, "failed": 0}) == "pending"
    assert format_age(59) == "59s" and format_age(3600 * 5) == "5h" and format_age(86400 * 3 + 5) == "3d"


def test_cli_table_and_json(project, nexa_cli):
    root = project.root
    out = nexa_cli("runs", cwd=root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["run", "name", "campaign", "backend", "state", "tasks", "cost", "age"]
    assert lines[2].split()[:5] == ["new-1", "new", "a", "local", "failed"] and "2/3 done, 1 failed" in lines[2] and "$1.50" in lines[2]
    out = nexa_cli("runs", "--json", "--campaign", "b", cwd=root)
    (doc,) = json.loads(out.stdout)
    assert (doc["run_id"], doc["state"], doc["tasks"], doc["buckets"]["running"]) == ("mid-1", "running", 3, 1)
    out = nexa_cli("runs", "--limit", "0", cwd=root)
    assert out.returncode == 2 and "--limit: expected an integer >= 1" in out.stderr
    out = nexa_cli("runs", "--state", "done", "--campaign", "zzz", cwd=root)
    assert out.returncode == 0 and "no runs in" in out.stdout and "matching the filters" in out.stdout


def test_a_launch_is_one_task():
    def state(manifest, queued=None, cost=None):
        return run_state(manifest.get("backend", "local"), launch_buckets(manifest, queued, cost))

    assert state({"exit_code": 0}) == "done" and state({"exit_code": 2}) == "failed"
    assert state({"backend": "slurm", "state": "TIMEOUT", "job_ids": ["5"]}) == "failed"
    assert state({"backend": "slurm", "error": "sbatch exited with 1"}) == "failed"
    assert state({"backend": "slurm", "job_ids": ["5"]}, {"5"}) == "running"
    assert state({"backend": "slurm", "job_ids": ["5"]}, set(), "finished") == "done"
    assert state({"backend": "slurm", "job_ids": ["5"]}, set()) == "failed"
    assert state({"backend": "slurm", "job_ids": ["5"]}) == "running"  # Slurm could not be asked


def test_a_halving_run_between_rungs_is_running_not_done(tmp_path, monkeypatch):
    """Every submitted task has ended, but the promotion job is still in the queue deciding
    the next rung: the run is running. With the job gone and no decision, it is over."""
    from nexa_ops import launch_slurm_sweep
    from nexa_ops.tools import slurm
    from tests.test_sweep_halving import write_sweep

    monkeypatch.chdir(tmp_path)
    (tmp_path / "nexa.toml").write_text('[cluster]\nruns_dir = "runs"\n')
    launch_slurm_sweep(write_sweep(tmp_path), local=True, out=tmp_path / "runs" / "hv-1")
    run = tmp_path / "runs" / "hv-1"
    manifest = runs.read_manifest(run)
    manifest["backend"] = "slurm"  # as if on Slurm: rung 0 ran, its promotion job is deciding
    manifest["rungs"] = manifest["rungs"][:1]
    manifest["rungs"][0].update(job_ids=["900000"], promote_job_id="900001")
    runs.write_manifest(run, manifest)
    for decision in (run / "rungs").glob("*.json"):
        decision.unlink()
    cfg = load_config(cwd=tmp_path)
    monkeypatch.setattr(slurm, "queued_jobs", lambda: {"900001"})
    (summary,) = list_runs(cfg).runs
    assert summary.state == "running" and summary.buckets["pending"] == summary.buckets["running"] == 0
    monkeypatch.setattr(slurm, "queued_jobs", lambda: set())  # the promotion job ended without deciding
    (summary,) = list_runs(cfg).runs
    assert summary.state in ("done", "failed")
