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
