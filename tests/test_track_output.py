"""What ``nexa status`` prints (commands/track.py render_status, pure) and its options
--state, --summary and --all, down to the quick-start run that used to be 169 columns wide."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nexa_ops.commands.common import show_path, show_value
from nexa_ops.commands.track import SUMMARY_ABOVE, index_ranges, render_status
from nexa_ops.track import RunStatus, TaskRow
from tests.conftest import ROOT

RUN_DIR = Path("/home/me/proj/runs/demo-1")


def run_status(states, keys=("lr",), logs=None, **task_fields):
    tasks = []
    for i, state in enumerate(states):
        log = logs[i] if logs else str(RUN_DIR / "logs" / f"524_{i}.out")
        code = 0 if state == "COMPLETED" else 1
        tasks.append(TaskRow(i, state, exit_code=code, log=log, params={"lr": 0.1 * (i % 3 + 1)}, **task_fields))
    return RunStatus("demo-1", RUN_DIR, "demo", "slurm", ["524"], list(keys), tasks)


@pytest.mark.parametrize(
    "value, shown",
    [
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (3.0, "3.0"),  # stays visibly a float, as the program gets it
        (0.30000000000000004, "0.3"),
        (0.18551069900259948, "0.1855"),  # a random draw: 4 significant digits
        (123456.789, "1.235e+05"),
        (True, "true"),
        (32, "32"),
        ("adam", "adam"),
        ("a" * 30, "a" * 21 + "..."),
    ],
)
def test_values_are_shown_as_in_the_sweep_file_and_long_ones_cut(value, shown):
    assert show_value(value) == shown


def test_paths_are_relative_to_the_project_root():
    assert show_path("/home/me/proj/runs/x/logs/1.out", "/home/me/proj") == "runs/x/logs/1.out"
    assert show_path("/scratch/me/x.out", "/home/me/proj") == "/scratch/me/x.out"
    assert show_path("rel/x.out", "/home/me/proj") == "rel/x.out"
    assert show_path(None, "/home/me/proj") == ""


def test_empty_columns_are_left_out_and_the_log_folder_named_once():
    text = render_status(run_status(["COMPLETED", "FAILED"]), root="/home/me/proj")
    head = text.splitlines()[1].split()
    assert head == ["task", "lr", "state", "exit"]  # no elapsed, node, restarts, reason, log: none has one
    assert "logs in runs/demo-1/logs/; nexa logs -t N prints one" in text  # the latest run
    assert "/home/me/proj" not in text
    named = render_status(run_status(["COMPLETED", "FAILED"]), root="/home/me/proj", ref="demo-1")
    assert "logs in runs/demo-1/logs/; nexa logs demo-1 -t N prints one" in named


def test_logs_in_different_folders_get_a_column():
    logs = [str(RUN_DIR / "logs" / "a.out"), "/home/me/proj/elsewhere/b.out"]
    text = render_status(run_status(["COMPLETED", "FAILED"], logs=logs), root="/home/me/proj")
    assert text.splitlines()[1].split()[-1] == "log"
    assert "runs/demo-1/logs/a.out" in text and "elsewhere/b.out" in text and "logs:" not in text


def test_state_picks_buckets_or_exact_states():
    from nexa_ops.results.load import parse_states

    st = run_status(["COMPLETED", "FAILED", "TIMEOUT", "RUNNING", "PENDING"])
    shown = lambda text: [int(line.split()[0]) for line in text.splitlines()[3:] if "|" not in line and line.split()[0].isdigit()]  # noqa: E731
    assert shown(render_status(st, states=parse_states("failed"))) == [1, 2]
    assert shown(render_status(st, states=parse_states("timeout"))) == [2]
    assert shown(render_status(st, states=parse_states("Running,pending"))) == [3, 4]
    none = render_status(st, states=parse_states("cancelled"))
    assert "(no task in the states asked for)" in none
    assert none.splitlines()[-1].endswith("(5 tasks)")  # the counts are the whole run's


def test_big_runs_get_one_line_per_state_with_a_hint():
    states = ["COMPLETED"] * 40 + ["FAILED"] * 3 + ["RUNNING"] * 10 + ["PENDING"] * 7
    st = run_status(states)
    text = render_status(st)
    lines = text.splitlines()
    assert lines[1].split() == ["state", "tasks", "which"]
    assert lines[3].split() == ["PENDING", "7", "53-59"]
    assert lines[4].split() == ["RUNNING", "10", "43-52"]
    assert lines[5].split() == ["COMPLETED", "40", "0-39"]
    assert lines[6].split() == ["FAILED", "3", "40-42"]
    assert lines[-1] == "(60 tasks: one line per state; --all for every task, --state failed for the failed ones)"
    assert len(render_status(st, summary=False).splitlines()) == 60 + 5  # --all
    assert len(states) > SUMMARY_ABOVE and "which" not in render_status(st, states={"failed"})  # 3 failed: a table
    small = render_status(run_status(["COMPLETED", "FAILED"]), summary=True)  # --summary
    assert small.splitlines()[1].split() == ["state", "tasks", "which"] and "--all" not in small


def test_index_ranges():
    assert index_ranges([5, 0, 1, 2, 7, 9, 10]) == "0-2, 5, 7, 9-10"
    long = index_ranges(list(range(0, 400, 2)), width=30)
    assert long.endswith(", ...") and len(long) <= 30


def test_state_option_on_the_command_line(nexa_cli, tmp_path):
    from tests.test_cli_usage import make_local_run

    make_local_run(tmp_path)
    out = nexa_cli("status", "--state", "failed", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [t["index"] for t in doc["tasks"]] == [1] and doc["counts"] == {"COMPLETED": 1, "FAILED": 1, "PENDING": 1}
    out = nexa_cli("status", "demo-1", "--state", "COMPLETED")
    assert out.returncode == 0 and "COMPLETED" in out.stdout.splitlines()[3] and len(out.stdout.splitlines()) == 6, out.stdout
    out = nexa_cli("status", "--state", "done,nope")
    assert (out.returncode, out.stderr.count("\n")) == (2, 1) and "--state: expected a task state" in out.stderr
    out = nexa_cli("status", "--summary", "-a")
    assert (out.returncode, out.stderr) == (2, "nexa: error: choose one of --summary and --all\n")


def test_the_quick_start_run_fits_80_columns():
    """Seen: `nexa status` of the quick-start run was 169 columns (long random floats,
    absolute log paths, empty columns)."""
    import os
    import shutil

    run = ROOT / "runs" / f"qs{os.getpid()}"  # where the quick start puts its run (runs/quickstart)
    nexa = [sys.executable, "-m", "nexa_ops"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # python3: the venv's, as quickstart.sh
    try:
        out = subprocess.run(nexa + ["sweep", "--config", "bin/quickstart/lr_grid.toml", "--local", "--out", str(run)], cwd=str(ROOT),
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        out = subprocess.run(nexa + ["status", str(run)], cwd=str(ROOT), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        params = json.loads((run / "spec.json").read_text())["tasks"][0]["params"]
    finally:
        shutil.rmtree(str(run), ignore_errors=True)
    assert max(len(line) for line in out.stdout.splitlines()) <= 80, out.stdout
    assert str(ROOT) not in out.stdout and f"logs in runs/{run.name}/logs/; nexa logs {run.name} -t N" in out.stdout
    assert "dropout" in out.stdout and show_value(params["dropout"]) in out.stdout.splitlines()[3]
