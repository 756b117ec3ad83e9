"""`nexa sweep` from the command line: planning, --local runs, and bad input."""

import json
import sys

import pytest

from tests.conftest import ROOT

PROBE = ROOT / "tests" / "data" / "argv_probe.py"
HOSTILE = ["a b", "it's", 'say "hi"', "$(touch pwned)", "x; rm -rf /", "ünïcødé ✓", "--leading-dash", "`id`", "*"]


def sweep_file(tmp_path, extra=""):
    text = f"""
name = "cli-test"
command = [{json.dumps(sys.executable)}, {json.dumps(str(PROBE))}]
[grid]
msg = {json.dumps(HOSTILE, ensure_ascii=False)}
n = [1, 2]
[[exclude]]
msg = "*"
n = 2
[resources]
max_parallel = 4
{extra}
"""
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_plan_only_writes_spec_and_script(nexa_cli, tmp_path):
    out = nexa_cli("sweep", "--config", str(sweep_file(tmp_path)), "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "17 task(s)" in out.stdout and "..." in out.stdout
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert spec["schema"] == 1 and spec["name"] == "cli-test" and spec["count"] == 17
    assert spec["tasks"][0]["argv"][-2:] == ["--msg=a b", "--n=1"]
    script = (tmp_path / "run" / "cli-test.sbatch").read_text()
    assert "#SBATCH --array=0-16%4" in script
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_local_run_passes_every_value_literally(nexa_cli, tmp_path):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    out = nexa_cli(
        "sweep", "--config", str(sweep_file(tmp_path)), "--local", "--out", str(tmp_path / "run"), env={"PROBE_DIR": str(probe_dir)}
    )
    assert out.returncode == 0, out.stderr
    assert "17 succeeded, 0 failed" in out.stdout
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    for task in spec["tasks"]:
        seen = json.loads((probe_dir / f"{task['index']}.json").read_text())
        assert seen["argv"] == task["argv"][2:]
        assert seen["cwd"] == str(tmp_path)
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "run" / "logs" / "local_0.out").exists()
    ends = json.loads((tmp_path / "run" / "tasks" / "16.end.json").read_text())
    assert ends["exit_code"] == 0


def test_local_failure_exits_non_zero_with_summary(nexa_cli, tmp_path):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    out = nexa_cli("sweep", "--config", str(sweep_file(tmp_path)), "--local", env={"PROBE_DIR": str(probe_dir), "PROBE_FAIL_TASKS": "3,5"})
    assert out.returncode == 1
    assert "15 succeeded, 2 failed" in out.stdout
    assert "2 of 17 task(s) failed" in out.stderr


def test_bad_sweep_exit_2_one_line_nothing_written(nexa_cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ncommand = ["p"]\n[grid]\nlr = [1]\n[resources]\ngpus = 2\n')
    out = nexa_cli("sweep", "--config", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip() == f"nexa: error: {bad}: resources.gpus: unknown key (did you mean 'gpus_per_node'?)"
    assert not (tmp_path / "runs").exists()


def test_bad_project_file_exit_2(nexa_cli, tmp_path):
    (tmp_path / "nexa.toml").write_text("[cluster]\nruns_dir = 5\n")
    out = nexa_cli("sweep", "--config", str(sweep_file(tmp_path)))
    assert out.returncode == 2
    assert "nexa.toml: cluster.runs_dir: expected a string, got integer 5" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_config_option(nexa_cli):
    out = nexa_cli("sweep")
    assert out.returncode == 2 and "--config FILE is required" in out.stderr


def test_bad_max_cost(nexa_cli, tmp_path):
    out = nexa_cli("sweep", "--config", str(sweep_file(tmp_path)), "--max-cost", "lots")
    assert out.returncode == 2 and "--max-cost: expected a number" in out.stderr


def test_help_lists_tasks_and_options(nexa_cli):
    out = nexa_cli("--help")
    assert out.returncode == 0 and "sweep" in out.stdout and "worker" in out.stdout
    out = nexa_cli("sweep", "--help")
    for option in ("--config", "--out", "--submit", "--local", "--max-cost", "--dry-run"):
        assert option in out.stdout


def test_output_into_a_closed_pipe_is_quiet(tmp_path):
    """`nexa ... | head -c 10`: no traceback when the reader leaves early."""
    import subprocess

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"schema": 1, "tasks": [{"index": 0, "params": {}, "argv": ["echo", "x" * 300_000]}]}))
    cmd = [sys.executable, "-m", "nexa_ops", "worker", "--spec", str(spec), "--task-id", "0", "--dry-run"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10) == b'["echo", "'
    proc.stdout.close()  # the reader leaves while nexa still has 300 kB to write
    err = proc.stderr.read().decode()
    assert proc.wait() == 141, err
    assert "Traceback" not in err and "Broken pipe" not in err


@pytest.mark.parametrize(
    "project, message",
    [
        ('[cost]\ncurrency = "EUR"\n', 'nexa.toml: cost.currency: expected "USD"'),
        ('[cost]\nrates = { a100 = 1.0 }\n', "nexa.toml: cost.rates.a100: GPU type 'a100' is ambiguous"),
        ('[cost]\nprices = "missing.toml"\n', "nexa.toml: cost.prices: price table"),
        ('[cluster]\nlog_dir = "afile"\n', "nexa.toml: cluster.log_dir: cannot make the log folder"),
        ('[cluster]\nruns_dir = "afile/runs"\n', "nexa.toml: cluster.runs_dir: cannot make a run folder"),
        ('[cluster]\nruns_dir = "new/runs"\nlog_dir = "afile"\n', "nexa.toml: cluster.log_dir: cannot make the log folder"),
    ],
)
def test_a_failed_plan_leaves_nothing_behind(nexa_cli, tmp_path, project, message):
    (tmp_path / "nexa.toml").write_text(project)
    (tmp_path / "afile").write_text("keep me")
    path = sweep_file(tmp_path, 'gpus_per_node = 1\ngpu_type = "H100-80GB"\ntime = "1:00:00"')
    before = sorted(p.name for p in tmp_path.iterdir())
    out = nexa_cli("sweep", "--config", str(path))
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, no new/, no run folder
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "afile"], "--out: cannot make the run folder afile: File exists"),
        (["--out", "afile/sub"], "--out: cannot make the run folder afile/sub: Not a directory"),
        (["--out", ""], "--out: expected a folder, got ''"),
        (["--max-cost", "nan"], "--max-cost: expected a finite number, got 'nan'"),
        (["--max-cost", "-1"], "--max-cost: expected a number >= 0, got '-1'"),
        (["--submit", "--dry-run", "--max-cost", "inf"], "--max-cost: expected a finite number, got 'inf'"),
    ],
)
def test_bad_options_are_refused_before_planning(nexa_cli, tmp_path, args, message):
    (tmp_path / "afile").write_text("keep me")
    path = sweep_file(tmp_path)
    out = nexa_cli("sweep", "--config", str(path), *args)
    assert out.returncode == 2 and f"nexa: error: {message}\n" == out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "sweep.toml"]


def test_usage_errors_are_one_line_with_exit_2(nexa_cli, tmp_path):
    for args, message in [
        (["sweep", "--config"], "nexa: error: sweep: --config needs a value\n"),
        (["no-such-task"], "nexa: error: unknown command 'no-such-task'; nexa --help lists them\n"),
        (["status", "--config="], "nexa: error: --config: expected a project file, got ''\n"),
        (["cost.report", "--budget", "nan"], "nexa: error: --budget: expected a finite number, got 'nan'\n"),
    ]:
        out = nexa_cli(*args)
        assert (out.returncode, out.stderr) == (2, message), args


def test_an_unusable_path_is_one_line_not_a_traceback(nexa_cli, tmp_path):
    (tmp_path / "afile").write_text("")
    out = nexa_cli("monitor-config", "--target", "gpu01", "--out", "afile/sub")
    assert out.returncode == 1 and out.stderr.startswith("nexa: error: ") and "Not a directory" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1


def test_the_quick_start_runs_the_example_sweep_end_to_end():
    """README's first Quick start command, as a new user runs it (the venv already exists)."""
    import subprocess

    out = subprocess.run(["bash", "bin/quickstart.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "6 succeeded, 0 failed" in out.stdout
    results = [line for line in out.stdout.splitlines() if line.startswith("task ") and ":" in line]
    assert len(results) == 6 and all("final_loss=" in line for line in results)
    # then which configuration won: the tasks' metrics ranked, and drawn
    assert "Top 5 by loss (last, min)" in out.stdout and out.stdout.count("best: task ") == 2
    assert (ROOT / "runs" / "quickstart" / "results.svg").read_text().startswith("<svg")
