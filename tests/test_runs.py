"""The run folder's shared pieces: the state vocabulary, a local run's runner, run prefixes."""

import json
import os
import subprocess
import sys

import pytest

from nexa_ops import pids, runs
from nexa_ops.config import load_config
from nexa_ops.errors import ConfigError

NOW = 1_800_000_000.0


def test_a_runner_recorded_state_wins_over_the_exit_code():
    assert runs.record_state({"exit_code": 130, "signals": "INT", "state": "INTERRUPTED"}) == "INTERRUPTED"
    assert runs.record_state({"exit_code": None, "state": "INTERRUPTED"}) == "INTERRUPTED"  # never started
    assert runs.record_state({"exit_code": 143, "signals": "TERM", "state": "CANCELLED"}) == "CANCELLED"
    assert runs.record_state({"exit_code": 0, "signals": "INT", "state": "INTERRUPTED"}) == "COMPLETED"  # it finished anyway
    assert runs.record_state({"exit_code": 3, "state": "RUNNING"}) == "FAILED"  # not a state a record may claim
    assert runs.bucket("INTERRUPTED") == "failed" and runs.is_final("INTERRUPTED")


def test_this_process_is_alive_and_an_ended_one_is_not():
    me = pids.identity()
    assert me["pid"] == os.getpid() and me["host"] == os.uname().nodename
    assert pids.alive(me["pid"], me["pid_start"], me["boot_id"])
    assert not pids.alive(me["pid"], (me["pid_start"] or 0) + 1)  # the same pid, another process
    assert not pids.alive(me["pid"], me["pid_start"], "another-boot")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pids.alive(child.pid)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    import time

    time.sleep(0.5)  # ended, not yet reaped: state Z
    assert not pids.alive(zombie.pid)
    zombie.wait()


def test_runner_state_from_the_manifest():
    assert runs.runner_state({}) is None
    assert runs.runner_state({"runner": runs.new_runner()}) == runs.RUNNER_ALIVE
    gone = dict(runs.new_runner(), pid_start=1)
    assert runs.runner_state({"runner": gone}) == runs.RUNNER_GONE
    assert runs.runner_state({"runner": dict(gone, host="elsewhere.example")}) == runs.RUNNER_ELSEWHERE
    assert runs.run_manifest_problem({"backend": "local", "runner": {"pid": "12"}}) == 'runner.pid must be an integer, got "12"'


def make(runs_dir, name):
    (runs_dir / name).mkdir(parents=True)
    (runs_dir / name / "manifest.json").write_text(json.dumps({"run_id": name, "backend": "local"}))


def test_a_unique_prefix_of_a_run_id_names_the_run(tmp_path):
    cfg = load_config(cwd=tmp_path)
    for name in ("lr-grid-20250101-000000-aaaa", "lr-grid-20250102-000000-bbbb", "bs-20250101-000000-cccc"):
        make(cfg.runs_dir, name)
    (cfg.runs_dir / "lr-not-a-run").mkdir()
    assert runs.resolve_run("bs", cfg).name == "bs-20250101-000000-cccc"
    assert runs.resolve_run("lr-grid-20250102", cfg).name == "lr-grid-20250102-000000-bbbb"
    with pytest.raises(ConfigError) as info:
        runs.resolve_run("lr-grid", cfg)
    assert str(info.value) == (
        f"lr-grid: ambiguous run prefix, 2 runs in {cfg.runs_dir} start with it: "
        "lr-grid-20250101-000000-aaaa, lr-grid-20250102-000000-bbbb"
    )
    assert info.value.exit_code == 2
    with pytest.raises(ConfigError, match="nope: not a run folder or a run id"):
        runs.resolve_run("nope", cfg)


def test_an_ambiguous_prefix_on_the_command_line_exits_2_listing_the_matches(tmp_path, nexa_cli):
    for name in ("a-1", "a-2"):
        make(tmp_path / "runs", name)
    out = nexa_cli("status", "a")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "a: ambiguous run prefix, 2 runs in" in out.stderr and "a-1, a-2" in out.stderr
    out = nexa_cli("status", "a-2", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["run_id"] == "a-2"


@pytest.mark.parametrize("name", ["spec.json", "spec.argv", "spec.nul", "s.sbatch"])
def test_a_deciding_file_others_may_write_is_foreign(tmp_path, name):
    """The array script reads spec.nul with bash, which cannot see mode bits: a (re)submission
    refuses a run whose spec.nul the group may write, as it does for the spec and scripts."""
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    for each in ("spec.json", "spec.argv", "spec.nul", "s.sbatch"):
        (run / each).write_text("x")
        (run / each).chmod(0o644)
    assert runs.foreign_problem(run) is None
    (run / name).chmod(0o664)
    problem = runs.foreign_problem(run)
    assert problem is not None and name in problem
