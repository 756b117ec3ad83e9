"""Run folders shared with other users, tested with two real extra users (``useradd``, then
``setpriv --reuid --regid --clear-groups``): a planted worker cache is never run, a link
planted at a temp name is never written through, and a runs folder shared by a group works
for every member, or a submission fails before sbatch (issue 20, item 7).

The users share one group and are removed again at the end. Their processes run the Debian
``/usr/bin/python3`` (every user may run it) with this checkout and the venv's pure-Python
packages on PYTHONPATH.
"""

import grp
import json
import marshal
import os
import pwd
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

from nexa_ops.config import NexaConfig, parse_sweep
from nexa_ops.sweep.plan import plan_sweep
from nexa_ops.sweep.script import BATCH_STUB
from tests.conftest import ROOT, require, require_root, require_tool

PY = "/usr/bin/python3"


@dataclass
class User:
    name: str
    uid: int
    gid: int


@dataclass
class Users:
    group: str
    gid: int
    a: User  # the victim: the run's owner
    b: User  # another member of the same group


@pytest.fixture(scope="module")
def users():
    require_root()
    require_tool("setpriv", "useradd", "userdel", "groupadd", "groupdel")
    require(os.access(PY, os.X_OK), f"{PY} missing")
    tag = f"nxs{os.getpid() % 100000}"
    subprocess.run(["groupadd", tag], check=True, capture_output=True)
    made: List[str] = []
    try:
        for suffix in ("a", "b"):
            subprocess.run(["useradd", "-M", "-N", "-g", tag, "-s", "/usr/sbin/nologin", tag + suffix], check=True, capture_output=True)
            made.append(tag + suffix)
        gid = grp.getgrnam(tag).gr_gid
        a, b = (User(n, pwd.getpwnam(n).pw_uid, gid) for n in made)
        yield Users(tag, gid, a, b)
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", tag], capture_output=True)


def as_user(user: User, argv, *, cwd=None, env=None, umask=0o022, timeout=120):
    """Run ``argv`` as ``user`` (uid and the shared group only, no supplementary groups)."""
    site = Path(__import__("invoke").__file__).resolve().parents[1]  # the venv's site-packages
    full = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8", "PYTHONPATH": f"{ROOT}:{site}"}
    full.update(env or {})
    return subprocess.run(
        ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", *argv],
        cwd=str(cwd) if cwd else None, env=full, capture_output=True, text=True, umask=umask, timeout=timeout,
    )


def shared_folder(path: Path, users: Users, mode=0o2775) -> Path:
    """A folder the group shares (setgid, group-writable), as a lab sets one up."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, users.gid)
    os.chmod(path, mode)
    return path


def chown_tree(path: Path, user: User) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, user.uid, user.gid)


@pytest.fixture
def base(tmp_path, users):
    os.chmod(tmp_path, 0o755)  # pytest's folders are 0700: let the users in
    for parent in tmp_path.parents:
        if str(parent).startswith("/tmp/pytest-of-"):
            os.chmod(parent, 0o755)
    return shared_folder(tmp_path / "shared", users)


def old_run_folder(base: Path, users: Users) -> Path:
    """A's run folder as nexa used to leave it under a group-writable umask (002): the folder
    and tasks/ writable by the group. Task 0 prints ``task ran``."""
    defn = parse_sweep({"name": "t", "command": [PY, "-c", "print('task ran')"], "grid": {"n": [0]}}, "s.toml")
    art = plan_sweep(defn, NexaConfig(root=base), base / "run")
    chown_tree(art.run_dir, users.a)
    os.chmod(art.run_dir, 0o2775)
    os.chmod(art.run_dir / "tasks", 0o2775)
    return art.run_dir


def test_a_planted_worker_cache_is_never_run(users, base):
    """The report: another group member planted `.nexa-worker.<tag>.pyc` in a group-writable
    run folder and it ran as the victim. The stub loads only the user's own cache."""
    run = old_run_folder(base, users)
    marker = base / "pwned"
    tag = as_user(users.b, [PY, "-c", "import sys; print(sys.implementation.cache_tag)"]).stdout.strip()
    planted = run / f".nexa-worker.{tag}.pyc"
    code = f"open({str(marker)!r}, 'w').write('ran as ' + __import__('os').popen('id -un').read())\ndef main():\n    return 0\n"
    payload = marshal.dumps(compile(code, "planted", "exec"))
    out = as_user(users.b, [PY, "-c", "import sys; open(sys.argv[1], 'wb').write(bytes.fromhex(sys.argv[2]))", str(planted), payload.hex()],
                  umask=0o002)
    assert out.returncode == 0, out.stderr
    assert planted.stat().st_uid == users.b.uid
    stub = [PY, "-S", "-c", BATCH_STUB, str(ROOT), str(run / ".nexa-worker"), "--spec", str(run / "spec.json"), "--task-id", "0"]
    task = as_user(users.a, stub, umask=0o002)
    assert (task.returncode, task.stdout) == (0, "task ran\n"), task.stderr
    assert not marker.exists()
    assert planted.stat().st_uid == users.a.uid and planted.stat().st_mode & 0o022 == 0  # replaced by A's own
    again = as_user(users.a, stub)
    assert again.stdout == "task ran\n" and not marker.exists()


def test_a_link_planted_at_the_end_records_temp_name_is_not_followed(users, base):
    """The report: the array script wrote `tasks/.N.end.tmp` through a link another member
    planted there, overwriting the victim's 0600 file. Now the temp name cannot be guessed
    and is created exclusively; the end record is a plain file and the victim's file intact."""
    run = old_run_folder(base, users)
    secret = base / "secret"
    secret.write_text("A's secret\n")
    os.chown(secret, users.a.uid, users.a.gid)
    os.chmod(secret, 0o600)
    for name in (".0.end.tmp", ".0.start.tmp", "0.end.json.tmp"):
        out = as_user(users.b, [PY, "-c", "import os, sys; os.symlink(sys.argv[1], sys.argv[2])", str(secret), str(run / "tasks" / name)])
        assert out.returncode == 0, out.stderr
    (script,) = run.glob("*.sbatch")
    env = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "77"}
    task = as_user(users.a, ["bash", str(script), "0"], env=env, umask=0o002)
    assert task.returncode == 0 and "task ran" in task.stdout, task.stderr
    assert secret.read_text() == "A's secret\n"
    end = run / "tasks" / "0.end.json"
    assert not end.is_symlink() and json.loads(end.read_text())["exit_code"] == 0
    start = run / "tasks" / "0.start.json"
    assert not start.is_symlink() and start.stat().st_uid == users.a.uid and start.stat().st_mode & 0o022 == 0
    assert (run / "tasks" / ".0.end.tmp").is_symlink()  # left alone, never written through


def test_an_env_file_or_spec_of_another_user_is_refused(users, base):
    """What decides what a task runs must be the user's own: a spec (or index) replaced by
    another member is refused by the worker, a sweep.env planted by one is not sourced."""
    run = old_run_folder(base, users)
    os.lchown(run / "spec.argv", users.b.uid, users.gid)
    out = as_user(users.a, [PY, "-S", "-c", BATCH_STUB, str(ROOT), str(run / ".nexa-worker"), "--spec", str(run / "spec.json"),
                            "--task-id", "0"])
    assert out.returncode == 2 and out.stdout == "" and "spec.argv: not owned by you, or writable by others" in out.stderr
    os.lchown(run / "spec.argv", users.a.uid, users.gid)
    os.chmod(run / "spec.json", 0o664)
    out = as_user(users.a, [PY, "-S", "-c", BATCH_STUB, str(ROOT), str(run / ".nexa-worker"), "--spec", str(run / "spec.json"),
                            "--task-id", "0"])
    assert out.returncode == 2 and "spec.json: not owned by you, or writable by others" in out.stderr


# --- a runs folder shared by a group, on the real cluster -----------------------------------


def nexa_as(user: User, project: Path, *args, umask=0o022):
    return as_user(user, [PY, "-m", "nexa_ops", *args], cwd=project, umask=umask)


def wait_gone(job_ids, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i"], capture_output=True, text=True)
        if not out.stdout.strip():
            return
        time.sleep(0.3)
    raise AssertionError(f"jobs {job_ids} still queued")


@pytest.mark.slurm
def test_a_runs_folder_shared_by_a_group_works_for_every_member(slurm_cluster, users, base):
    """The report: lock files were created 0644, so the second member's submission failed
    with Permission denied after sbatch had accepted the job. Now the book's folders and
    locks take the shared folder's group permissions: both members submit, both runs are in
    the book, and one member's report reconciles the other's run."""
    project = base
    (project / "nexa.toml").write_text('[cluster]\nruns_dir = "runs"\n')
    (project / "s.toml").write_text('name = "shared"\ncommand = ["true"]\n[grid]\nx = [1, 2]\n[resources]\ntime = "00:05:00"\n')
    shared_folder(project / "runs", users)
    jobs = []
    for user in (users.a, users.b):
        out = nexa_as(user, project, "sweep", "--config", "s.toml", "--submit")
        assert out.returncode == 0, out.stderr
        jobs.append(out.stdout.split("Submitted job array ", 1)[1].split()[0])
    locks = project / "runs" / "manifests" / ".locks"
    assert (project / "runs" / "manifests").stat().st_mode & 0o2070 == 0o2070
    assert all(p.stat().st_mode & 0o060 == 0o060 for p in locks.iterdir())
    books = {json.loads(p.read_text())["user"] for p in (project / "runs" / "manifests").glob("cost_*.json")}
    assert books == {users.a.name, users.b.name}
    wait_gone(jobs)
    out = nexa_as(users.b, project, "cost.report", "--by", "user", "--format", "json", "--budget", "1000")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    rows = {r["user"]: r for r in json.loads(out.stdout)["rows"]}
    assert set(rows) == {users.a.name, users.b.name} and all(r["tasks_done"] == 2 for r in rows.values())


@pytest.mark.slurm
def test_a_book_a_member_cannot_write_fails_before_submitting(slurm_cluster, users, base):
    """A runs folder whose book another member made private (as an older nexa did): the
    submission stops with one line before sbatch, so no job runs unaccounted for."""
    project = base
    (project / "nexa.toml").write_text('[cluster]\nruns_dir = "runs"\n')
    (project / "s.toml").write_text('name = "shared"\ncommand = ["true"]\n[grid]\nx = [1]\n')
    shared_folder(project / "runs", users)
    manifests = project / "runs" / "manifests"
    manifests.mkdir()
    os.chown(manifests, users.a.uid, users.gid)
    os.chmod(manifests, 0o755)
    before = subprocess.run(["squeue", "-h", "-u", users.b.name, "-o", "%i"], capture_output=True, text=True).stdout
    out = nexa_as(users.b, project, "sweep", "--config", "s.toml", "--submit")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "cannot write the cost book" in out.stderr and "Permission denied" in out.stderr and "nothing was submitted" in out.stderr
    after = subprocess.run(["squeue", "-h", "-u", users.b.name, "-o", "%i"], capture_output=True, text=True).stdout
    assert before == after == ""
    assert not list((project / "runs").glob("*/manifest.json"))


def test_run_folders_are_never_group_writable_whatever_the_umask(users, base):
    """A plans with a group-writable umask: the run folder, tasks/, logs/ and everything a
    task reads or runs are writable by A alone."""
    (base / "s.toml").write_text('name = "m"\ncommand = ["true"]\nenv = ["HOME"]\n[grid]\nx = [1]\n')
    out = nexa_as(users.a, base, "sweep", "--config", "s.toml", "--out", str(base / "run"), umask=0o002)
    assert out.returncode == 0, out.stderr
    run = base / "run"
    for item in [run, *run.iterdir()]:
        assert item.stat().st_uid == users.a.uid and item.stat().st_mode & 0o022 == 0, (item, oct(item.stat().st_mode))
    assert (run / "sweep.env").stat().st_mode & 0o077 == 0
    out = nexa_as(users.a, base, "sweep", "--config", "s.toml", "--out", str(base), umask=0o002)  # the group's folder
    assert out.returncode == 2 and f"--out {base}: belongs to another user" in out.stderr, out.stderr
    assert as_user(users.a, ["mkdir", str(base / "mine")], umask=0o002).returncode == 0  # A's own, but 0775
    out = nexa_as(users.a, base, "sweep", "--config", "s.toml", "--out", str(base / "mine"), umask=0o002)
    assert out.returncode == 2 and "mine: is writable by others (mode 2775)" in out.stderr, out.stderr
    assert list((base / "mine").iterdir()) == []


@pytest.mark.slurm
def test_another_member_cannot_resubmit_a_run_that_is_not_theirs(slurm_cluster, users, base):
    """B resubmitting A's failed tasks would run, as B, files A can change (and B's tasks would
    refuse them): refused before sbatch."""
    project = base
    (project / "nexa.toml").write_text('[cluster]\nruns_dir = "runs"\n')
    (project / "s.toml").write_text('name = "fails"\ncommand = ["false"]\n[grid]\nx = [1]\n')
    shared_folder(project / "runs", users)
    out = nexa_as(users.a, project, "sweep", "--config", "s.toml", "--submit", "--out", str(project / "runs" / "a-run"), "--wait")
    assert out.returncode == 1 and "task(s) failed" in out.stderr, out.stderr
    out = nexa_as(users.b, project, "resubmit", str(project / "runs" / "a-run"), "--failed")
    assert out.returncode == 3 and out.stderr.count("\n") == 1, out.stderr
    assert "not resubmitted:" in out.stderr and "belongs to another user" in out.stderr
    assert subprocess.run(["squeue", "-h", "-u", users.b.name, "-o", "%i"], capture_output=True, text=True).stdout == ""
    assert nexa_as(users.a, project, "resubmit", str(project / "runs" / "a-run"), "--failed", "--dry-run").returncode == 0
