"""``inv build`` as a new user meets it (issue 17): from the Quick start's venv, and when a
pip step fails. Seen: `shiv: not found`, then `python3 exited with 1` with pip's real
error line (`invalid command 'bdist_wheel'`) nowhere in sight."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from nexa_ops import proc, pyz
from nexa_ops.tools import pip
from tests.conftest import ROOT

#: pip 23.2's output when setuptools 65.5 is asked for a wheel (as captured on this machine).
PIP_BDIST_WHEEL = """\
  error: subprocess-exited-with-error

  × Preparing metadata (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [14 lines of output]
      running dist_info
      creating /tmp/pip-modern-metadata-2xixw_0x/nexa_ops.egg-info
      writing manifest file '/tmp/pip-modern-metadata-2xixw_0x/nexa_ops.egg-info/SOURCES.txt'
      creating '/tmp/pip-modern-metadata-2xixw_0x/nexa_ops-0.1.0.dist-info'
      error: invalid command 'bdist_wheel'
      [end of output]

  note: This error originates from a subprocess, and is likely not a problem with pip.
error: metadata-generation-failed

× Encountered error while generating package metadata.
╰─> See above for output.

note: This is an issue with the package mentioned above, not pip.
hint: See above for details.
"""


def test_pips_real_error_line_is_found():
    assert pip.error_line(PIP_BDIST_WHEEL) == "error: invalid command 'bdist_wheel'"
    assert pip.error_line("ERROR: Could not install packages due to an OSError: [Errno 28] No space left\n").startswith("ERROR: Could")
    assert pip.error_line("note: nothing to see\n") == ""
    cause = pyz._explain_pip(1, PIP_BDIST_WHEEL)
    assert cause.startswith("error: invalid command 'bdist_wheel' (setuptools here cannot build wheels: ")
    assert "-m pip install shiv==1.0.8 'setuptools>=70.1'" in cause


def test_a_python_module_is_named_by_its_module():
    assert proc.tool_name(["/venv/bin/python3", "-m", "pip", "wheel"]) == "pip"
    assert proc.tool_name(["/usr/bin/rsync", "-a"]) == "rsync"


def copy_checkout(dest: Path) -> Path:
    """The files a build reads, as git has them (not a git repository: the build walks them)."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(str(ROOT / name), str(dest / name))
    return dest


def test_a_failing_pip_step_shows_pips_error_line(nexa_cli, tmp_path):
    src = copy_checkout(tmp_path / "src")
    text = (src / "pyproject.toml").read_text()
    (src / "pyproject.toml").write_text(text.replace('"nexa_ops", "nexa_ops.cost"', '"nexa_ops", "nexa_ops.nope", "nexa_ops.cost"', 1))
    out = nexa_cli("build", "--config", str(src / "shiv.toml"), "--output", str(tmp_path / "x.pyz"))
    assert out.returncode == 1 and not (tmp_path / "x.pyz").exists()
    first = out.stderr.splitlines()[0]
    assert first == "nexa: error: pip exited with 1: error: package directory 'nexa_ops/nope' does not exist", out.stderr


def venv(path: Path) -> Path:
    """A venv made as the Quick start makes it (``python3 -m venv``: pip 23, setuptools 65)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    return path / "bin" / "python"


def pip_install(python: Path, *what: str) -> None:
    out = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *what],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr


def test_build_from_a_quick_start_venv(tmp_path):
    """`bash bin/quickstart.sh` installs `-e '.[build]'`: from that venv the build works.
    Without the build extra it stops at once, naming what is missing and how to install it."""
    src = copy_checkout(tmp_path / "src")
    python = venv(tmp_path / "venv")
    pip_install(python, "-e", str(src))  # the Quick start before this fix
    env = dict(os.environ, PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    build = [str(python), "-m", "nexa_ops", "build", "--output", str(tmp_path / "nexa.pyz")]
    out = subprocess.run(build, cwd=str(src), capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 127, out.stderr
    assert out.stderr.startswith("nexa: error: shiv: not installed for ") and "-m pip install shiv==1.0.8 'setuptools>=70.1'" in out.stderr
    assert out.stderr.count("\n") == 1
    pip_install(python, "shiv==1.0.8")  # shiv alone: this setuptools still cannot build a wheel
    out = subprocess.run(build, cwd=str(src), capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 127 and "cannot build wheels (bdist_wheel needs setuptools >= 70.1" in out.stderr, out.stderr
    pip_install(python, "-e", f"{src}[build]")  # what bin/quickstart.sh installs
    out = subprocess.run([str(python.parent / "inv"), "build", "--output", str(tmp_path / "nexa.pyz")], cwd=str(src),
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Built {tmp_path / 'nexa.pyz'}")
    run = subprocess.run([sys.executable, str(tmp_path / "nexa.pyz"), "--version"], capture_output=True, text=True,
                         env=dict(os.environ, SHIV_ROOT=str(tmp_path / "shiv")), timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("nexa "), run.stderr
    assert "-e '.[build]'" in (ROOT / "bin" / "quickstart.sh").read_text()
