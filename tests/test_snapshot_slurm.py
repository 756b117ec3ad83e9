"""Frozen code on the real local Slurm: tasks held in the queue while train.py changes run
the code that was submitted, from the run's snapshot, and the manifest says which commit and
which uncommitted changes that was."""

import json
import subprocess
import sys

import pytest

from nexa_ops import track
from nexa_ops.config import load_config
from tests.test_snapshot import make_project, run_git

pytestmark = pytest.mark.slurm

TRAIN = "import os, sys\nprint('{version}', os.getcwd(), sys.argv[1:])\n"


def test_held_tasks_run_the_submitted_code(slurm_cluster, tmp_path, nexa_cli):
    project = make_project(tmp_path / "proj")
    (project / "train.py").write_text(TRAIN.format(version="v1 committed"))
    run_git(project, "init", "-q", "-b", "main")
    run_git(project, "add", "train.py", "pkg/model.py", ".gitignore", "nexa.toml")
    run_git(project, "commit", "-qm", "v1")
    commit = run_git(project, "rev-parse", "HEAD").strip()
    (project / "train.py").write_text(TRAIN.format(version="v2 submitted"))  # uncommitted: the dirty diff
    (project / "sweep.toml").write_text(
        f'name = "frozen"\ncommand = [{json.dumps(sys.executable)}, "train.py"]\n[grid]\ni = [0, 1, 2]\n'
        '[resources]\ncpus_per_task = 1\ntime = "00:05:00"\nextra = ["--hold"]\n'  # submitted held
    )
    out = nexa_cli("sweep", "--config", "sweep.toml", "--submit", "--snapshot", "--out", "runs/frozen", cwd=project)
    assert out.returncode == 0, out.stderr
    run_dir = project / "runs" / "frozen"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (job,) = manifest["job_ids"]
    try:
        cfg = load_config(cwd=project)
        assert {t.state for t in track.status(str(run_dir), config=cfg).tasks} == {"PENDING"}
        (project / "train.py").write_text(TRAIN.format(version="v3 edited while queued"))
        (project / "pkg" / "model.py").write_text("X = 2\n")
    finally:
        subprocess.run(["scontrol", "release", job], check=True)
    final = track.wait(str(run_dir), poll=0.5, timeout=120, config=cfg)
    assert [t.state for t in final.tasks] == ["COMPLETED"] * 3
    for i in range(3):
        line = (run_dir / "logs" / f"{job}_{i}.out").read_text().strip()
        assert line == f"v2 submitted {run_dir / 'code'} ['--i={i}']"
    # the snapshot: what nexa sync sends, not runs/, __pycache__, *.pyc or ignored files
    code = run_dir / "code"
    assert (code / "pkg" / "model.py").read_text() == "X = 1\n"
    for left_out in ("runs", "pkg/__pycache__", "pkg/old.pyc", "model.ckpt", "wandb", "data", "sub/secret.txt", ".git"):
        assert not (code / left_out).exists(), left_out
    assert manifest["snapshot"]["path"] == str(code) and manifest["snapshot"]["workdir"] == str(code)
    assert f"#SBATCH --chdir={code}" in (run_dir / "frozen.sbatch").read_text()
    # provenance: the commit, and the uncommitted change that was submitted
    found = manifest["provenance"]["git"]
    assert (found["commit"], found["branch"], found["dirty"], found["diff"]) == (commit, "main", True, "code.diff")
    diff = (run_dir / "code.diff").read_text()
    assert "-print('v1 committed'" in diff and "+print('v2 submitted'" in diff
    status = nexa_cli("status", str(run_dir), cwd=project)
    assert status.stdout.splitlines()[0] == f"Run frozen (slurm, jobs {job}, commit {commit[:10]} (dirty))"
