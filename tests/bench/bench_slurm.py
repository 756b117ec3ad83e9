"""Benchmark on the real local Slurm: a 1,000-task array of a trivial Python command, raw
``sbatch --array`` vs ``nexa sweep --submit``, the per-task overhead of nexa's array script and
worker, and the submission latency against submitit's ``map_array``, in one run.

- **End to end**: raw is ``sbatch --array`` of a script that runs the command; nexa is
  ``python3 nexa.pyz sweep --submit`` of a sweep of the same command, from a freshly built
  zipapp as on a cluster. Both are split into arrays of at most the cluster's MaxArraySize
  (read from ``scontrol show config``; the cluster is used as it is, never restarted), and
  timed from submission until the last task has left the queue, alternating, ``--rounds``
  times. Other users' jobs share the cluster: read the ratio.
- **Per task**: what a task costs on its node without the scheduler: the raw script and
  nexa's array script (start record, the worker's argv lookup, the program, the end record)
  each run ``--local-tasks`` times by bash here, with the ``SLURM_*`` variables a node sets;
  milliseconds per task and the ratio (target within 1.05x).
- **Submission latency** (CLI start included): nexa.pyz ``sweep --submit`` vs a script that
  imports submitit and calls ``map_array`` (submitit 1.5 from PyPI in a venv of its own, as
  tests/bench/bench_rpc.py makes it), both run by the same interpreter, ``/usr/bin/python3``,
  alternating, ``--latency-runs`` times (medians and ranges). submitit submits one array,
  which Slurm refuses above MaxArraySize: start the cluster as the issue has it
  (``NEXA_SLURM_MAX_ARRAY=1001 tests/cluster/slurm.sh start``) for ``--tasks`` 1,000 in one
  array each way. On a smaller MaxArraySize it is also measured at the largest count the
  cluster takes in one array (both sides), and at ``--tasks`` nexa submits chunks while
  submitit's client work ends at sbatch's refusal.

The trivial command is ``python3 -c 'import sys; sys.exit(0)'`` with ``python3`` from PATH for
both, as a researcher would type it. The worker's own interpreter is ``[cluster] python``,
set to the real interpreter behind this venv (a pyenv shim would cost ~100 ms per task).

    python tests/bench/bench_slurm.py [--tasks 1000] [--rounds 1] [--local-tasks 300]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[2]
# Measured as in a user's shell, which does not set PYTHONDONTWRITEBYTECODE: with it, the
# modules nexa.pyz loads after start-up would be compiled again on every run.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from bench_rpc import submitit_python  # noqa: E402

COMMAND = "python3 -c 'import sys; sys.exit(0)'"
PYTHON = os.path.realpath(sys.executable)
SYSTEM_PYTHON = "/usr/bin/python3"
SUBMITIT = """
import sys, time
import submitit
folder, count = sys.argv[1], int(sys.argv[2])
executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
executor.update_parameters(timeout_min=5, cpus_per_task=1, slurm_array_parallelism=count)
try:
    jobs = executor.map_array(abs, range(count))
    print(jobs[0].job_id.split("_")[0])
except Exception as exc:  # above MaxArraySize: sbatch refuses the array
    print("refused", str(exc).splitlines()[-1][:200])
"""


def max_array_size() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
    return int(match.group(1)) if match else 1001


def wait_gone(jobs: List[str], poll: float = 0.5) -> None:
    while True:
        out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(jobs + jobs[:1]), "-o", "%i"], capture_output=True, text=True)
        if not out.stdout.strip():
            return
        time.sleep(poll)


def raw(tmp: Path, tasks: int, limit: int) -> Tuple[float, float]:
    script = tmp / "raw.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --output={tmp}/raw_%A_%a.out\n#SBATCH --cpus-per-task=1\n{COMMAND}\n")
    start = time.perf_counter()
    jobs = []
    for offset in range(0, tasks, limit):
        count = min(limit, tasks - offset)
        out = subprocess.run(["sbatch", "--parsable", f"--array=0-{count - 1}", str(script)], capture_output=True, text=True, check=True)
        jobs.append(out.stdout.strip().split(";")[0])
    submitted = time.perf_counter() - start
    wait_gone(jobs)
    return submitted, time.perf_counter() - start


def project(tmp: Path, tasks: int, name: str = "project") -> Path:
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    (folder / "nexa.toml").write_text(f'[cluster]\npython = "{PYTHON}"\n')
    (folder / "sweep.toml").write_text(
        'name = "bench"\ncommand = ["python3", "-c", "import sys; sys.exit(0)"]\n'
        f"[grid]\ni = {list(range(tasks))}\n[resources]\ncpus_per_task = 1\n"
    )
    return folder


def submitted_jobs(stdout: str) -> List[str]:
    line = next(line for line in stdout.splitlines() if "Submitted job array" in line)
    return line.split("Submitted job array ", 1)[1].split(" (", 1)[0].split(", ")


def nexa(tmp: Path, app: Path, tasks: int) -> Tuple[float, float]:
    folder = project(tmp, tasks)
    start = time.perf_counter()
    argv = [PYTHON, str(app), "sweep", "--config", "sweep.toml", "--submit"]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=folder, check=True)
    submitted = time.perf_counter() - start
    wait_gone(submitted_jobs(out.stdout))
    return submitted, time.perf_counter() - start


def per_task(tmp: Path, app: Path, count: int) -> Tuple[float, float, float]:
    """Seconds per task of the raw script and of nexa's array script, run here by bash, and
    of ``python -S -c pass`` (the worker's interpreter start, most of the difference)."""
    raw_script = tmp / "raw-local.sh"
    raw_script.write_text(f"#!/bin/bash\n{COMMAND}\n")
    folder = project(tmp, count, "local")
    subprocess.run([PYTHON, str(app), "sweep", "--config", "sweep.toml", "--out", "run"], cwd=folder, check=True, capture_output=True)
    script = folder / "run" / "bench.sbatch"
    times = {"raw": [], "nexa": [], "python -S": []}
    for _ in range(count):
        start = time.perf_counter()
        subprocess.run([PYTHON, "-S", "-c", "pass"], check=True)
        times["python -S"].append(time.perf_counter() - start)
    for i in range(count):
        # What a node sets (sbatch passes the umask at submission as SLURM_UMASK).
        env = dict(os.environ, SLURM_ARRAY_JOB_ID="1", SLURM_ARRAY_TASK_ID=str(i), SLURM_JOB_ID=str(2 + i), SLURMD_NODENAME="n1",
                   SLURM_UMASK="0022")
        env.pop("SLURM_RESTART_COUNT", None)
        for name, argv in (("raw", ["bash", str(raw_script)]), ("nexa", ["bash", str(script), "0"])):
            start = time.perf_counter()
            subprocess.run(argv, env=env, cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["raw"]), statistics.median(times["nexa"]), statistics.median(times["python -S"])


def latency(tmp: Path, app: Path, sub_python: str, count: int, tag: str, runs: int) -> Tuple[List[float], List[float], str]:
    """Seconds of each of ``runs`` submissions of ``count`` tasks, nexa then submitit in turn, CLI or
    interpreter start included, both run by /usr/bin/python3; the jobs are cancelled at once.
    Returns (nexa seconds, submitit seconds, submitit's last outcome)."""
    folder = project(tmp, count, f"latency-{tag}")
    env = dict(os.environ, SHIV_ROOT=str(tmp / "shiv"))
    # Warm, as on a login node after the first use: extracted, and the .pyc of what a sweep
    # imports written (a plan without --submit), as submitit's come compiled from pip.
    subprocess.run([SYSTEM_PYTHON, str(app), "sweep", "--config", "sweep.toml", "--out", "warm"], cwd=folder, env=env, capture_output=True)
    script = tmp / "submitit_map_array.py"
    script.write_text(SUBMITIT)
    nexa_s, sub_s, outcome = [], [], ""
    for i in range(runs):
        start = time.perf_counter()
        out = subprocess.run([SYSTEM_PYTHON, str(app), "sweep", "--config", "sweep.toml", "--submit"], capture_output=True, text=True,
                             cwd=folder, env=env, check=True)
        nexa_s.append(time.perf_counter() - start)
        subprocess.run(["scancel", *submitted_jobs(out.stdout)], capture_output=True)
        start = time.perf_counter()
        folder_i = tmp / f"submitit-{tag}-{i}"
        out = subprocess.run([sub_python, str(script), str(folder_i), str(count)], capture_output=True, text=True, cwd=tmp)
        sub_s.append(time.perf_counter() - start)
        outcome = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()[-200:]
        if outcome.isdigit():
            subprocess.run(["scancel", outcome], capture_output=True)
            outcome = f"one array, job {outcome}"
    return nexa_s, sub_s, outcome


def spread(values: List[float]) -> str:
    """``median s (min-max)``."""
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--local-tasks", type=int, default=300)
    parser.add_argument("--latency-runs", type=int, default=3,
                        help="submissions each way for the latency (default 3: cancelled arrays count towards MaxJobCount until MinJobAge)")
    parser.add_argument("--pyz", help="an existing nexa.pyz (default: build one now)")
    parser.add_argument("--parts", default="latency,task,arrays", help="which parts to run (default: all three)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    limit = max_array_size()
    sub_python = submitit_python()
    results = {"raw": [], "nexa": []}
    with tempfile.TemporaryDirectory(prefix="nexa-bench-slurm-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)
        if args.pyz:
            app = tmp / "nexa.pyz"
            shutil.copy(args.pyz, app)
        else:
            from nexa_ops import pyz

            app = pyz.build(pyz.load_settings(str(ROOT / "shiv.toml")), str(tmp / "nexa.pyz")).path
        one = min(limit - 1, args.tasks)
        counts = sorted({min(24, args.tasks), one, args.tasks})  # a small sweep too: submitit's cost grows with the count
        if "latency" in parts:
            lat = {count: latency(tmp, app, sub_python, count, str(count), args.latency_runs) for count in counts}
        if "task" in parts:
            raw_task, nexa_task, bare = per_task(tmp, app, args.local_tasks)
        for i in range(args.rounds if "arrays" in parts else 0):
            (tmp / f"r{i}").mkdir()
            (tmp / f"n{i}").mkdir()
            for name in ("raw", "nexa"):
                results[name].append(raw(tmp / f"r{i}", args.tasks, limit) if name == "raw" else nexa(tmp / f"n{i}", app, args.tasks))
                print(f"  {name}: submit {results[name][-1][0]:.2f} s, all done {results[name][-1][1]:.1f} s", flush=True)
    chunks = -(-args.tasks // limit)
    if "arrays" in parts:
        best = {k: min(v, key=lambda r: r[1]) for k, v in results.items()}
        print(f"{args.tasks}-task array on the local Slurm (MaxArraySize {limit}: {chunks} arrays each way), best of {args.rounds}:")
        print(f"  raw sbatch : submit {best['raw'][0]:.2f} s, finished {best['raw'][1]:.1f} s"
              f" ({best['raw'][1] / args.tasks * 1000:.1f} ms per task)")
        print(f"  nexa sweep : submit {best['nexa'][0]:.2f} s, finished {best['nexa'][1]:.1f} s"
              f" ({best['nexa'][1] / args.tasks * 1000:.1f} ms per task)")
        print(f"  ratio nexa / raw: {best['nexa'][1] / best['raw'][1]:.2f}x (end to end, shared cluster)")
    if "task" in parts:
        print(f"per task on the node ({args.local_tasks} tasks each, median): raw script {raw_task * 1000:.1f} ms,"
              f" nexa's array script + worker {nexa_task * 1000:.1f} ms: +{(nexa_task - raw_task) * 1000:.1f} ms,"
              f" {nexa_task / raw_task:.2f}x (target <= 1.05x); one `python -S -c pass` here: {bare * 1000:.1f} ms")
    for count in counts if "latency" in parts else ():
        nexa_s, sub_s, outcome = lat[count]
        ratio = statistics.median(nexa_s) / statistics.median(sub_s)
        print(f"submission latency, {count} tasks (MaxArraySize {limit}), /usr/bin/python3, start included, {len(nexa_s)} runs:"
              f" nexa.pyz sweep --submit {spread(nexa_s)}; submitit import + map_array {spread(sub_s)} ({outcome});"
              f" nexa / submitit {ratio:.2f}x (target <= 1)")

if __name__ == "__main__":
    main()
