"""The ``nexa`` program: ``--config FILE`` names the project file for every task without a
``--config`` of its own, wherever it stands on the command line."""

import subprocess
import sys

import pytest

from nexa_ops.cli import hoist_project_flag, ns
from tests.conftest import ROOT

# Every task that reads nexa.toml and has no --config of its own, with what it needs to get
# as far as loading it.
PROJECT_TASKS = [
    ["build-image", "light"],
    ["cancel"],
    ["gpu-exporter"],
    ["logs"],
    ["monitor-config"],
    ["resubmit", "--failed"],
    ["run-container", "light"],
    ["status"],
    ["sync"],
    ["teardown", "--campaign", "exp1"],
    ["wait"],
    ["cost.reconcile"],
    ["cost.report"],
]


@pytest.fixture
def bad_project(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[cluster]\npartiton = "gpu"\n')
    return path


@pytest.mark.parametrize("task", PROJECT_TASKS, ids=lambda t: t[0])
@pytest.mark.parametrize("where", ["after", "before", "equals"])
def test_config_names_the_project_file(nexa_cli, bad_project, task, where):
    if where == "after":
        argv = [*task, "--config", str(bad_project)]
    elif where == "before":
        argv = ["--config", str(bad_project), *task]
    else:
        argv = [task[0], f"--config={bad_project}", *task[1:]]
    out = nexa_cli(*argv)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr == f"nexa: error: {bad_project}: cluster.partiton: unknown key (did you mean 'partition'?)\n"


def test_a_run_word_after_the_config_flag_is_still_the_run(nexa_cli, tmp_path):
    (tmp_path / "p.toml").write_text('[cluster]\nruns_dir = "elsewhere"\n')
    out = nexa_cli("status", "--config", str(tmp_path / "p.toml"), "no-such-run")
    assert out.returncode == 2 and "no-such-run" in out.stderr and "elsewhere" in out.stderr, out.stderr


def test_project_flag_wins_over_config(nexa_cli, tmp_path, bad_project):
    (tmp_path / "good.toml").write_text("[cluster]\n")
    out = nexa_cli("monitor-config", "--config", str(bad_project), "--project", str(tmp_path / "good.toml"),
                   "--target", "localhost", "--out", str(tmp_path / "mon"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mon" / "prometheus.yml").is_file()


def test_sweep_keeps_its_own_config_for_the_sweep_file(nexa_cli, tmp_path, bad_project):
    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "s"\ncommand = ["true"]\n[grid]\nx = [1]\n')
    out = nexa_cli("--config", str(bad_project), "sweep", "--config", str(sweep))
    assert out.returncode == 2 and str(bad_project) in out.stderr  # the project file, checked first
    out = nexa_cli("sweep", "--config", str(sweep), "--dry-run")
    assert out.returncode == 0, out.stderr


def test_help_texts_survive_the_flag_lookup(nexa_cli):
    out = nexa_cli("teardown", "--help")
    assert "Campaign to tear down. Required." in out.stdout
    out = nexa_cli("--help")
    assert "Project file (nexa.toml) for every command" in out.stdout


def test_hoisting_leaves_task_flags_and_the_command_alone():
    assert hoist_project_flag(["nexa", "logs", "-f", "p.toml"], ns) == ["nexa", "logs", "-f", "p.toml"]  # logs' own -f (--project)
    assert hoist_project_flag(["nexa", "status", "--config", "p.toml", "r"], ns) == ["nexa", "--config", "p.toml", "status", "r"]
    assert hoist_project_flag(["nexa", "help", "-f", "p.toml", "sweep"], ns) == ["nexa", "-f", "p.toml", "help", "sweep"]
    argv = ["nexa", "launch", "--", "python", "train.py", "--config", "model.yaml"]
    assert hoist_project_flag(argv, ns) == argv  # the training command's own --config
    argv = ["nexa", "sweep", "--config", "s.toml"]
    assert hoist_project_flag(argv, ns) == argv


@pytest.mark.parametrize("program", [["-m", "nexa_ops"], ["-m", "invoke", "-r", str(ROOT)]], ids=["nexa", "inv"])
def test_errors_end_as_one_line_and_their_exit_code(tmp_path, program):
    """The program maps errors to exit codes once (cli.NexaExecutor), for nexa and inv alike."""
    cases = [(["sweep", "--config", "nope.toml"], 2, "nexa: error: nope.toml: file not found"), (["status"], 2, "nexa: error: no runs in")]
    for argv, code, message in cases:
        proc = subprocess.run([sys.executable, *program, *argv], cwd=str(tmp_path), capture_output=True, text=True)
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
