"""Benchmark: a finished 10,000-task run: ``nexa status`` and ``nexa results`` from nexa.pyz
(wall time and peak memory, start-up included), the file-system calls they make per task
(``strace -c -f``), and the plan + submit time of a 10,000-task sweep.

The local test cluster (MaxArraySize 25, MaxJobCount 10000, shared with other test runs)
cannot hold a 10,000-task array, so the run is synthetic: planned by nexa itself as 10
chunks of 1,000 (``[cluster] max_array_size = 1000``), and every task run here by the
real array script and worker (``bash run.sbatch OFFSET`` with the ``SLURM_*`` variables a
compute node sets), so each task's start record, end record and metrics line are the real
ones. The job ids in its manifest are ones Slurm does not know (as after MinJobAge), so
``status`` asks squeue once, hears nothing, and reads the records.

Plan + submit: the plan of 10,000 tasks from nexa.pyz (CLI start included), plus the
measured cost of one chunk's submission (``sbatch`` of a held 25-task array, cancelled at
once, and the two manifest writes) times the 10 chunks a MaxArraySize of 1001 gives.

Targets (issue 19): submit under 0.5 s; status under 0.5 s; results under 1 s; memory under
100 MB.

    python tests/bench/bench_scale.py [--tasks 10000] [--repeat 5] [--dir DIR]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
# Measured as in a user's shell, which does not set PYTHONDONTWRITEBYTECODE: with it, the
# modules nexa.pyz loads after start-up would be compiled again on every run.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.path.insert(0, str(ROOT))

from nexa_ops import pyz, runs  # noqa: E402

CHUNK = 1000
FAKE_JOB = 90_000_001  # job ids the test cluster has not reached: Slurm knows nothing of them
# Each task writes one metrics line (its loss is its index), with the shell alone.
COMMAND = ["sh", "-c", 'printf \'{"step": 1, "loss": %s}\\n\' "${1#--i=}" > "$NEXA_METRICS_FILE"', "sh"]


def python() -> str:
    """The interpreter behind this venv (nexa.pyz brings its own dependencies)."""
    return os.path.realpath(sys.executable)


def project(root: Path, tasks: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "nexa.toml").write_text(f'[cluster]\npython = "{python()}"\nmax_array_size = {CHUNK}\n')
    sweep = root / "sweep.toml"
    sweep.write_text(f'name = "big"\ncommand = {json.dumps(COMMAND)}\n[grid]\ni = {list(range(tasks))}\n')
    return sweep


def populate(root: Path, app: Path, tasks: int) -> Path:
    """Plan the sweep with nexa.pyz, write its manifest as ``sweep --submit`` would for 10
    chunks, and run every task through the real array script."""
    sweep = project(root, tasks)
    run_dir = root / "run"
    subprocess.run([python(), str(app), "sweep", "--config", str(sweep), "--out", str(run_dir)], cwd=root, check=True, capture_output=True)
    chunks = [{"offset": o, "count": min(CHUNK, tasks - o), "job_id": str(FAKE_JOB + o // CHUNK)} for o in range(0, tasks, CHUNK)]
    manifest = runs.new_manifest("big", "big", "slurm", spec=str(run_dir / "spec.json"), script=str(run_dir / "big.sbatch"),
                                 tasks=tasks, job_ids=[c["job_id"] for c in chunks], chunks=chunks)
    runs.write_manifest(run_dir, manifest)
    script = str(run_dir / "big.sbatch")

    def one(index: int) -> None:
        chunk = chunks[index // CHUNK]
        env = dict(os.environ, SLURM_ARRAY_JOB_ID=chunk["job_id"], SLURM_ARRAY_TASK_ID=str(index - chunk["offset"]),
                   SLURM_JOB_ID=str(FAKE_JOB + 100 + index), SLURMD_NODENAME=f"n{1 + index % 2}")
        env.pop("SLURM_RESTART_COUNT", None)
        subprocess.run(["bash", script, str(chunk["offset"])], env=env, cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(tasks)))
    print(f"ran {tasks:,} tasks through the array script in {time.perf_counter() - start:.0f} s")
    return run_dir


def timed(argv: List[str], cwd: Path) -> Tuple[float, int, str]:
    """(wall seconds, peak RSS in KB, stdout) of one command, via GNU time."""
    out = tempfile.NamedTemporaryFile(delete=False)
    out.close()
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *argv], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{argv}: exit {done.returncode}: {done.stderr[-500:]}")
    rss = int(Path(out.name).read_text().split()[-1])
    os.unlink(out.name)
    return wall, rss, done.stdout


def strace_counts(argv: List[str], cwd: Path) -> Dict[str, int]:
    """System calls by name (``strace -c -f``) of one command."""
    report = Path(tempfile.mktemp(prefix="nexa-strace-"))
    subprocess.run(["strace", "-c", "-f", "-o", str(report), *argv], cwd=cwd, capture_output=True, check=False)
    counts: Dict[str, int] = {}
    for line in report.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    report.unlink()
    return counts


def file_opens(argv: List[str], cwd: Path, run_dir: Path) -> Dict[str, int]:
    """How often each file under the run folder was opened by one command."""
    log = Path(tempfile.mktemp(prefix="nexa-strace-"))
    subprocess.run(["strace", "-f", "-e", "trace=openat,open", "-o", str(log), *argv], cwd=cwd, capture_output=True, check=False)
    opened: Dict[str, int] = {}
    for line in log.read_text().splitlines():
        match = re.search(r'open(?:at)?\((?:AT_FDCWD, )?"([^"]+)"', line)
        if match and match.group(1).startswith(str(run_dir)) and "= -1" not in line:
            opened[match.group(1)] = opened.get(match.group(1), 0) + 1
    log.unlink()
    return opened


def submit_cost(root: Path, repeat: int) -> float:
    """Seconds one chunk's submission costs nexa: a real ``sbatch`` of a held 25-task array
    (cancelled at once) plus the run and cost manifest writes, median of ``repeat``."""
    from nexa_ops.cost.book import write_cost_manifest
    from nexa_ops.tools import slurm

    root.mkdir(parents=True, exist_ok=True)
    script = root / "held.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --hold\n#SBATCH --output=/dev/null\ntrue\n")
    manifest = {"run_id": "x", "chunks": [{"offset": i * CHUNK, "count": CHUNK, "job_id": str(i)} for i in range(10)]}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        job = slurm.sbatch(str(script), options=["--array=0-24"])
        runs.write_manifest(root, manifest)
        write_cost_manifest(root / "cost", {"run_id": "x", "kind": "sweep", "chunks": manifest["chunks"]})
        times.append(time.perf_counter() - start)
        slurm.scancel([job])
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", help="reuse or create the run here (populating it takes a few minutes)")
    parser.add_argument("--pyz", help="an existing nexa.pyz (default: build one now)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nexa-bench-scale-") as tmp:
        root = Path(args.dir or tmp).resolve()
        if args.pyz:
            app = Path(args.pyz).resolve()
        else:
            app = pyz.build(pyz.load_settings(str(ROOT / "shiv.toml")), str(Path(tmp) / "nexa.pyz")).path
        run_dir = root / "run"
        tasks_dir = run_dir / "tasks"
        ended = len([e for e in os.scandir(tasks_dir) if e.name.endswith(".end.json")]) if tasks_dir.is_dir() else 0
        if ended != args.tasks:
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir = populate(root, app, args.tasks)
        cli = [python(), str(app)]
        commands = {
            "--help": ["--help"],
            "status": ["status", str(run_dir)],
            "status --json": ["status", str(run_dir), "--json"],
            "results": ["results", str(run_dir)],
            "results --top 5": ["results", str(run_dir), "--top", "5"],
        }
        for _ in range(2):  # warm: the extraction, the page cache
            timed(cli + commands["status"], root)
        figures: Dict[str, List[Tuple[float, int]]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, argv in commands.items():
                figures[name].append(timed(cli + argv, root)[:2])
        print(f"{args.tasks:,}-task finished run, nexa.pyz on Python {sys.version.split()[0]}, {args.repeat} runs each (median, min):")
        for name, values in figures.items():
            walls = [w for w, _ in values]
            peak = max(r for _, r in values) / 1024
            print(f"  nexa {name:16s} {statistics.median(walls):6.3f} s  (min {min(walls):.3f})  peak {peak:5.1f} MB")

        wanted = ("openat", "open", "read", "close", "newfstatat", "fstat", "stat", "lstat", "getdents64", "ioctl", "lseek")
        for name in ("status", "results"):
            calls = strace_counts(cli + commands[name], root)
            opened = file_opens(cli + commands[name], root, run_dir)
            twice = {p: n for p, n in opened.items() if n > 1}
            fs = {k: v for k, v in calls.items() if k in wanted}
            print(f"  {name}: system calls (start-up included) {sum(calls.values()):,}; file ones {fs}")
            print(f"  {name}: {len(opened):,} files of the run folder opened, {len(twice)} more than once {sorted(twice)[:5]}")

        start = time.perf_counter()
        plan_argv = cli + ["sweep", "--config", str(root / "sweep.toml"), "--out", str(root / "plan-only")]
        subprocess.run(plan_argv, cwd=root, check=True, capture_output=True)
        plan = time.perf_counter() - start
        shutil.rmtree(root / "plan-only")
        per_chunk = submit_cost(root / "submit", args.repeat)
        chunks = -(-args.tasks // 1000)
        print(f"  plan {args.tasks:,} tasks from nexa.pyz: {plan:.3f} s; one chunk's sbatch + manifests: {per_chunk * 1000:.1f} ms;"
              f" plan + {chunks} chunks (MaxArraySize 1001): {plan + chunks * per_chunk:.3f} s (target < 0.5 s)")


if __name__ == "__main__":
    main()
