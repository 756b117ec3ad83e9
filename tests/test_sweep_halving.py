"""Successive halving without a cluster: the plan (every rung's tasks, the two scripts), the
whole schedule with --local (the CLI and the API), an interrupted local run resumed, the
decision written once, and the promotion job's imports (the standard library only).

The trial program (tests/data/halving_trial.py) reports val_loss = (x - 3)^2 + 1/epochs and
keeps a counter in $NEXA_TRIAL_DIR; x = 3, the best configuration, fails. With x = 0..8,
eta 3 and epochs 1..9: rung 0 promotes 2, 4, 1 (2 and 4 tie, and so do 1 and 5: the lower
configuration index wins), rung 1 promotes 2 (tied with 4), and trial 2 wins at epochs = 9.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import nexa_ops
from nexa_ops import launch_slurm_sweep, runs
from nexa_ops.resources import package_root
from nexa_ops.sweep import promote, rungs
from nexa_ops.sweep.script import PROMOTE_STUB
from tests.conftest import ROOT, require_tool

TRIAL = ROOT / "tests" / "data" / "halving_trial.py"
PROMOTED = [[2, 4, 1], [2], []]


def write_sweep(folder, xs=range(9), resources="", search="", name="hv"):
    lines = [
        f'name = "{name}"',
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(TRIAL))}]",
        "[grid]",
        f"x = {json.dumps(list(xs))}",
        "[resources]",
        'time = "00:05:00"',
        resources,
        "[search]",
        'method = "halving"',
        'metric = "val_loss"',
        "eta = 3",
        search,
        "[search.budget]",
        'param = "epochs"',
        "min = 1",
        "max = 9",
    ]
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def counter(run, trial):
    path = run / "trials" / str(trial) / "counter.json"
    return read(path) if path.exists() else None


def assert_the_expected_schedule(run):
    """Rungs of 9, 3 and 1 tasks; the right trials promoted; each promoted trial resumed."""
    manifest = read(run / "manifest.json")
    assert [(e["rung"], e["budget"], e["trials"]) for e in manifest["rungs"]] == [(0, 1, list(range(9))), (1, 3, [1, 2, 4]), (2, 9, [2])]
    decisions = [read(run / "rungs" / f"{k}.json") for k in range(3)]
    assert [d["promoted"] for d in decisions] == PROMOTED
    assert decisions[2]["winner"] == 2 and decisions[2]["final"]
    failed = decisions[0]["trials"][3]
    assert failed["state"] == "FAILED" and not failed["promoted"] and "never promoted" in failed["why"]
    ran = sorted(int(p.name.split(".")[0]) for p in (run / "tasks").glob("*.end.json"))
    assert ran == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 20]  # task = rung x 9 + trial
    # the counter proves the resume: trial 2 started rung 1 at epoch 1 and rung 2 at epoch 3
    assert counter(run, 2) == {"epochs_done": 9, "starts": [0, 1, 3], "rungs": [0, 1, 2], "trial": "2"}
    assert counter(run, 4)["starts"] == [0, 1] and counter(run, 1)["rungs"] == [0, 1]
    assert counter(run, 5)["rungs"] == [0] and counter(run, 3) is None
    # each rung reports in its own metrics file: the last value is the rung's
    last = [json.loads(line) for line in (run / "metrics" / "20.jsonl").read_text().splitlines()]
    assert [m["step"] for m in last] == [3, 4, 5, 6, 7, 8] and last[-1]["val_loss"] == pytest.approx(1 + 1 / 9)


# --- the plan --------------------------------------------------------------------------------


def test_the_plan_has_every_rung_and_both_scripts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, search='promote_partition = "tiny"', resources='partition = "gpu"\naccount = "ml"\nmax_parallel = 4')
    artifacts = launch_slurm_sweep(path, out=tmp_path / "run")
    schedule = artifacts.schedule
    assert [(r.rung, r.budget, r.trials) for r in schedule.rungs] == [(0, 1, 9), (1, 3, 3), (2, 9, 1)]
    assert len(artifacts.tasks) == 27 and not artifacts.submitted
    spec = read(tmp_path / "run" / "spec.json")
    assert spec["search"] == schedule.as_json() and spec["count"] == 27
    task = spec["tasks"][13]
    assert task["params"] == {"x": 4, "epochs": 3} and task["argv"][-2:] == ["--x=4", "--epochs=3"]
    array, promoter = (p.read_text() for p in artifacts.script_paths)
    assert "export NEXA_RUNG=$((index / 9)) NEXA_TRIAL_ID=$((index % 9))" in array
    assert 'export NEXA_TRIAL_DIR="$run_dir/trials/$NEXA_TRIAL_ID"' in array
    for line in ("--job-name=hv.promote", "--partition=tiny", "--account=ml", "--cpus-per-task=1", "--time=00:10:00", "--nodes=1"):
        assert f"#SBATCH {line}\n" in promoter
    assert "--array" not in promoter and "--gpus" not in promoter
    assert "from nexa_ops.sweep.promote import main" in promoter and f"--run {tmp_path / 'run'}" in promoter
    # the costs: the schedule, beside the full grid at epochs = 9
    assert artifacts.cost.tasks == 13 and artifacts.schedule_cost.full.tasks == 9
    assert schedule.budget_units == 27 and schedule.full_units == 81
    # the worker runs task 13 with its rung's argv
    worker = [sys.executable, "-m", "nexa_ops", "worker", "--spec", str(tmp_path / "run" / "spec.json"), "-t", "13", "-n"]
    out = subprocess.run(worker, capture_output=True, text=True)
    assert json.loads(out.stdout)[-2:] == ["--x=4", "--epochs=3"]


def test_the_scripts_are_shellcheck_clean(tmp_path, monkeypatch):
    require_tool("shellcheck")
    monkeypatch.chdir(tmp_path)
    artifacts = launch_slurm_sweep(write_sweep(tmp_path), out=tmp_path / "run")
    for script in artifacts.script_paths:
        check = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


def test_planning_without_submitting_shows_rung_0(tmp_path, nexa_cli):
    path = write_sweep(tmp_path)
    out = nexa_cli("sweep", "--config", str(path), "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "9 configuration(s), successive halving in 3 rungs (13 tasks at most)" in out.stdout
    assert "Full grid at epochs=9: 9 task(s), 81 units" in out.stdout and "Promotion script:" in out.stdout
    st = nexa_cli("status", str(tmp_path / "run"), "--json")
    assert [t["index"] for t in json.loads(st.stdout)["tasks"]] == list(range(9))


def test_cost_estimate_prints_the_schedule_beside_the_full_grid(tmp_path, nexa_cli):
    path = write_sweep(tmp_path, resources='gpus_per_node = 1\ngpu_type = "H100"\nestimated_hours = 9')
    out = nexa_cli("cost", "--config", str(path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Successive halving: 9 configuration(s), eta 3, epochs 1 -> 9, by val_loss (min)"
    assert "Full grid at epochs=9: 9 task(s), 81 units, 81 GPU-hours" in out.stdout and "(33% of it, in epochs)" in out.stdout
    assert "13 task(s) x 1 node(s) x 1 GPU(s) x 2.07692 h (estimated_hours x epochs/9, mean over 3 rungs) = 27.00 GPU-hours" in out.stdout
    doc = json.loads(nexa_cli("cost", "--config", str(path), "--json").stdout)
    assert doc["gpu_hours"] == 27.0 and doc["tasks"] == 13
    assert [r["gpu_hours"] for r in doc["halving"]["rungs"]] == [9.0, 9.0, 9.0] and doc["halving"]["full_grid"]["gpu_hours"] == 81.0
    # with --tasks it is priced as plain tasks, as for any sweep
    plain = json.loads(nexa_cli("cost", "--config", str(path), "--tasks", "2", "--json").stdout)
    assert plain["tasks"] == 2 and "halving" not in plain
    assert nexa_ops.estimate_cost(path).gpu_hours == pytest.approx(27.0)


def test_dry_run_prints_rung_0_and_its_promotion_job(tmp_path, nexa_cli):
    (tmp_path / "nexa.toml").write_text("[cluster]\nmax_array_size = 4\n")
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path)), "--submit", "--dry-run", "--out", str(run))
    assert out.returncode == 0, out.stderr
    *lines, last = out.stdout.splitlines()[-5:]
    assert last == "Dry run: nothing written, nothing submitted."
    assert lines[:3] == [f"sbatch --parsable --array={a} {run}/hv.sbatch {o}" for a, o in (("0-3", 0), ("0-3", 4), ("0", 8))]
    promoter = f"--output={run}/logs/promote-0-%j.out {run}/hv.promote.sbatch 0"
    assert lines[3] == f"sbatch --parsable --dependency=afterany:DRYRUN:DRYRUN:DRYRUN {promoter}"
    assert not (run / "manifest.json").exists() and not (tmp_path / "runs" / "manifests").exists()


def test_max_cost_covers_the_whole_schedule(tmp_path, nexa_cli):
    path = write_sweep(tmp_path, resources='gpus_per_node = 1\ngpu_type = "H100"\nestimated_hours = 9')
    out = nexa_cli("sweep", "--config", str(path), "--submit", "--max-cost", "50", "--out", str(tmp_path / "run"))
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert "estimated cost $88.83 is above --max-cost $50.00 (13 task(s)" in out.stderr and "nothing submitted" in out.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


# --- the whole schedule, here -------------------------------------------------------------------


def test_local_halving_from_the_command_line(tmp_path, nexa_cli):
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path)), "--local", "--out", str(run))
    assert out.returncode == 0, out.stdout + out.stderr
    assert_the_expected_schedule(run)
    assert "rung 0 (epochs=1): promoted 3 of 8 with val_loss: 2, 4, 1" in out.stdout
    assert f"{run.name}: winner: trial 2 (val_loss = 1.11111) at epochs=9" in out.stdout
    # results: one row per trial with its highest rung, budget and metric, and the winner
    doc = json.loads(nexa_cli("results", str(run), "--format", "json").stdout)
    assert doc["metric"] == "val_loss" and doc["mode"] == "min"
    assert [(r["index"], r["rung"], r["params"]["epochs"]) for r in doc["rows"][:3]] == [(2, 2, 9), (4, 1, 3), (1, 1, 3)]
    assert len(doc["rows"]) == 9 and doc["rows"][-1]["index"] == 3 and doc["rows"][-1]["state"] == "FAILED"
    assert doc["best"]["index"] == 2 and doc["best"]["params"] == {"x": 2, "epochs": 9}
    table = nexa_cli("results", str(run)).stdout
    assert "best: trial 2 at rung 2 (x=2, epochs=9): val_loss = 1.111 (COMPLETED)" in table
    # status: per rung, tasks by state and the decision made
    st = json.loads(nexa_cli("status", str(run), "--json").stdout)
    assert st["finished"] and st["schedule"]["state"] == "finished" and st["schedule"]["winner"] == 2
    assert [r["buckets"] for r in st["schedule"]["rung_status"]] == [
        {"pending": 0, "running": 0, "done": 8, "failed": 1},
        {"pending": 0, "running": 0, "done": 3, "failed": 0},
        {"pending": 0, "running": 0, "done": 1, "failed": 0},
    ]
    text = nexa_cli("status", str(run)).stdout
    assert "promoted 3 of 8 with val_loss: 2, 4, 1" in text and "winner: trial 2" in text
    # nexa resume: nothing left to do
    again = nexa_cli("resume", str(run))
    assert again.returncode == 0 and "the schedule has ended: winner: trial 2" in again.stdout


def test_local_halving_through_the_api(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    artifacts = launch_slurm_sweep(write_sweep(tmp_path), local=True, out=tmp_path / "run")
    assert [d.promoted for d in artifacts.decisions] == PROMOTED and artifacts.decisions[-1].winner == 2
    assert [r.index for r in artifacts.local_results] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 20]
    assert_the_expected_schedule(tmp_path / "run")
    best = nexa_ops.best_config(tmp_path / "run")
    assert (best.index, best.params, best.metric) == (2, {"x": 2, "epochs": 9}, "val_loss")
    st = nexa_ops.status(tmp_path / "run")
    assert st.schedule.state == "finished" and st.schedule.winner == 2 and [t.index for t in st.tasks][-1] == 20
    cost = read(tmp_path / "runs" / "manifests" / "cost_run.json")
    assert cost["status"] == "failed" and cost["tasks"] == 13 and cost["tasks_ok"] == 12  # trial 3 failed


def test_a_schedule_without_any_qualifying_trial_fails(tmp_path, nexa_cli):
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path, xs=[3, 3.0])), "--local", "--out", str(run))
    assert out.returncode == 1
    assert "the schedule ended without a winner: stopped: no trial of 2 completed with val_loss" in out.stderr
    assert read(run / "rungs" / "0.json")["final"] and not (run / "rungs" / "1.json").exists()
    assert json.loads(nexa_cli("status", str(run), "--json").stdout)["schedule"]["state"] == "failed"


def test_an_interrupted_local_run_resumes_without_running_finished_tasks(tmp_path, nexa_cli):
    run = tmp_path / "run"
    path = write_sweep(tmp_path, resources="max_parallel = 2")
    env = dict(os.environ, HALVING_SLEEP="0.4")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexa_ops", "sweep", "--config", str(path), "--local", "--out", str(run)],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(list((run / "tasks").glob("*.end.json"))) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "rung 0 never got going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "nexa: error: interrupted by SIGINT" in err and f"nexa resume {run}" in err
    manifest = read(run / "manifest.json")
    assert manifest["cancelled"]["by"] == "interrupted (Ctrl-C)" and not (run / "rungs" / "0.json").exists()
    finished = {int(p.name.split(".")[0]): read(p) for p in (run / "tasks").glob("*.end.json")}
    kept = {i: read(run / "tasks" / f"{i}.start.json")["start"] for i, end in finished.items() if end["exit_code"] == 0}
    assert kept, finished
    interrupted = {i: end for i, end in finished.items() if end.get("state") == "INTERRUPTED"}
    assert interrupted, finished  # Ctrl-C came while tasks ran (max_parallel 2, 0.4 s each)
    st = json.loads(nexa_cli("status", str(run), "--json").stdout)["schedule"]
    assert st["state"] == "cancelled"
    out = nexa_cli("resume", str(run))
    assert out.returncode == 0, out.stderr
    assert_the_expected_schedule(run)
    for index, started in kept.items():  # not run again
        assert read(run / "tasks" / f"{index}.start.json")["start"] == started
    for index, end in interrupted.items():  # run again; the interrupted attempt is kept, and billed
        assert read(run / "tasks" / "attempts" / f"{index}.local.1.end.json") == end
        assert read(run / "tasks" / f"{index}.end.json")["exit_code"] == 0
    after = read(run / "manifest.json")
    assert after["cancelled"] is None and after["resumes"][0]["rung"] == 0 and "after" in after["resumes"][0]


# --- the promotion step ------------------------------------------------------------------------


def promotion_job(run, *args):
    """What the promotion script runs, here: the stub with ``python -S`` from the package folder."""
    argv = [sys.executable, "-S", "-c", PROMOTE_STUB, str(package_root()), "--run", str(run), *args]
    return subprocess.run(argv, capture_output=True, text=True)


def test_a_decision_is_made_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launch_slurm_sweep(write_sweep(tmp_path), local=True, out=tmp_path / "run")
    run = tmp_path / "run"
    before = (run / "rungs" / "0.json").read_bytes()
    # the metrics change afterwards: the decision on disk is still the decision
    (run / "metrics" / "5.jsonl").write_text('{"step": 0, "val_loss": -100}\n')
    step = promote.advance(run, 0, by="again")
    assert step.decision.promoted == [2, 4, 1] and step.next_job_ids is None and step.promote_job_id is None
    assert (run / "rungs" / "0.json").read_bytes() == before
    # and the promotion job's own entry point says so (a local run submits nothing)
    out = promotion_job(run, "--rung", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("rung 0: promoted 3 of 8 with val_loss: 2, 4, 1\n")
    assert (run / "rungs" / "0.json").read_bytes() == before


def test_a_failed_promotion_leaves_its_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launch_slurm_sweep(write_sweep(tmp_path), out=tmp_path / "run")  # planned: no manifest
    run = tmp_path / "run"
    out = promotion_job(run, "--rung", "0")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("nexa promote: error: rung 0: ") and "manifest.json" in out.stderr
    record = read(run / "rungs" / "0.error.json")
    assert record["rung"] == 0 and "manifest.json" in record["error"] and record["at"]
    bad = promotion_job(run)
    assert bad.returncode == 2 and "--run DIR and --rung K are required" in bad.stderr


def test_a_cancelled_run_is_not_promoted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launch_slurm_sweep(write_sweep(tmp_path), local=True, out=tmp_path / "run")
    run = tmp_path / "run"
    (run / "rungs" / "1.json").unlink()
    with rungs.locked(run):
        manifest = runs.read_manifest(run)
        manifest["cancelled"] = {"at": "now", "user": "test"}
        runs.write_manifest(run, manifest)
    step = promote.advance(run, 1, by="late promotion job")
    assert step.cancelled and step.decision is None and not (run / "rungs" / "1.json").exists()
    assert "cancelled: no decision, no next rung" in step.text()


def test_the_promotion_job_imports_only_the_standard_library(tmp_path):
    """What the stub loads on a compute node: nexa_ops and the standard library, no invoke,
    tabulate or TOML parser (nexa.toml is never read there)."""
    body = "from nexa_ops.sweep.promote import main\nsys.exit(main())"
    probe = PROMOTE_STUB.replace(body, "import nexa_ops.sweep.promote, json\nprint(json.dumps(sorted(sys.modules)))")
    assert probe != PROMOTE_STUB
    out = subprocess.run([sys.executable, "-S", "-c", probe, str(package_root())], capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert "nexa_ops" in loaded
    foreign = sorted(n for n in loaded - {"nexa_ops", "__main__"} if n not in sys.stdlib_module_names)
    assert foreign == [] and not loaded & {"invoke", "tabulate", "tomli", "tomllib"}


def test_resume_refuses_a_plain_sweep(tmp_path, nexa_cli):
    (tmp_path / "plain.toml").write_text(f'name = "p"\ncommand = [{json.dumps(sys.executable)}, "-c", "pass"]\n[grid]\nx = [1]\n')
    assert nexa_cli("sweep", "--config", "plain.toml", "--local", "--out", "run").returncode == 0
    out = nexa_cli("resume", "run")
    assert out.returncode == 2
    expected = "run: not a halving run (its sweep file has no [search]); for a plain sweep use nexa resubmit --failed"
    assert out.stderr == f"nexa: error: {expected}\n"



# --- with main's features: the env key, --after, dry runs ----------------------------------------


def test_the_array_script_keeps_the_upstream_and_env_lines_and_adds_the_trial_ones(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from nexa_ops.config import load_config, load_sweep
    from nexa_ops.sweep.plan import _write_plan

    require_tool("shellcheck")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HV_TOKEN", "s3cret")
    path = write_sweep(tmp_path)
    path.write_text('env = ["HV_TOKEN"]\n' + path.read_text())
    artifacts = launch_slurm_sweep(path, out=tmp_path / "run")
    text = artifacts.script_paths[0].read_text()
    # sweep.env is sourced, then the trial's variables are set, before the task runs
    assert text.index(". \"$env_file\"") < text.index("export NEXA_RUNG=") < text.index('tasks="$run_dir/tasks"')
    assert "# no upstream run (--after)" in text and (tmp_path / "run" / "sweep.env").read_text().count("s3cret") == 1
    # a corr upstream: every rung's task of trial i gets the upstream's task i folder
    upstream = SimpleNamespace(run_dir=tmp_path / "up", kind="corr")
    again = _write_plan(
        load_sweep(path), load_config(), artifacts.tasks, tmp_path / "run2", artifacts.cost, tmp_path, [upstream], False, artifacts.schedule
    )
    text = again.script_paths[0].read_text()
    assert f"NEXA_UPSTREAM_TASK_DIR={tmp_path / 'up' / 'out'}/\"$((index % 9))\"" in text
    for script in again.script_paths:
        check = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


def test_a_dry_run_in_json_writes_nothing_and_lists_both_submissions(tmp_path, nexa_cli):
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path)), "--submit", "--dry-run", "--json", "--out", str(run))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["written"] is False and doc["tasks"] == 27 and doc["halving"]["schedule"]["n"] == 9
    rung0, promoter = doc["commands"]
    assert rung0[-2:] == [str(run / "hv.sbatch"), "0"] and "--array=0-8" in rung0
    assert promoter[-2:] == [str(run / "hv.promote.sbatch"), "0"] and promoter[2].startswith("--dependency=afterany:")
    assert not run.exists()
