"""Successive halving on the real local Slurm: each rung one job array, each decision a
promotion job that submits the next rung. The same 9 configurations as the local tests
(tests/test_sweep_halving.py): rungs of 9, 3 and 1 tasks, trials 2, 4, 1 then 2 promoted,
each promoted trial resumed from its checkpoint, trial 3 (failed) never promoted, trial 2
the winner. Also: past MaxArraySize, cancel, a failed promotion job, resume.

The cluster is shared with other test runs: nothing here assumes an empty queue or cancels a
job it did not submit.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import nexa_ops
from nexa_ops import launch_slurm_sweep, runs
from nexa_ops.sweep import promote, rungs, search
from tests.services.pyz import clean_env, require_python
from tests.test_sweep_halving import PROMOTED, assert_the_expected_schedule, counter, read, write_sweep

pytestmark = pytest.mark.slurm


def job_state(job_id):
    out = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True).stdout
    for word in out.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return None  # forgotten


def wait_for(condition, timeout=60.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def project(tmp_path, cluster):
    (tmp_path / "nexa.toml").write_text(f"[cluster]\nmax_array_size = {cluster.max_array_size}\n")


def test_the_whole_schedule_on_slurm(slurm_cluster, tmp_path, nexa_cli):
    project(tmp_path, slurm_cluster)
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path)), "--submit", "--wait", "--out", str(run))
    assert out.returncode == 0, out.stdout + out.stderr
    assert_the_expected_schedule(run)
    manifest = read(run / "manifest.json")
    entries = manifest["rungs"]
    assert [len(e["job_ids"]) for e in entries] == [1, 1, 1]  # each rung one job array
    assert manifest["job_ids"] == [e["job_ids"][0] for e in entries]
    assert [c["rung"] for c in manifest["chunks"]] == [0, 1, 2] and [c["array"] for c in manifest["chunks"]] == ["0-8", "0,1,3", "0"]
    promoters = [e["promote_job_id"] for e in entries]
    assert all(promoters) and entries[0]["by"] == "nexa sweep" and entries[1]["by_job"] == promoters[0]
    for k, job in enumerate(promoters):
        decision = read(run / "rungs" / f"{k}.json")
        assert decision["by"] == f"promotion job {job}"
        log = (run / "logs" / f"promote-{k}-{job}.out").read_text()
        assert log.startswith(f"rung {k}: {decision['summary']}")
    assert "Submitted rung 0: job array" in out.stdout and "schedule finished: winner: trial 2" in out.stdout
    # each rung's jobs are billed in the run's cost manifest, like any array
    cost = read(tmp_path / "runs" / "manifests" / "cost_run.json")
    assert cost["job_ids"] == manifest["job_ids"] and cost["tasks"] == 13
    # results: the winner
    best = nexa_ops.best_config(run, config=nexa_ops.load_config(tmp_path / "nexa.toml"))
    assert (best.index, best.params) == (2, {"x": 2, "epochs": 9})
    # a promotion run again decides nothing new and submits no second rung
    again = promote.advance(run, 0, by="test")
    assert again.decision.promoted == PROMOTED[0] and again.next_job_ids == [] and again.promote_job_id is None
    assert read(run / "manifest.json")["job_ids"] == manifest["job_ids"]


def test_past_max_array_size_through_the_api(slurm_cluster, tmp_path, monkeypatch):
    """30 configurations, MaxArraySize 25: rung 0 is two arrays (offset 0 and 25); rung 1
    (10 trials) and rung 2 (3) one each; trial 2 wins."""
    monkeypatch.chdir(tmp_path)
    project(tmp_path, slurm_cluster)
    run = tmp_path / "run"
    artifacts = launch_slurm_sweep(write_sweep(tmp_path, xs=range(30)), submit=True, out=run)
    assert [(r.budget, r.trials) for r in artifacts.schedule.rungs] == [(1, 30), (3, 10), (9, 3)]
    assert [(c.offset, c.count) for c in artifacts.chunks] == [(0, 25), (25, 5)] and len(artifacts.job_ids) == 2
    assert len(artifacts.promote_job_ids) == 1 and artifacts.submitted
    from nexa_ops import proc

    calls = []
    real = proc.run
    monkeypatch.setattr(proc, "run", lambda argv, *a, **k: calls.append(list(argv)) or real(argv, *a, **k))
    st = nexa_ops.wait(run, poll=1, timeout=240)
    # Every look asked Slurm one squeue call, the promotion jobs' states included: no scontrol.
    assert calls and {c[0] for c in calls} == {"squeue"}, calls
    assert st.schedule.state == "finished" and st.schedule.winner == 2
    assert [r.trials for r in st.schedule.rungs] == [list(range(30)), [0, 1, 2, 4, 5, 6, 7, 8, 9, 10], [1, 2, 4]]
    entries = read(run / "manifest.json")["rungs"]
    assert [len(e["job_ids"]) for e in entries] == [2, 1, 1]
    assert read(run / "rungs" / "1.json")["promoted"] == [2, 4, 1]
    assert counter(run, 2)["starts"] == [0, 1, 3]


def test_cancel_stops_promotion_and_resume_continues(slurm_cluster, tmp_path, nexa_cli):
    project(tmp_path, slurm_cluster)
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path)), "--submit", "--out", str(run), env={"HALVING_SLEEP": "2"})
    assert out.returncode == 0, out.stderr
    wait_for(lambda: len(list((run / "tasks").glob("*.end.json"))) >= 3, what="the first tasks of rung 0")
    entry = read(run / "manifest.json")["rungs"][0]
    cancelled = nexa_cli("cancel", str(run))
    assert cancelled.returncode == 0, cancelled.stderr
    assert entry["promote_job_id"] in cancelled.stdout and entry["job_ids"][0] in cancelled.stdout
    manifest = read(run / "manifest.json")
    assert manifest["cancelled"]["user"]
    wait_for(lambda: job_state(entry["promote_job_id"]) in ("CANCELLED", None), what="the promotion job to be cancelled")
    waited = nexa_cli("wait", str(run), "--poll", "0.5", "--timeout", "60")
    assert waited.returncode == 1 and "schedule cancelled" in waited.stderr and "nexa resume" in waited.stderr
    # a promotion job that would still run now sees the cancel: no decision, no next rung
    late = promote.advance(run, 0, by="a late promotion job")
    assert late.cancelled and not (run / "rungs" / "0.json").exists()
    assert [e["rung"] for e in read(run / "manifest.json")["rungs"]] == [0]
    st = json.loads(nexa_cli("status", str(run), "--json").stdout)
    assert st["schedule"]["state"] == "cancelled" and st["schedule"]["rung_status"][0]["state"] == "cancelled"
    done = {t["index"]: t for t in st["tasks"] if t["state"] == "COMPLETED"}
    assert 0 < len(done) < 8, st["tasks"]  # some finished before the cancel, some did not
    started = {i: read(run / "tasks" / f"{i}.start.json")["start"] for i in done}
    # resume: the tasks that did not complete run again, then the schedule goes on
    resumed = nexa_cli("resume", str(run), "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "task(s) submitted again" in resumed.stdout and "schedule finished: winner: trial 2" in resumed.stdout
    for index, when in started.items():
        assert read(run / "tasks" / f"{index}.start.json")["start"] == when, f"task {index} ran again"
    assert_the_expected_schedule(run)
    after = read(run / "manifest.json")
    assert after["cancelled"] is None and after["resumes"][0]["after"]["user"]
    assert entry["promote_job_id"] in after["rungs"][0]["earlier_promote_job_ids"]


def test_a_failed_promotion_job_is_reported_and_resume_continues(slurm_cluster, tmp_path, nexa_cli):
    project(tmp_path, slurm_cluster)
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path)), "--submit", "--out", str(run), env={"HALVING_SLEEP": "0.5"})
    assert out.returncode == 0, out.stderr
    script = run / "hv.sbatch"
    script.rename(run / "hv.sbatch.away")  # the promotion job cannot submit rung 1 with it gone
    waited = nexa_cli("wait", str(run), "--poll", "0.5", "--timeout", "120")
    assert waited.returncode == 1, waited.stdout + waited.stderr
    job = read(run / "manifest.json")["rungs"][0]["promote_job_id"]
    error = read(run / "rungs" / "0.error.json")
    assert error["job_id"] == job and error["rung"] == 0 and "sbatch" in error["error"]
    log = (run / "logs" / f"promote-0-{job}.out").read_text()
    assert "nexa promote: error: rung 0: sbatch" in log
    st = json.loads(nexa_cli("status", str(run), "--json").stdout)["schedule"]
    assert st["state"] == "failed" and f"promotion job {job} decided rung 0, then failed: sbatch" in st["message"]
    assert read(run / "rungs" / "0.json")["promoted"] == PROMOTED[0]  # decided before it failed
    (run / "hv.sbatch.away").rename(script)
    resumed = nexa_cli("resume", str(run), "--wait", "--project", str(tmp_path / "nexa.toml"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "rung 1: submitted job array" in resumed.stdout
    assert_the_expected_schedule(run)
    assert read(run / "manifest.json")["rungs"][1]["by"] == "nexa resume"


def test_status_reads_the_manifest_again_after_asking_slurm(slurm_cluster, tmp_path, monkeypatch):
    """A status that read the manifest just before a promotion job wrote the next rung, and
    asked Slurm just after that job ended, must not call the schedule failed."""
    monkeypatch.chdir(tmp_path)
    project(tmp_path, slurm_cluster)
    run = tmp_path / "run"
    launch_slurm_sweep(write_sweep(tmp_path), local=True, out=run)
    manifest = runs.read_manifest(run)
    manifest["backend"] = "slurm"  # as if on Slurm, with jobs Slurm has forgotten
    for k, entry in enumerate(manifest["rungs"]):
        entry.update(job_ids=[str(900000 + 2 * k)], promote_job_id=str(900001 + 2 * k))
    (run / "rungs" / "1.json").unlink()
    (run / "rungs" / "2.json").unlink()
    manifest["rungs"] = manifest["rungs"][:2]
    runs.write_manifest(run, manifest)
    schedule = search.Schedule.from_json(manifest["search"]["schedule"])
    stale = dict(manifest, rungs=manifest["rungs"][:1])  # read before rung 1 was recorded
    done = {i: "done" for i in range(27)}
    assert rungs.status(run, schedule, manifest, done).state == "failed"  # rung 1's promotion job is gone
    assert rungs.status(run, schedule, stale, done).state == "running"  # not on a stale reading


@pytest.mark.parametrize("version", ["3.6", "3.13"])
def test_the_schedule_from_nexa_pyz(slurm_cluster, nexa_pyz, tmp_path, version):
    """The promotion jobs run from nexa.pyz/site-packages with `python -S`, on the compute
    nodes' python3 3.6 (RHEL 8's: the dataclasses backport inside the zipapp) and on 3.13."""
    python = require_python(version)
    work = tmp_path / "cluster home"
    work.mkdir()
    pyz = shutil.copy(nexa_pyz, work / "nexa.pyz")
    node_bin = tmp_path / "bin"
    node_bin.mkdir()
    os.symlink(python, str(node_bin / "python3"))
    cluster = f'pyz_path = "{pyz}"\nmax_array_size = {slurm_cluster.max_array_size}\n'
    cluster += f'python = "{python}"\n' if version != "3.6" else ""  # 3.6: the python3 on PATH
    (work / "nexa.toml").write_text("[cluster]\n" + cluster)
    write_sweep(work)
    (tmp_path / "home").mkdir()
    env = clean_env(tmp_path / "home", tmp_path)
    env["PATH"] = f"{node_bin}:{env['PATH']}"  # sbatch hands the submitting shell's PATH to the jobs
    out = subprocess.run(
        [python, str(pyz), "sweep", "--config", "sweep.toml", "--submit", "--wait", "--out", "run"],
        cwd=str(work),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    run = work / "run"
    assert f"{pyz}/site-packages" in (run / "hv.promote.sbatch").read_text()
    assert_the_expected_schedule(run)
    for entry in read(run / "manifest.json")["rungs"]:
        log = (run / "logs" / f"promote-{entry['rung']}-{entry['promote_job_id']}.out").read_text()
        assert log.startswith(f"rung {entry['rung']}: "), log


def test_a_promotion_job_slurm_would_refuse_submits_nothing(slurm_cluster, tmp_path, nexa_cli):
    project(tmp_path, slurm_cluster)
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path, search='promote_partition = "nope"')), "--submit", "--out", str(run))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("nexa: error: sbatch exited with 1: invalid partition specified: nope")
    assert not (run / "manifest.json").exists() and not (tmp_path / "runs" / "manifests").exists()


def test_rung_0_waits_for_its_upstream_on_slurm(slurm_cluster, tmp_path, monkeypatch):
    """`--after` a run: rung 0 is held by Slurm until the upstream's task has ended, and the
    schedule then runs to its winner as any other."""
    monkeypatch.chdir(tmp_path)
    project(tmp_path, slurm_cluster)
    (tmp_path / "up.toml").write_text(
        f'name = "up"\ncommand = [{json.dumps(sys.executable)}, "-c", "import time; time.sleep(3)"]\n[grid]\ni = [0]\n'
        '[resources]\ntime = "00:05:00"\n'
    )
    up = launch_slurm_sweep(tmp_path / "up.toml", submit=True, out=tmp_path / "up")
    run = tmp_path / "run"
    artifacts = launch_slurm_sweep(write_sweep(tmp_path), submit=True, out=run, after=str(up.run_dir))
    manifest = read(run / "manifest.json")
    assert manifest["chunks"][0]["dependency"] == f"afterok:{up.job_ids[0]}" and manifest["after"][0]["run_id"] == up.run_id
    assert artifacts.schedule is not None
    st = nexa_ops.wait(run, poll=1, timeout=240)
    assert st.schedule.state == "finished" and st.schedule.winner == 2
    upstream_end = read(up.run_dir / "tasks" / "0.end.json")["end"]
    starts = [read(run / "tasks" / f"{i}.start.json")["start"] for i in range(9)]
    assert min(starts) >= upstream_end  # no rung-0 task started before the upstream had ended
