"""Benchmark: the RPCs slurmctld receives while a 1,000-task array, split into chunks, is
followed by ``nexa wait``, by ``nexa status`` in a loop, and by submitit's watcher, in one run.

Slurm counts every RPC per user (``sdiag``, "Remote Procedure Call statistics by user"). Each
follower runs as its own throwaway user (``useradd``, removed at the end), so each count is
that follower's alone, whatever else the shared cluster is doing; the counters are read
before and after (never reset: other test runs may be reading them too).

- The array: ``nexa sweep --submit`` from a freshly built nexa.pyz by the user who then runs
  ``nexa wait``; ``[cluster] max_array_size`` (default 25, this cluster's MaxArraySize)
  makes the chunks: 40 for 1,000 tasks. ``--mode held`` (default): every element held in
  the queue for the whole window (``#SBATCH --hold``), the steady state of a big sweep
  waiting for GPUs. ``--mode run``: tasks of ``sleep 1`` run to completion (at ``--nice``,
  so other users' jobs go first).
- ``nexa wait RUN --timeout WINDOW`` (default ``--poll``: 60 s).
- ``nexa status RUN`` every ``--status-every`` seconds (default 10), as a user's loop.
- submitit 1.5 (installed from PyPI into a venv of its own, for this script only): one
  ``SlurmJob`` per array element and ``done()`` on each every second, as ``Job.results()``
  does. Its watcher polls ``sacct``, which talks to slurmdbd, not slurmctld: without
  accounting (this cluster) every call fails at once. Its calls are counted by a ``sacct``
  on its PATH that logs each call and runs the real one: with accounting, each call is at
  least one slurmdbd RPC (DBD_GET_JOBS_COND).
- With accounting its calls land on slurmdbd: the script starts a private slurmdbd (and
  MariaDB) of its own on 127.0.0.1 (ports 3309 and 6839, files under the bench's temp
  folder; the cluster and its slurmctld are left alone) and gives submitit a copy of
  slurm.conf that points sacct at it (``SLURM_CONF``). slurmdbd counts RPCs per user too
  (``sacctmgr show stats``): that is submitit's cost with accounting on. The private
  database holds no jobs, so sacct answers "no such job" and submitit keeps polling as it
  does for jobs that have not ended. ``--no-dbd``: count its sacct calls only.
- ``--compare-pyz OLD.pyz``: one more user runs ``OLD.pyz wait`` (e.g. nexa before this
  change) on the same array.

Root only (users, sdiag). The array is cancelled and the users removed at the end.

    python tests/bench/bench_rpc.py [--tasks 1000] [--minutes 10] [--mode held|run]
        [--chunk 25] [--status-every 10] [--compare-pyz PATH] [--pyz PATH]
"""

import argparse
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PYTHON = "/usr/bin/python3"  # every bench user can run it (pyenv's live under /root)
SUBMITIT_VENV = Path(tempfile.gettempdir()) / "nexa-bench-submitit"

SUBMITIT_FOLLOWER = """
import sys, time, submitit
folder, ids, seconds = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
jobs = [submitit.SlurmJob(folder, job_id) for job_id in ids]
end = time.time() + seconds
left = jobs
while left and time.time() < end:
    left = [job for job in left if not job.done()]  # as Job.results() does, job after job
    time.sleep(1)
print(submitit.SlurmJob.watcher.num_calls)
"""


def sdiag() -> Dict[str, Dict[str, int]]:
    """RPC counts by message type and by user id."""
    text = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    out: Dict[str, Dict[str, int]] = {"type": {}, "user": {}}
    section = None
    for line in text.splitlines():
        if "statistics by message type" in line:
            section = "type"
        elif "statistics by user" in line:
            section = "user"
        elif "Pending RPC" in line:
            section = None
        # "\tREQUEST_JOB_INFO   ( 2003) count:49 ..."; a long user name touches its "(uid)"
        match = re.match(r"\s+(\S+?)\s*\(\s*(\d+)\)\s+count:(\d+)", line)
        if section and match:
            key = match.group(1) if section == "type" else match.group(2)  # users by uid
            out[section][key] = int(match.group(3))
    return out


def delta(after: Dict[str, int], before: Dict[str, int]) -> Dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


class Users:
    """Throwaway users, one per follower, removed at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.names: List[str] = []

    def add(self, role: str) -> str:
        name = f"nexa-rpc-{role}-{os.getpid()}"
        home = self.base / f"home-{role}"
        home.mkdir(mode=0o755)
        subprocess.run(["useradd", "-M", "-U", "-d", str(home), "-s", "/bin/sh", name], check=True, capture_output=True)
        self.names.append(name)
        shutil.chown(str(home), name, name)
        return name

    def env(self, name: str, path: str = "/usr/bin:/bin") -> List[str]:
        home = self.base / f"home-{name.split('-')[2]}"  # nexa.pyz extracts there too (SHIV_ROOT), removed at the end
        return ["runuser", "-u", name, "--", "env", "-i", f"PATH={path}", f"HOME={home}", f"SHIV_ROOT={home}/shiv", "LANG=C.UTF-8"]

    def remove(self) -> None:
        for name in self.names:
            subprocess.run(["userdel", name], capture_output=True)


class PrivateDbd:
    """MariaDB + slurmdbd of this script's own, for sacct to talk to (never the cluster's)."""

    DB_PORT, DBD_PORT = 3309, 6839

    def __init__(self, base: Path) -> None:
        self.dir = base / "dbd"
        self.conf = self.dir / "slurm.conf"
        self.pids: List[Path] = []

    def start(self) -> None:
        d = self.dir
        for sub in ("mysql", "run", "log"):
            (d / sub).mkdir(parents=True)
        shutil.chown(str(d / "mysql"), "mysql", "mysql")
        shutil.chown(str(d / "run"), "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={d / 'mysql'}", "--skip-test-db"],
                       check=True, capture_output=True)
        sock = d / "run" / "mysqld.sock"
        subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql", f"--datadir={d / 'mysql'}", f"--socket={sock}",
             f"--pid-file={d / 'run' / 'mysqld.pid'}", f"--log-error={d / 'run' / 'mysqld.log'}", "--bind-address=127.0.0.1",
             f"--port={self.DB_PORT}", "--skip-name-resolve", "--innodb-buffer-pool-size=16M"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.pids.append(d / "run" / "mysqld.pid")
        sql = "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'bench'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        self._retry(["mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql], "MariaDB")
        real = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
        lines = [line for line in real.splitlines() if not line.startswith(("AccountingStorage", "JobAcctGather"))]
        lines += ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
                  f"AccountingStoragePort={self.DBD_PORT}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.conf.chmod(0o644)
        dbd = d / "slurmdbd.conf"
        dbd.write_text(
            f"AuthType=auth/munge\nDbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={self.DBD_PORT}\nSlurmUser=root\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={self.DB_PORT}\nStorageUser=slurm\n"
            f"StoragePass=bench\nStorageLoc=slurm_acct_db\nPidFile={d / 'slurmdbd.pid'}\nLogFile={d / 'log' / 'slurmdbd.log'}\n"
        )
        dbd.chmod(0o600)
        subprocess.run(["slurmdbd"], env=self.env(), check=True)
        self.pids.insert(0, d / "slurmdbd.pid")
        cluster = next((line.split("=", 1)[1] for line in lines if line.startswith("ClusterName=")), "cluster")
        self._retry(["sacctmgr", "-i", "add", "cluster", cluster], "slurmdbd")

    def env(self) -> Dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def _retry(self, argv: List[str], what: str) -> None:
        for _ in range(100):
            if subprocess.run(argv, env=self.env(), capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit(f"the private {what} does not answer")

    def rpcs_by_user(self) -> Dict[str, int]:
        """slurmdbd's RPC counts by user id (``sacctmgr show stats``)."""
        text = subprocess.run(["sacctmgr", "show", "stats"], env=self.env(), capture_output=True, text=True).stdout
        part = text.split("statistics by user", 1)[-1]
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"\(\s*(\d+)\)\s+count:(\d+)", part)}

    def stop(self) -> None:
        for pid_file in self.pids:  # slurmdbd first, then its database
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
                except OSError:
                    break
                if state == "Z":
                    break
                time.sleep(0.1)


def submitit_python() -> str:
    """A venv of its own with submitit from PyPI (made once, kept under $TMPDIR)."""
    python = SUBMITIT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([PYTHON, "-m", "venv", str(SUBMITIT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "submitit"], check=True)
    version = subprocess.run([str(python), "-c", "import submitit; print(submitit.__version__)"], capture_output=True, text=True)
    print(f"submitit {version.stdout.strip()} in {SUBMITIT_VENV}")
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--mode", choices=("held", "run"), default="held")
    parser.add_argument("--chunk", type=int, default=25, help="[cluster] max_array_size (the chunk size)")
    parser.add_argument("--status-every", type=float, default=10.0)
    parser.add_argument("--compare-pyz", help="another nexa.pyz whose `wait` follows the same array")
    parser.add_argument("--pyz", help="an existing nexa.pyz (default: build one now)")
    parser.add_argument("--no-dbd", action="store_true", help="no private slurmdbd: count submitit's sacct calls only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_rpc.py needs root (sdiag counters, throwaway users)")
    window = args.minutes * 60
    sub_python = submitit_python()
    base = Path(tempfile.mkdtemp(prefix="nexa-bench-rpc-"))
    base.chmod(0o755)
    users = Users(base)
    dbd = None if args.no_dbd else PrivateDbd(base)
    jobs: List[str] = []
    try:
        if dbd:
            dbd.start()
        if args.pyz:
            app = base / "nexa.pyz"
            shutil.copy(args.pyz, app)
        else:
            from nexa_ops import pyz

            app = pyz.build(pyz.load_settings(str(ROOT / "shiv.toml")), str(base / "nexa.pyz")).path
        old = None
        if args.compare_pyz:
            old = base / "old.pyz"
            shutil.copy(args.compare_pyz, old)
        waiter, looper, watcher = users.add("wait"), users.add("status"), users.add("submitit")
        other = users.add("old") if old else None
        project = base / "project"
        project.mkdir()
        extra = '["--hold"]' if args.mode == "held" else '["--nice=10000"]'
        command = '["true"]' if args.mode == "held" else '["sh", "-c", "sleep 1", "sh"]'
        (project / "nexa.toml").write_text(f'[cluster]\npython = "{PYTHON}"\nmax_array_size = {args.chunk}\n')
        (project / "rpc.toml").write_text(
            f'name = "rpc"\ncommand = {command}\narg_format = "{{key}}={{value}}"\n[grid]\ni = {list(range(args.tasks))}\n'
            f"[resources]\ncpus_per_task = 1\nextra = {extra}\n"
        )
        subprocess.run(["chown", "-R", f"{waiter}:{waiter}", str(project)], check=True)
        run = project / "run"

        before = sdiag()
        start = time.monotonic()
        cli = [PYTHON, str(app)]
        submit = subprocess.run(
            users.env(waiter) + cli + ["sweep", "--config", "rpc.toml", "--submit", "--out", str(run)],
            cwd=project, capture_output=True, text=True,
        )
        submit_seconds = time.monotonic() - start
        if submit.returncode != 0:
            raise SystemExit(f"submission failed: {submit.stderr[-800:]}")
        manifest = json.loads((run / "manifest.json").read_text())
        jobs = [str(j) for j in manifest["job_ids"]]
        elements = [f"{c['job_id']}_{i}" for c in manifest["chunks"] for i in range(c["count"])]
        submitted = sdiag()
        sent = delta(submitted["user"], before["user"]).get(str(pwd.getpwnam(waiter).pw_uid), 0)
        print(f"{args.tasks} tasks as {len(jobs)} array jobs of up to {args.chunk} ({args.mode}), submitted in {submit_seconds:.2f} s"
              f" with {sent} RPCs; following for up to {args.minutes:g} min")

        bin_dir = base / "bin"
        bin_dir.mkdir(mode=0o755)
        calls_log = base / "sacct.calls"
        calls_log.touch()
        shutil.chown(str(calls_log), watcher, watcher)
        (bin_dir / "sacct").write_text(f'#!/bin/sh\necho "$@" >> {calls_log}\nexec /usr/bin/sacct "$@"\n')
        (bin_dir / "sacct").chmod(0o755)
        (base / "follow_submitit.py").write_text(SUBMITIT_FOLLOWER)
        folder = base / "submitit"
        folder.mkdir(mode=0o777)

        loop = (f'end=$(( $(date +%s) + {int(window)} )); n=0; while [ "$(date +%s)" -lt "$end" ]; do '
                f'{PYTHON} {app} status {run} >/dev/null; n=$((n+1)); sleep {args.status_every}; done; echo $n')
        followers = {
            "nexa wait": subprocess.Popen(users.env(waiter) + cli + ["wait", str(run), "--timeout", str(window)], cwd=project,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            "nexa status loop": subprocess.Popen(users.env(looper) + ["sh", "-c", loop], cwd=base, stdout=subprocess.PIPE, text=True),
            "submitit watcher": subprocess.Popen(
                users.env(watcher, f"{bin_dir}:/usr/bin:/bin") + ([f"SLURM_CONF={dbd.conf}"] if dbd else [])
                + [sub_python, str(base / "follow_submitit.py"), str(folder), ",".join(elements), str(window)],
                cwd=base, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            ),
        }
        if old:
            followers["nexa wait (compared build)"] = subprocess.Popen(
                users.env(other) + [PYTHON, str(old), "wait", str(run), "--timeout", str(window)], cwd=project,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        who = {"nexa wait": waiter, "nexa status loop": looper, "submitit watcher": watcher, "nexa wait (compared build)": other}
        dbd_before = dbd.rpcs_by_user() if dbd else {}
        began = time.monotonic()
        took: Dict[str, float] = {}
        outputs: Dict[str, str] = {}
        while len(took) < len(followers):
            for name, proc in followers.items():
                if name not in took and proc.poll() is not None:
                    took[name] = time.monotonic() - began
                    text = proc.stdout.read().strip() if proc.stdout else ""
                    outputs[name] = text.splitlines()[-1] if text else ""  # submitit logs its sacct failures too
            time.sleep(0.5)
        after = sdiag()
        users_delta = delta(after["user"], submitted["user"])
        types = delta(after["type"], submitted["type"])
        sacct_calls = len(calls_log.read_text().splitlines())
        uid = str(pwd.getpwnam(watcher).pw_uid)
        dbd_rpcs = dbd.rpcs_by_user().get(uid, 0) - dbd_before.get(uid, 0) if dbd else None
        print(f"window {max(took.values()) / 60:.1f} min; per follower: its own RPCs to slurmctld (sdiag, by user)")
        for name in followers:
            minutes = took[name] / 60
            count = users_delta.get(str(pwd.getpwnam(who[name]).pw_uid), 0) if who[name] else 0
            line = f"  {name:27s} {count:5d} RPCs in {minutes:4.1f} min = {count / minutes:6.1f} per minute"
            if name == "submitit watcher":
                line += f"; its sacct calls: {sacct_calls} (watcher.num_calls {outputs[name]})"
                if dbd_rpcs is not None:
                    line += f"\n  {'':27s} {dbd_rpcs:5d} RPCs to slurmdbd = {dbd_rpcs / minutes:6.1f} per minute (accounting on)"
            if name == "nexa status loop":
                line += f"; {outputs[name]} status calls"
            print(line)
        print("  all users, by message type: " + ", ".join(f"{k} {v}" for k, v in sorted(types.items(), key=lambda kv: -kv[1])[:8]))
    finally:
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True)
        if dbd:
            dbd.stop()
        users.remove()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
