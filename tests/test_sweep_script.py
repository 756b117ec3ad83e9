"""Resources -> #SBATCH directives and the rendered array script."""

import shlex
import subprocess

import pytest

from nexa_ops.config import ClusterConfig, Resources
from nexa_ops.errors import ConfigError
from nexa_ops.sweep.script import render_array_script
from nexa_ops.tools.slurm import array_spec, directive_args, directives, log_path, script_directive
from tests.conftest import require_tool


def test_directives_from_resources():
    res = Resources(
        nodes=2,
        gpus_per_node=8,
        gpu_type="H100",
        cpus_per_task=16,
        mem="200G",
        time="04:00:00",
        partition="gpu",
        account="ml",
        extra=["--qos=high"],
    )
    lines = directives(res, job_name="lr-grid", array="0-9%4", output="/r/logs/%A_%a.out")
    assert lines == [
        "#SBATCH --job-name=lr-grid",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=ml",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gres=gpu:H100:8",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --mem=200G",
        "#SBATCH --time=04:00:00",
        "#SBATCH --array=0-9%4",
        "#SBATCH --output=/r/logs/%A_%a.out",
        "#SBATCH --qos=high",
    ]


def test_untyped_gpus_and_cluster_defaults():
    lines = directives(Resources(gpus_per_node=2), job_name="x", cluster=ClusterConfig(partition="p", account="a"))
    assert "#SBATCH --gpus-per-node=2" in lines
    assert "#SBATCH --partition=p" in lines and "#SBATCH --account=a" in lines
    assert not any("gres" in line for line in lines)


def test_array_spec_with_throttle():
    assert array_spec(10, 4) == "0-9%4"
    assert array_spec(1, None) == "0"
    assert array_spec(100000, None) == "0-99999"


def render(tmp_path, **kw):
    args = dict(
        name="t",
        res=Resources(max_parallel=3),
        cluster=ClusterConfig(),
        count=5,
        spec_path=str(tmp_path / "my run" / "spec.json"),
        run_dir=str(tmp_path / "my run"),
        log_dir=str(tmp_path / "my run" / "logs"),
        workdir=str(tmp_path),
        worker_path="/opt/nexa.pyz/site-packages",
    )
    args.update(kw)
    return render_array_script(**args)


def test_script_quotes_paths_and_throttles(tmp_path):
    text = render(tmp_path)
    assert "#SBATCH --array=0-4%3" in text
    assert f'#SBATCH --output="{tmp_path}/my run/logs/%A_%a.out"' in text
    assert shlex.quote(str(tmp_path / "my run" / "spec.json")) in text
    assert "python3 -S -c" in text


def test_script_is_valid_bash(tmp_path):
    require_tool("bash")
    path = tmp_path / "s.sbatch"
    path.write_text(render(tmp_path))
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


# --- #SBATCH quoting: every value is one argument, read back exactly as sbatch reads it ------

HOSTILE_VALUES = [
    'debug" --uid=0 "--export=ALL,LD_PRELOAD=/tmp/x.so',
    "debug' --uid=0 '--export=ALL",
    "debug --uid=0",
    "debug#--uid=0",
    "a # b",
    'back\\slash \\" both',
    "trailing\\",
    "ünïcødé ✓ 100% %A",
    "hetjob",
    ": colon",
    "",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_directive_value_is_one_argument_for_slurm(value):
    """``directive_args`` is sbatch 22.05's own tokenizer (get_argument in src/sbatch/opt.c)."""
    line = directives(Resources(extra=[f"--comment={value}"]), job_name="x")[-1]
    assert directive_args(line[len("#SBATCH") :]) == [f"--comment={value}"]
    assert script_directive(f"#!/bin/bash\n{line}\n", "comment") == value
    if value:
        line = directives(Resources(partition=value), job_name="x")[1]
        assert directive_args(line[len("#SBATCH") :]) == [f"--partition={value}"]


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "tab\t", "x\0", "esc\x1b[0m", "del\x7f"])
def test_control_characters_never_reach_a_script_line(value):
    with pytest.raises(ConfigError, match="control character"):
        directives(Resources(account=value), job_name="x")
    with pytest.raises(ConfigError, match="control character"):
        directives(Resources(extra=[f"--comment={value}"]), job_name="x")


def test_tokenizer_matches_sbatch_rules():
    assert directive_args(' --a=1 --b="x y" # --c=3') == ["--a=1", "--b=x y"]
    assert directive_args(" --a='it\"s' --b=\\#\\\\") == ['--a=it"s', "--b=#\\"]
    assert directive_args(' --a="x\\"y"') == ['--a=x"y']
    assert directive_args(' "" --uid=0') == []  # sbatch stops at an empty argument
    with pytest.raises(ValueError):
        directive_args(' --a="open')


def test_script_directive_reads_up_to_the_first_command_and_the_last_wins():
    text = '#!/bin/bash\n#SBATCH --output="/a b/%A.out"\n# note\n#SBATCH --output /c/%a.out\necho hi\n#SBATCH --output=/late\n'
    assert script_directive(text, "output") == "/c/%a.out"


def test_log_folder_percent_is_escaped_and_read_back(tmp_path):
    folder = str(tmp_path / 'logs 100% "q" #1 %A')
    text = render(tmp_path, log_dir=folder)
    pattern = script_directive(text, "output")
    assert pattern == folder.replace("%", "%%") + "/%A_%a.out"
    assert log_path(pattern, "812", 3, "t") == f"{folder}/812_3.out"
    assert log_path(script_directive(text, "error"), "812", 3) == f"{folder}/812_3.err"


def test_log_path_expands_as_slurmd_does():
    assert log_path("/r/%%A/%A_%4a-%x.out", "9", 7, "nm") == "/r/%A/9_0007-nm.out"
    assert log_path("/r/%j.out", "9", 7) is None  # the element's own job id is Slurm's alone
    assert log_path("/r/%q%", "9", 7) == "/r/%q%"
    assert log_path("/r\\\\s/%A\\_x.out", "9", 7) == "/r\\s/%A_x.out"  # a backslash: no expansion at all


def test_a_backslash_in_the_log_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="backslash"):
        render(tmp_path, log_dir=str(tmp_path / "a\\b"))


@pytest.mark.parametrize("key", ["run_dir", "spec_path", "worker_path", "python", "workdir", "log_dir"])
def test_a_line_break_in_any_path_is_refused(tmp_path, key):
    """A newline in a comment line (``# ... spec: <path>``) would start a command."""
    with pytest.raises(ConfigError, match="control character"):
        render(tmp_path, **{key: str(tmp_path / "x\ntouch pwned")})


def test_script_with_the_sweep_env_is_valid_and_shellcheck_clean(tmp_path):
    require_tool("bash", "shellcheck")
    text = render(tmp_path, env_file=str(tmp_path / "my run" / "sweep.env"))
    assert f"env_file={shlex.quote(str(tmp_path / 'my run' / 'sweep.env'))}" in text
    path = tmp_path / "s.sbatch"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    check = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert "sweep.env" not in render(tmp_path)  # no `env` key: nothing sourced


# --- a task on its node: the argv from spec.nul, with bash alone --------------------------

# The program of every task below: its argv, where it runs, nexa's variables and whether
# SIGINT is at its default, as one JSON line; then it exits with the status in $EXIT (0).
PROGRAM = (
    "import json, os, signal, sys; print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), "
    "'dir': os.environ['NEXA_TASK_DIR'], 'metrics': os.environ['NEXA_METRICS_FILE'], 'index': os.environ['NEXA_TASK_INDEX'], "
    "'sigint': signal.getsignal(signal.SIGINT) is signal.default_int_handler})); sys.exit(int(os.environ.get('EXIT', '0')))"
)
HOSTILE = ["sp ace", "", "-n", "a b\nc", "$(touch pwned)", "'\"\\", "*", "ü"]


def planned_on_node(tmp_path, values=HOSTILE, command=None):
    """A sweep planned the real way, whose ``[cluster] python`` (the worker's interpreter) is a
    wrapper that notes each start in ``worker-ran``: a task that takes the shell path never
    starts it. Returns (artifacts, script path, the file the wrapper writes)."""
    import sys

    from nexa_ops.config import NexaConfig, parse_sweep
    from nexa_ops.sweep.plan import plan_sweep

    ran = tmp_path / "worker-ran"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/bash\necho ran >> {shlex.quote(str(ran))}\nexec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(0o755)
    command = command or [sys.executable, "-c", PROGRAM, "{v}", "", "-x", "$HOME", "a\nb"]
    defn = parse_sweep({"name": "node", "command": command, "grid": {"v": list(values)}}, "s.toml")
    (tmp_path / "work").mkdir()
    config = NexaConfig(root=tmp_path / "work", cluster=ClusterConfig(python=str(wrapper)))
    art = plan_sweep(defn, config, tmp_path / "run")
    return art, art.script_paths[0], ran


def run_task(script, index, *, umask=0o022, **env):
    import os

    full = dict(os.environ, SLURM_ARRAY_JOB_ID="41", SLURM_JOB_ID=str(50 + index), SLURM_ARRAY_TASK_ID=str(index),
                SLURMD_NODENAME="n1", SLURM_UMASK=f"{umask:04o}", **env)
    full.pop("SLURM_RESTART_COUNT", None)
    return subprocess.run(["bash", str(script), "0"], env=full, capture_output=True, text=True, cwd="/", umask=umask, timeout=60)


def test_a_task_runs_its_planned_argv_with_bash_alone(tmp_path):
    """Every hostile value reaches the program as one argument, word for word, with nexa's
    variables, in the sweep's working directory, SIGINT at its default: and no Python worker
    started (the wrapper never ran)."""
    import json

    require_tool("bash")
    art, script, ran = planned_on_node(tmp_path)
    for task in art.tasks:
        out = run_task(script, task.index)
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen == {"argv": task.argv[3:], "cwd": str(tmp_path / "work"), "dir": f"{art.run_dir}/out/{task.index}",
                        "metrics": f"{art.run_dir}/metrics/{task.index}.jsonl", "index": str(task.index), "sigint": True}
    assert not ran.exists() and not (tmp_path / "work" / "pwned").exists()


def test_the_shell_path_writes_the_workers_records(tmp_path):
    """The start record has the worker's fields and types; both records are 0644 whatever the
    umask (002 here), and nothing else is left in tasks/."""
    import json
    import os
    import stat

    art, script, ran = planned_on_node(tmp_path, values=["x"])
    out = run_task(script, 0, umask=0o002, EXIT="3")
    assert out.returncode == 3, out.stderr
    tasks = art.run_dir / "tasks"
    start = json.loads((tasks / "0.start.json").read_text())
    assert set(start) == {"index", "start", "host", "job_id", "array_task_id", "restart_count"}
    ids = (start["index"], start["host"], start["job_id"], start["array_task_id"], start["restart_count"])
    assert ids == (0, os.uname().nodename, "41", "0", 0)
    assert isinstance(start["start"], float)
    end = json.loads((tasks / "0.end.json").read_text())
    assert (end["exit_code"], end["job_id"], end["node"]) == (3, "41_0", "n1") and end["end"] >= start["start"]
    for name in ("0.start.json", "0.end.json"):
        assert stat.S_IMODE((tasks / name).stat().st_mode) == 0o644
    assert sorted(p.name for p in tasks.iterdir()) == ["0.end.json", "0.start.json"] and not ran.exists()


def test_a_stale_start_record_is_replaced(tmp_path):
    """An attempt that died without its end record leaves its start: the next one replaces it."""
    import json

    art, script, _ = planned_on_node(tmp_path, values=["x"])
    (art.run_dir / "tasks" / "0.start.json").write_text('{"index": 0, "start": 1.0}')
    assert run_task(script, 0).returncode == 0
    assert json.loads((art.run_dir / "tasks" / "0.start.json").read_text())["start"] > 1.0


def test_a_program_that_cannot_run_is_127_with_one_line(tmp_path):
    art, script, ran = planned_on_node(tmp_path, values=["x"], command=["no-such-program-here", "{v}"])
    out = run_task(script, 0)
    assert out.returncode == 127
    assert "nexa worker: error: cannot run 'no-such-program-here'" in out.stderr and not ran.exists()


@pytest.mark.parametrize("damage", ["missing", "cut", "shifted", "other plan", "spec newer", "not yours", "a link"])
def test_anything_unexpected_in_spec_nul_is_left_to_the_worker(tmp_path, damage):
    """Whatever is wrong with spec.nul, the task never runs anything but its planned argv: the
    script starts the worker, which reads the intact spec.argv (and its own checks decide)."""
    import json
    import os
    import time

    art, script, ran = planned_on_node(tmp_path, values=["a", "b", "c"])
    nul = art.run_dir / "spec.nul"
    data = nul.read_bytes()
    if damage == "missing":
        nul.unlink()
    elif damage == "cut":
        nul.write_bytes(data[:-3])
    elif damage == "shifted":  # one more item inside the last task's argv: its end mark moves
        nul.write_bytes(data.replace(b"--v=c\0", b"--v=c\0extra\0"))
    elif damage == "other plan":
        nul.write_bytes(data.replace(data[: data.index(b"\0")], b"NEXA-NUL 1 3 " + b"0" * 64))
    elif damage == "spec newer":
        later = time.time() + 5
        os.utime(art.spec_path, (later, later))
    elif damage == "not yours":
        os.lchown(nul, 65534, 65534)
    elif damage == "a link":
        nul.rename(art.run_dir / "elsewhere.nul")
        nul.symlink_to(art.run_dir / "elsewhere.nul")
    out = run_task(script, 2)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["argv"] == art.tasks[2].argv[3:]
    assert ran.read_text() == "ran\n"  # the worker, once


def test_interrupt_reaches_a_program_started_by_the_shell_path(tmp_path):
    import os
    import signal
    import sys

    code = "import sys, time; print('started', flush=True); time.sleep(30)"
    art, script, ran = planned_on_node(tmp_path, values=["x"], command=[sys.executable, "-c", code, "{v}"])
    env = dict(os.environ, SLURM_ARRAY_JOB_ID="41", SLURM_ARRAY_TASK_ID="0", SLURMD_NODENAME="n1", SLURM_UMASK="0022")
    proc = subprocess.Popen(["bash", str(script), "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        (child,) = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(child), signal.SIGINT)
        assert proc.wait(20) == 130
    finally:
        proc.kill()
    assert not ran.exists()
