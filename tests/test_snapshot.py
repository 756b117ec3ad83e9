"""Snapshots and provenance with the real rsync and git (no scheduler): what is copied, what
is hard-linked the second time, where tasks run, and what the manifest says about the code.
The held-queue test on real Slurm is tests/test_snapshot_slurm.py."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nexa_ops import provenance, snapshot
from nexa_ops.config import load_config
from nexa_ops.errors import ConfigError
from nexa_ops.tools import git
from tests.conftest import require_tool

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run_git(folder, *args):
    env = dict(os.environ, **GIT_ENV)
    return subprocess.run(["git", *args], cwd=str(folder), env=env, check=True, capture_output=True, text=True).stdout


def make_project(root: Path) -> Path:
    """A project with what a snapshot must take and what it must leave out."""
    files = {
        "nexa.toml": '[sync]\nexclude = ["data/"]\n',
        "train.py": "print('v1')\n",
        "pkg/model.py": "X = 1\n",
        "pkg/__pycache__/model.cpython-311.pyc": "bytecode",
        "pkg/old.pyc": "bytecode",
        ".gitignore": "*.ckpt\nwandb/\n",
        "model.ckpt": "weights",
        "wandb/run-1/log": "log",
        "data/big.bin": "data",
        "runs/old-run/out/0/ckpt": "weights",
        "sub/.nexaignore": "secret.txt\n",
        "sub/secret.txt": "secret",
        "sub/run.py": "print('sub')\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def listing(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- git -----------------------------------------------------------------------------------


def test_status_parsing_skips_the_old_path_of_a_rename():
    text = "R  new name.py\0old name.py\0 M train.py\0?? notes.txt\0!! build/\0A  1 odd\0"
    assert git.parse_status(text) == (["new name.py", "train.py", "1 odd"], ["notes.txt"])
    assert git.parse_status("") == ([], [])


def test_provenance_of_a_dirty_checkout(tmp_path):
    require_tool("git")
    project = make_project(tmp_path / "proj")
    run_git(project, "init", "-q", "-b", "main")
    run_git(project, "add", "train.py", "pkg/model.py", ".gitignore", "nexa.toml")
    run_git(project, "commit", "-qm", "v1")
    commit = run_git(project, "rev-parse", "HEAD").strip()
    (project / "train.py").write_text("print('v2')\n")
    info, diff = provenance.collect(project, argv=["nexa", "sweep", "--config", "it's.toml"])
    found = info["git"]
    assert (found["commit"], found["branch"], found["dirty"], found["changed"]) == (commit, "main", True, ["train.py"])
    assert "sub/" in found["untracked"] and found["untracked_count"] == len(found["untracked"])
    assert info["argv"] == ["nexa", "sweep", "--config", "it's.toml"] and info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["user"] and info["host"] and info["nexa_version"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    provenance.save(run_dir, info, diff)
    assert found["diff"] == "code.diff" and "+print('v2')" in (run_dir / "code.diff").read_text()
    # the diff on top of the commit gives the code back
    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", str(project), str(clone))
    run_git(clone, "checkout", "-q", commit)
    run_git(clone, "apply", str(run_dir / "code.diff"))
    assert (clone / "train.py").read_text() == "print('v2')\n"
    # clean, detached: no diff, no branch
    run_git(project, "checkout", "-q", "--", "train.py")
    run_git(project, "checkout", "-q", "--detach")
    info, diff = provenance.collect(project)
    assert (info["git"]["dirty"], info["git"]["branch"], diff) == (False, None, None)


def test_provenance_outside_git_and_before_the_first_commit(tmp_path):
    require_tool("git")
    info, diff = provenance.collect(tmp_path)
    assert (info["git"], info["git_problem"], diff) == (None, "not in a git repository", None)
    run_git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("a = 1\n")
    run_git(tmp_path, "add", "a.py")
    info, diff = provenance.collect(tmp_path)
    assert (info["git"]["commit"], info["git"]["dirty"]) == (None, True)
    assert "+a = 1" in diff


# --- the copy ------------------------------------------------------------------------------


def test_snapshot_takes_what_sync_sends(tmp_path):
    require_tool("rsync")
    project = make_project(tmp_path)
    cfg = load_config(cwd=project)
    run_dir = project / "runs" / "r1"
    run_dir.mkdir(parents=True)
    snap = snapshot.take(cfg, run_dir, project)
    assert listing(snap.path) == [".gitignore", "nexa.toml", "pkg/model.py", "sub/.nexaignore", "sub/run.py", "train.py"]
    assert snap.workdir == run_dir / "code" and snap.linked_from is None
    doc = snap.to_json()
    assert doc["path"] == str(run_dir / "code") and doc["copied"] == 6 and doc["seconds"] >= 0


def test_a_second_snapshot_hard_links_what_did_not_change(tmp_path):
    require_tool("rsync")
    project = make_project(tmp_path)
    cfg = load_config(cwd=project)
    first = snapshot.take(cfg, _run(project, "r1"), project)
    time.sleep(0.05)  # a later time stamp than v1's, yet (almost always) in the same second
    (project / "train.py").write_text("print('v2')\n")  # same size as v1
    second = snapshot.take(cfg, _run(project, "r2"), project / "sub")
    assert second.linked_from == first.path and second.workdir == second.path / "sub"
    same = os.stat(first.path / "pkg" / "model.py").st_ino == os.stat(second.path / "pkg" / "model.py").st_ino
    assert same and os.stat(second.path / "pkg" / "model.py").st_nlink == 2
    assert os.stat(first.path / "train.py").st_ino != os.stat(second.path / "train.py").st_ino
    assert (first.path / "train.py").read_text() == "print('v1')\n" and (second.path / "train.py").read_text() == "print('v2')\n"
    assert second.stats["number_of_regular_files_transferred"] == 1


def _run(project, name):
    path = project / "runs" / name
    path.mkdir(parents=True)
    return path


def test_a_run_folder_inside_the_project_is_not_copied_into_itself(tmp_path):
    require_tool("rsync")
    project = make_project(tmp_path)
    cfg = load_config(cwd=project)
    run_dir = project / "exp" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text("{}")
    snap = snapshot.take(cfg, run_dir, project)
    assert "--exclude=/exp/r1/" in snap.argv and not (snap.path / "exp" / "r1").exists()
    with pytest.raises(ConfigError, match="is the project folder itself"):
        snapshot.take(cfg, project, project)


def test_workdir_outside_the_project_or_excluded(tmp_path):
    require_tool("rsync")
    project = make_project(tmp_path / "proj")
    cfg = load_config(cwd=project)
    with pytest.raises(ConfigError, match=r"^--snapshot: the working directory .* is outside the project .*proj"):
        snapshot.take(cfg, _run(project, "r1"), tmp_path)
    with pytest.raises(ConfigError, match="is not in the snapshot"):
        snapshot.take(cfg, _run(project, "r2"), project / "wandb")


def test_no_project_file_no_snapshot(tmp_path):
    """Without nexa.toml the project would be the current folder, perhaps a home directory."""
    with pytest.raises(ConfigError, match="^--snapshot: no nexa.toml here"):
        snapshot.take(load_config(cwd=tmp_path), _run(tmp_path, "r1"), tmp_path)


def test_dry_run_prints_the_copy_and_makes_none(tmp_path, capsys):
    require_tool("rsync")
    project = make_project(tmp_path)
    run_dir = _run(project, "r1")
    snapshot.take(load_config(cwd=project), run_dir, project, dry_run=True)
    out = capsys.readouterr().out
    assert out.startswith("rsync -a --modify-window=-1 --stats --exclude=/runs/") and f"{project}/ {run_dir}/code/" in out
    assert not (run_dir / "code").exists()


# --- through the commands ----------------------------------------------------------------


PROBE = "import json, os; print(json.dumps({'cwd': os.getcwd(), 'v': open('train.py').read().strip()}))\n"


def test_sweep_local_runs_from_the_snapshot_with_provenance(tmp_path, nexa_cli):
    require_tool("rsync", "git")
    project = make_project(tmp_path)
    (project / "probe.py").write_text(PROBE)
    (project / "nexa.toml").write_text("[project]\nsnapshot = true\n")
    (project / "s.toml").write_text(f'name = "s"\ncommand = [{json.dumps(sys.executable)}, "probe.py"]\n[grid]\ni = [0, 1]\n')
    run_git(project, "init", "-q")
    out = nexa_cli("sweep", "--config", "s.toml", "--local", "--out", "runs/s1", cwd=project)
    assert out.returncode == 0, out.stderr
    run_dir = project / "runs" / "s1"
    seen = json.loads((run_dir / "logs" / "local_1.out").read_text())
    assert seen == {"cwd": str(run_dir / "code"), "v": "print('v1')"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["snapshot"]["path"] == str(run_dir / "code")
    assert json.loads((run_dir / "spec.json").read_text())["workdir"] == str(run_dir / "code")
    assert manifest["provenance"]["git"]["commit"] is None
    assert manifest["provenance"]["argv"][1:] == ["sweep", "--config", "s.toml", "--local", "--out", "runs/s1"]
    assert "Snapshot: " in out.stdout


def test_launch_local_snapshot_and_the_option_checks(tmp_path, nexa_cli):
    require_tool("rsync")
    project = make_project(tmp_path)
    (project / "probe.py").write_text(PROBE)
    (project / "sub" / "probe.py").write_text(PROBE.replace("train.py", "run.py"))
    project_file = str(project / "nexa.toml")
    out = nexa_cli("launch", "--snapshot", "--project", project_file, "--", sys.executable, "probe.py", cwd=project / "sub")
    assert out.returncode == 0, out.stderr
    (run_dir,) = [p for p in (project / "runs").iterdir() if p.name.startswith("probe-")]
    assert json.loads(out.stdout.splitlines()[0]) == {"cwd": str(run_dir / "code" / "sub"), "v": "print('sub')"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["workdir"] == str(run_dir / "code" / "sub") and manifest["provenance"]["git_problem"]
    bad = nexa_cli("launch", "--after", "x", "--", "true", cwd=project)
    assert bad.returncode == 2
    assert bad.stderr == "nexa: error: --after goes with --mode slurm: only Slurm can hold a job until another run ends\n"
    (project / "s.toml").write_text('name = "s"\ncommand = ["true"]\n[grid]\ni = [0]\n')
    bad = nexa_cli("sweep", "--config", "s.toml", "--local", "--after", "x", cwd=project)
    assert bad.returncode == 2
    assert bad.stderr == "nexa: error: --after goes with --submit: only Slurm can hold tasks until another run ends\n"
    (project / "nexa.toml").write_text("[project]\nsnapshots = true\n")
    bad = nexa_cli("sweep", "--config", "s.toml", cwd=project)
    assert bad.returncode == 2 and "nexa.toml: project.snapshots: unknown key (did you mean 'snapshot'?)" in bad.stderr
