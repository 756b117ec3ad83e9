"""The command line as a whole (nexa_ops/cli.py, commands/common.py, completion.py): one
short-flag table, help and usage lines, what a mistyped command or option says, Invoke's
shell-only core flags refused, shell completion in a real bash, and colour on a real
terminal (a pty) but never in a pipe."""

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nexa_ops.cli import ORDER, program
from nexa_ops.commands.common import SHORT_FLAGS, summary_line, usage_line
from tests.conftest import ROOT, require_tool

DOCS = ROOT / "docs"
NOW = 1_800_000_000.0
#: Invoke's core flags that mean nothing for nexa (they are about running shell commands).
INVOKE_ONLY = ("--pty", "--hide", "--echo", "--warn-only", "--dry", "--command-timeout", "--prompt-for-sudo-password",
               "--write-pyc", "--list-depth", "--list-format")


def arguments(command):
    return program.namespace[command].get_arguments()


# --- one short-flag table ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ORDER)
def test_every_short_flag_comes_from_the_table(command):
    for arg in arguments(command):
        attr = arg.attr_name or arg.name
        shorts = [n for n in arg.names if len(n) == 1]
        expected = [] if attr in program.namespace[command].positional or attr not in SHORT_FLAGS else [SHORT_FLAGS[attr]]
        assert shorts == expected, f"{command} --{arg.names[0]}: {shorts} (table: {expected})"


def test_a_letter_means_one_option_and_never_a_core_flag():
    groups = {}
    for attr, letter in SHORT_FLAGS.items():
        groups.setdefault(letter, set()).add(attr)
    same = [{"out", "output"}, {"task", "task_id"}]  # one option, two names
    assert all(len(names) == 1 or names in same for names in groups.values()), groups
    core = {n for arg in program.core_args() for n in arg.names if len(n) == 1}
    assert core == {"f", "h", "V"}
    assert set(groups) & core == {"f"} and groups["f"] == {"project"}  # -f: the project file, before or after the command


def table_rows(page: str, heading: str):
    text = (DOCS / page).read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| `")]


def test_docs_cli_md_prints_the_table():
    documented = {}
    for short, longs, commands in table_rows("cli.md", "Short flags"):
        letter = re.match(r"`-(\w)", short).group(1)
        names = {long.replace("-", "_") for long in re.findall(r"`--([a-z-]+)`", longs)}
        documented.update(dict.fromkeys(names, letter))
        for command in [c for c in re.findall(r"`([a-z][a-z.-]*)`", commands) if c in ORDER]:
            has = {a.attr_name or a.name for a in arguments(command)}
            assert names & has, f"cli.md: `nexa {command}` has none of {sorted(names)}"
    assert documented == SHORT_FLAGS


def test_every_option_row_in_the_docs_shows_the_tables_letter():
    for page in sorted(DOCS.glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if not line.startswith("| `"):
                continue
            first = line.split(" | ")[0]
            for long, letter in re.findall(r"`--([a-z][a-z0-9-]*)[^`]*` \(`-(\w)`\)", first):
                assert SHORT_FLAGS.get(long.replace("-", "_")) == letter, f"{page.name}: --{long} (-{letter})"


def test_combined_short_flags_work(nexa_cli, tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "s"\ncommand = ["true"]\n[grid]\nx = [1, 2]\n')
    out = nexa_cli("sweep", "-c", str(sweep), "-sn", "-o", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "sbatch --parsable" in out.stdout  # -s --submit, -n --dry-run


# --- help and usage ----------------------------------------------------------------------------


def test_usage_lines_show_the_real_arguments():
    assert usage_line("status", program.namespace["status"]) == "nexa status [RUN] [options]"
    assert usage_line("launch", program.namespace["launch"]) == "nexa launch [options] -- COMMAND..."
    assert usage_line("run-container", program.namespace["run-container"]) == "nexa run-container SERVICE [options] [-- COMMAND...]"
    assert usage_line("sweep", program.namespace["sweep"]) == "nexa sweep [options]"


@pytest.mark.parametrize("command", ORDER)
def test_command_help_shows_numbers_as_numbers(nexa_cli, command):
    out = nexa_cli(command, "--help")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("Usage: nexa " + command)
    assert "STRING" not in out.stdout and "=INT" not in out.stdout
    assert f"Reference: nexa help {command}" in out.stdout


def test_wait_and_logs_usage(nexa_cli):
    wait = nexa_cli("wait", "--help").stdout
    for spec in ("--poll=SECONDS", "-T SECONDS, --timeout=SECONDS", "--every=SECONDS", "-f FILE, --project=FILE"):
        assert spec in wait
    logs = nexa_cli("logs", "--help").stdout
    assert "-t N, --task=N" in logs and "-F, --follow" in logs and "RUN, --run=RUN" in logs
    launch = nexa_cli("launch", "--help").stdout
    assert "-e NAME, --env=NAME" in launch and "repeatable" in launch.split("--env=NAME", 1)[1].split("\n  -", 1)[0]
    monitor = nexa_cli("monitor-config", "--help").stdout
    assert "--target=HOST" in monitor and "Repeatable." in monitor.split("--target=HOST", 1)[1].split("\n  -", 1)[0]


def test_nexa_help_lists_commands_first_one_line_each(nexa_cli):
    out = nexa_cli("--help")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    start = lines.index("Commands:")
    assert start < lines.index("Options (before or after the command):")
    listed = [line.split()[0] for line in lines[start + 1 : start + 1 + len(ORDER)]]
    assert listed == ORDER
    for flag in INVOKE_ONLY + ("--complete", "--debug"):
        assert flag not in out.stdout, flag
    assert "--no-color" in out.stdout and "--print-completion-script=SHELL" in out.stdout
    assert nexa_cli().stdout == out.stdout  # nexa alone
    assert nexa_cli("--list").stdout.split() == ORDER


@pytest.mark.parametrize("command", ORDER)
def test_summaries_fit_one_line(command):
    text = summary_line(program.namespace[command])
    assert 10 < len(text) <= 62 and text.endswith("."), text


# --- mistakes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["swep"], "unknown command 'swep' (did you mean 'sweep'?)"),
        (["stauts"], "unknown command 'stauts' (did you mean 'status'?)"),
        (["sweep", "--sumbit"], "unknown option '--sumbit' for sweep (did you mean '--submit'?)"),
        (["status", "--jsn"], "unknown option '--jsn' for status (did you mean '--json'?)"),
        (["status", "--zzz"], "unknown option '--zzz' for status; nexa status --help lists them"),
        (["--vesion"], "unknown option '--vesion' (did you mean '--version'?)"),
        (["launch", "python3", "train.py"], "launch: the command to run goes after --: nexa launch -- python3 train.py"),
        (["launch", "-m", "local", "python3", "t.py"], "launch: the command to run goes after --: nexa launch -m local -- python3 t.py"),
        (["status", "a", "b"], "status: unexpected argument 'b'; nexa status --help shows the usage"),
        (["sweep", "--config"], "sweep: --config needs a value"),
        (["run-container"], "run-container: SERVICE is required"),
        (["--help", "swep"], "unknown command 'swep' (did you mean 'sweep'?)"),
        (["zzz"], "unknown command 'zzz'; nexa --help lists them"),
    ],
)
def test_mistakes_are_one_line_exit_2_with_did_you_mean(nexa_cli, argv, message):
    out = nexa_cli(*argv)
    assert (out.returncode, out.stdout, out.stderr) == (2, "", f"nexa: error: {message}\n")


@pytest.mark.parametrize("flag", INVOKE_ONLY)
def test_invokes_shell_flags_are_refused_by_nexa_and_kept_by_inv(nexa_cli, flag):
    for argv in ([flag, "status"], ["status", flag]):
        out = nexa_cli(*argv)
        assert out.returncode == 2 and out.stderr.startswith(f"nexa: error: unknown option '{flag}'"), (argv, out.stderr)


def test_inv_in_the_checkout_still_works(tmp_path):
    inv = [sys.executable, "-m", "invoke", "-r", str(ROOT)]
    out = subprocess.run([*inv, "--echo", "--list"], capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0 and "sweep" in out.stdout and "cost.report" in out.stdout, out.stderr
    out = subprocess.run([*inv, "build", "--dry-run"], capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0 and "-m shiv" in out.stdout, out.stderr
    out = subprocess.run([*inv, "status", "--help"], capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0 and "--state" in out.stdout, out.stderr


# --- shell completion --------------------------------------------------------------------------


def bash_complete(script: str, words, env=None) -> list:
    """What bash offers for ``words`` (the last one being completed) after sourcing ``script``,
    as a real bash calls the completion function: COMP_WORDS, COMP_CWORD, then COMPREPLY."""
    require_tool("bash")
    program_text = (
        f"{script}\n"
        'complete -p "$1" || exit 9\n'
        'COMP_WORDS=("${@:2}"); COMP_CWORD=$(($# - 2))\n'
        '"$(complete -p "$1" | sed -E "s/.*-F ([^ ]+).*/\\1/")"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(["bash", "-c", program_text, "bash", *words[:1], *words], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("complete ") and lines[0].endswith(" " + words[0])
    return lines[1:]


def test_completion_script_in_a_real_bash(tmp_path):
    nexa = Path(sys.executable).parent / "nexa"  # the console script of this venv
    assert nexa.exists()
    env = dict(os.environ, PATH=f"{nexa.parent}{os.pathsep}{os.environ['PATH']}")
    script = subprocess.run([str(nexa), "--print-completion-script", "bash"], capture_output=True, text=True, env=env).stdout
    assert "complete -F _nexa_complete -o default nexa" in script
    assert bash_complete(script, ["nexa", "sw"], env) == ["sweep"]
    assert bash_complete(script, ["nexa", "sweep", "--su"], env) == ["--submit"]
    assert "cost.report" in bash_complete(script, ["nexa", "cost.r"], env)
    assert bash_complete(script, ["nexa", "status", "--st"], env) == ["--state"]
    # what the script runs, as it runs it
    direct = subprocess.run([str(nexa), "--complete", "--", "nexa", "sw"], capture_output=True, text=True, env=env)
    assert "sweep" in direct.stdout.split() and "--pty" not in direct.stdout
    flags = subprocess.run([str(nexa), "--complete", "--", "nexa", "--"], capture_output=True, text=True, env=env).stdout.split()
    assert "--no-color" in flags and "--complete" not in flags and "--pty" not in flags


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_name_nexa(nexa_cli, shell):
    out = nexa_cli("--print-completion-script", shell)
    assert out.returncode == 0 and "nexa --complete --" in out.stdout, out.stderr


def test_unknown_shell_is_one_line(nexa_cli):
    out = nexa_cli("--print-completion-script", "csh")
    assert (out.returncode, out.stderr) == (2, "nexa: error: --print-completion-script: expected one of bash, zsh, fish, got 'csh'\n")


def test_completion_from_the_pyz_calls_that_pyz(nexa_pyz, tmp_path):
    from tests.services.pyz import clean_env, require_python

    python = require_python("3.6")  # RHEL 8's python3
    home, tmpd = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpd.mkdir()
    env = clean_env(home, tmpd)
    copy = tmp_path / "bin" / "nexa.pyz"
    copy.parent.mkdir()
    shutil.copyfile(str(nexa_pyz), str(copy))  # not executable, not on PATH
    out = subprocess.run([python, str(copy), "--print-completion-script", "bash"], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{python} {copy} --complete --" in out.stdout
    assert out.stdout.rstrip().endswith("complete -F _nexa_complete -o default nexa nexa.pyz")
    assert bash_complete(out.stdout, ["nexa.pyz", "sw"], env) == ["sweep"]
    assert bash_complete(out.stdout, ["nexa", "status", "--js"], env) == ["--json"]  # alias nexa='python3 .../nexa.pyz'


# --- colour: a real terminal, and a pipe --------------------------------------------------------


def make_local_run(root: Path) -> Path:
    """A local run of three tasks: 0 COMPLETED, 1 FAILED, 2 PENDING (no record yet)."""
    run = root / "runs" / "demo-1"
    (run / "tasks").mkdir(parents=True)
    spec = {"name": "demo", "count": 3, "tasks": [{"index": i, "params": {"lr": 0.1 * (i + 1)}, "argv": ["x"]} for i in range(3)]}
    (run / "spec.json").write_text(json.dumps(spec))
    (run / "manifest.json").write_text(json.dumps({"run_id": "demo-1", "name": "demo", "backend": "local", "tasks": 3}))
    (run / "tasks" / "0.end.json").write_text(json.dumps({"exit_code": 0, "end": NOW}))
    (run / "tasks" / "1.end.json").write_text(json.dumps({"exit_code": 4, "end": NOW}))
    return run


def run_in_pty(argv, cwd, env, timeout=60.0):
    """``argv`` with stdin, stdout and stderr on a new pseudo-terminal; its exit code and all
    it wrote."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, cwd=str(cwd), env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


RED, GREEN, DIM = "\x1b[31mFAILED\x1b[0m", "\x1b[32mCOMPLETED\x1b[0m", "\x1b[2mPENDING\x1b[0m"


def test_status_is_coloured_on_a_terminal_only(tmp_path):
    make_local_run(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    nexa = [sys.executable, "-m", "nexa_ops"]
    code, text = run_in_pty(nexa + ["status"], tmp_path, env)
    assert code == 0, text
    assert RED in text and GREEN in text and DIM in text
    assert re.search(r"\n\s+1  0\.2\s+\x1b\[31mFAILED\x1b\[0m\s+4\n", text), text  # columns still line up
    piped = subprocess.run(nexa + ["status"], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert piped.returncode == 0 and "\x1b" not in piped.stdout and "FAILED" in piped.stdout
    assert piped.stdout == re.sub(r"\x1b\[[0-9;]*m", "", text)  # the same text, without the colour
    for argv, extra in ((["status"], {"NO_COLOR": "1"}), (["status", "--no-color"], {}), (["--no-color", "status"], {}),
                        (["status"], {"TERM": "dumb"})):
        code, text = run_in_pty(nexa + argv, tmp_path, dict(env, **extra))
        assert code == 0 and "\x1b" not in text and "FAILED" in text, (argv, extra, text)
