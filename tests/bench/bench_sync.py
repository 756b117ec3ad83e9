"""Benchmark: `nexa sync` vs a bare rsync with the same excludes vs a naive rsync, one run.

    python tests/bench/bench_sync.py [--files 2000] [--runs-mb 500] [--repeat 5]

Starts the throwaway sshd of tests/cluster/sshd.sh on 127.0.0.1 (needs root and openssh-server),
builds a project tree (small files, a big sparse runs/, __pycache__, a .git with many
objects), and times for each way: the first sync into an empty folder, then a no-change
re-sync (3 per round), --repeat rounds taken round-robin; medians (and the re-sync minimum,
the figure least disturbed by background load). Prints the figures and the ratios; asserts nothing.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nexa_ops.config import NexaConfig, SyncConfig  # noqa: E402
from nexa_ops.sync import make_plan, rsync_argv, sync_repository  # noqa: E402
from nexa_ops.tools.rsync import ssh_command  # noqa: E402

SCRIPT = ROOT / "tests" / "cluster" / "sshd.sh"


def build_tree(root: Path, files: int, runs_mb: int) -> None:
    for i in range(files):
        path = root / "src" / f"pkg{i % 40}" / f"mod_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\n" + "x = 1\n" * (i % 50))
    for i in range(5):
        big = root / "runs" / f"run{i}" / "checkpoint.pt"
        big.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as fh:
            fh.truncate(runs_mb * 1024 * 1024 // 5)
    for i in range(40):
        cache = root / "src" / f"pkg{i}" / "__pycache__" / "mod.cpython-311.pyc"
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(os.urandom(4096))
    for i in range(1000):
        obj = root / ".git" / "objects" / f"{i % 256:02x}" / f"{i:038x}"
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(os.urandom(2048))
    (root / ".gitignore").write_text("*.ckpt\nwandb/\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs-mb", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nexa-bench-sync-"))
    state = work / "sshd"
    port = free_port()
    subprocess.run(["bash", str(SCRIPT), "start", str(state), str(port)], check=True)
    try:
        src = work / "project"
        build_tree(src, args.files, args.runs_mb)
        sync_cfg = SyncConfig(
            host="127.0.0.1",
            user="root",
            port=port,
            identity=str(state / "client_ed25519"),
            ssh_options=[f"UserKnownHostsFile={state / 'known_hosts'}", "StrictHostKeyChecking=yes"],
        )
        cfg = NexaConfig(sync=sync_cfg, root=src)
        plan = make_plan(sync_cfg, source=src, runs_dir=src / "runs")
        nexa_args = rsync_argv(plan)
        excludes = [a for a in nexa_args if a.startswith(("--exclude=", "--filter="))]
        ssh = ssh_command(plan.remote)

        def nexa(dest: Path) -> None:
            sync_repository(cfg, dest=str(dest))

        def bare(dest: Path) -> None:
            argv = ["rsync", "-a", "-z", "--mkpath", "-e", ssh, *excludes, f"{src}/", f"root@127.0.0.1:{dest}/"]
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

        def naive(dest: Path) -> None:
            argv = ["rsync", "-a", "-z", "--mkpath", "-e", ssh, f"{src}/", f"root@127.0.0.1:{dest}/"]
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

        (src / "nexa.toml").write_text(
            "[sync]\n"
            f'host = "127.0.0.1"\nuser = "root"\nport = {port}\nidentity = "{state / "client_ed25519"}"\n'
            f'ssh_options = ["UserKnownHostsFile={state / "known_hosts"}", "StrictHostKeyChecking=yes"]\n'
        )

        def nexa_cli(dest: Path) -> None:
            subprocess.run([sys.executable, "-m", "nexa_ops", "sync", "--dest", str(dest)], cwd=src, check=True, stdout=subprocess.DEVNULL)

        ways: Dict[str, Callable[[Path], None]] = {
            "nexa sync (library)": nexa,
            "nexa sync (CLI)": nexa_cli,
            "bare rsync, same excludes": bare,
            "naive rsync, no excludes": naive,
        }
        firsts: Dict[str, List[float]] = {name: [] for name in ways}
        agains: Dict[str, List[float]] = {name: [] for name in ways}
        sizes: Dict[str, int] = {}
        for round_ in range(args.repeat):  # round-robin, so background load hits every way alike
            for i, (name, fn) in enumerate(ways.items()):
                dest = work / "dest" / f"way{i}-round{round_}"
                firsts[name].append(timed(lambda fn=fn, dest=dest: fn(dest)))
                agains[name] += [timed(lambda fn=fn, dest=dest: fn(dest)) for _ in range(3)]
                sizes[name] = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
                shutil.rmtree(dest)
        results = {
            name: [statistics.median(firsts[name]), statistics.median(agains[name]), sizes[name], min(agains[name])] for name in ways
        }

        print(f"Tree: {args.files} small files, {args.runs_mb} MB runs/ (sparse), 40 __pycache__ files, 1000 .git objects")
        print(f"{'way':<28} {'first sync s':>12} {'re-sync s':>10} {'re-sync min':>11} {'arrived MB':>11}")
        for name, (first, again, size, best) in results.items():
            print(f"{name:<28} {first:>12.3f} {again:>10.3f} {best:>11.3f} {size / 1e6:>11.1f}")
        bare_first, bare_again, _, bare_best = results["bare rsync, same excludes"]
        for name in ("nexa sync (library)", "nexa sync (CLI)", "naive rsync, no excludes"):
            first, again, _, best = results[name]
            print(
                f"{name} / bare rsync: first sync {first / bare_first:.2f}x, "
                f"no-change re-sync {again / bare_again:.2f}x (median), {best / bare_best:.2f}x (min)"
            )
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)])
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
