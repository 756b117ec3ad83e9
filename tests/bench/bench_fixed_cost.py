"""Benchmark: the fixed cost of each nexa command (start-up, imports, bookkeeping) against
``python -c "import invoke"``, in one run.

Each command runs from a freshly built nexa.pyz (warm: extracted, page cache hot) and, where
it calls an external tool, that tool's call alone is timed too, with the same arguments:

- ``status RUN`` and ``wait RUN`` (a finished 8-task run) vs their one ``squeue`` call;
- ``sync`` with nothing to send vs bare ``rsync`` with the same arguments, over the
  throwaway sshd of tests/cluster/sshd.sh on 127.0.0.1 (root and openssh-server needed);
- ``results RUN``, ``logs RUN --task 0``, ``cancel RUN --dry-run``, ``sweep`` (plan 8 tasks),
  ``--help``: no tool, all of their time is fixed cost.

Runs alternate (floor, then every command and tool) ``--repeat`` times; the figures are
medians. Fixed cost = command - its tool; the target is within 1.3x of the floor.

    python tests/bench/bench_fixed_cost.py [--repeat 15] [--pyz PATH] [--no-sync]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
# Measured as in a user's shell, which does not set PYTHONDONTWRITEBYTECODE: with it, the
# modules nexa.pyz loads after start-up would be compiled again on every run.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from bench_scale import populate  # noqa: E402

from nexa_ops import pyz  # noqa: E402
from nexa_ops.tools import slurm  # noqa: E402

SSHD = ROOT / "tests" / "cluster" / "sshd.sh"


def once(argv: List[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=str(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: squeue of a job Slurm has forgotten
        raise SystemExit(f"{argv}: exit {done.returncode}: {done.stderr.decode()[-400:]}")
    return seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sync_setup(work: Path) -> Tuple[Path, List[str], Path]:
    """The sshd, a small project that syncs to it, and the bare rsync argv nexa would run."""
    from nexa_ops.config import SyncConfig
    from nexa_ops.sync import make_plan, rsync_argv

    state = work / "sshd"
    port = free_port()
    subprocess.run(["bash", str(SSHD), "start", str(state), str(port)], check=True, capture_output=True)
    project = work / "sync-project"
    for i in range(200):
        path = project / "src" / f"mod_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"x = {i}\n")
    dest = work / "sync-dest"
    options = [f"UserKnownHostsFile={state / 'known_hosts'}", "StrictHostKeyChecking=yes"]
    (project / "nexa.toml").write_text(
        f'[sync]\nhost = "127.0.0.1"\nuser = "root"\nport = {port}\nidentity = "{state / "client_ed25519"}"\n'
        f'ssh_options = {list(options)!r}\ndest = "{dest}"\n'.replace("'", '"')
    )
    identity = str(state / "client_ed25519")
    cfg = SyncConfig(host="127.0.0.1", user="root", port=port, identity=identity, ssh_options=options, dest=str(dest))
    return project, rsync_argv(make_plan(cfg, source=project, runs_dir=project / "runs")), state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--pyz", help="an existing nexa.pyz (default: build one now)")
    parser.add_argument("--no-sync", action="store_true", help="skip sync (no sshd)")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="nexa-bench-fixed-") as tmp:
        work = Path(tmp)
        app = Path(args.pyz).resolve() if args.pyz else pyz.build(pyz.load_settings(str(ROOT / "shiv.toml")), str(work / "nexa.pyz")).path
        root = work / "project"
        run = populate(root, app, 8)
        jobs = [str(c["job_id"]) for c in json.loads((run / "manifest.json").read_text())["chunks"]]
        squeue = ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(jobs), "-O", ",".join(f"{f}:|" for f in slurm.SQUEUE_FIELDS)]
        nexa = [python, str(app)]
        cases: Dict[str, Tuple[List[str], Optional[List[str]], Path]] = {
            "--help": (nexa + ["--help"], None, root),
            "status RUN": (nexa + ["status", str(run)], squeue, root),
            "wait RUN (finished)": (nexa + ["wait", str(run)], squeue, root),
            "results RUN": (nexa + ["results", str(run)], None, root),
            "logs RUN --task 0": (nexa + ["logs", str(run), "--task", "0"], None, root),
            "cancel RUN --dry-run": (nexa + ["cancel", str(run), "--dry-run"], None, root),
            "sweep (plan 8 tasks)": (nexa + ["sweep", "--config", str(root / "small.toml"), "--out", str(work / "plan")], None, root),
        }
        (root / "small.toml").write_text('name = "small"\ncommand = ["true"]\n[grid]\ni = [0, 1, 2, 3, 4, 5, 6, 7]\n')
        state = None
        try:
            if not args.no_sync:
                project, rsync, state = sync_setup(work)
                once(rsync, project)  # the first sync; the measured ones have nothing to send
                cases["sync (nothing to send)"] = (nexa + ["sync"], rsync, project)
            floor = [python, "-c", "import invoke"]
            for argv, _tool, cwd in cases.values():  # warm: extraction, .pyc, page cache
                once(argv, cwd)
            times: Dict[str, List[float]] = {"floor": []}
            for _ in range(args.repeat):
                times["floor"].append(once(floor, root))
                for name, (argv, tool, cwd) in cases.items():
                    times.setdefault(name, []).append(once(argv, cwd))
                    if tool:
                        times.setdefault(name + " tool", []).append(once(tool, cwd))
        finally:
            if state is not None:
                subprocess.run(["bash", str(SSHD), "stop", str(state)], capture_output=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        version = sys.version.split()[0]
        print(f"python {version} ({python}), nexa.pyz warm, {args.repeat} runs each, medians")
        print(f"  floor: python -c 'import invoke'   {med['floor'] * 1000:7.1f} ms")
        print(f"  {'command':28s} {'total':>8s} {'its tool':>9s} {'fixed':>8s} {'fixed/floor':>11s}")
        for name, (_argv, tool, _cwd) in cases.items():
            total = med[name]
            tool_s = med.get(name + " tool", 0.0)
            fixed = total - tool_s
            tool_text = f"{tool_s * 1000:7.1f}ms" if tool else "        -"
            print(f"  {name:28s} {total * 1000:6.1f}ms {tool_text} {fixed * 1000:6.1f}ms {fixed / med['floor']:10.2f}x")
        print("  target: fixed within 1.3x of the floor")


if __name__ == "__main__":
    main()
