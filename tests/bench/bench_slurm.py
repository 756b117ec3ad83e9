"""Benchmark on the real local Slurm: a 1,000-task array of a trivial Python command.

Raw: ``sbatch --array=0-999`` of a script that runs the command. nexa: ``python3 nexa.pyz
sweep --submit`` of a 1,000-task sweep of the same command, from a freshly built zipapp as on a
cluster (the first task imports the worker from the pyz, the rest load its cached code; records included). Both are
timed from submission until the last task has left the queue, in one run, alternating.
Also prints the submission latency (the CLI call alone). Target: nexa within 1.15x of raw.

The trivial command is ``python3 -c 'import sys; sys.exit(0)'`` with ``python3`` from PATH for
both, as a researcher would type it (on these machines a pyenv shim, as when the peers were
measured). The worker's own interpreter is ``[cluster] python``, set here to the real
interpreter behind this venv: a shim would cost the worker ~100 ms per task (see docs/config.md, cluster.python).

Restarts the test cluster with MaxArraySize=1001 (tests/cluster/slurm.sh), as peers were
measured with the default limit.

    python tests/bench/bench_slurm.py [--tasks 1000] [--rounds 1]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_gone(job: str, poll: float = 0.25) -> None:
    while True:
        out = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i"], capture_output=True, text=True)
        if not out.stdout.strip():
            return
        time.sleep(poll)


def raw(tmp: Path, tasks: int):
    script = tmp / "raw.sbatch"
    script.write_text(
        f"#!/bin/bash\n#SBATCH --output={tmp}/raw_%A_%a.out\n#SBATCH --cpus-per-task=1\npython3 -c 'import sys; sys.exit(0)'\n"
    )
    start = time.perf_counter()
    job = subprocess.run(["sbatch", "--parsable", f"--array=0-{tasks - 1}", str(script)], capture_output=True, text=True, check=True)
    submitted = time.perf_counter() - start
    wait_gone(job.stdout.strip().split(";")[0])
    return submitted, time.perf_counter() - start


PYZ = Path()  # built once in main()


def nexa(tmp: Path, tasks: int):
    project = tmp / "project"
    project.mkdir(exist_ok=True)
    (project / "nexa.toml").write_text(f'[cluster]\npython = "{os.path.realpath(sys.executable)}"\n')
    sweep = project / "sweep.toml"
    sweep.write_text(
        'name = "bench"\n'
        'command = ["python3", "-c", "import sys; sys.exit(0)"]\n'
        f"[grid]\ni = {list(range(tasks))}\n[resources]\ncpus_per_task = 1\n"
    )
    start = time.perf_counter()
    out = subprocess.run(
        [os.path.realpath(sys.executable), str(PYZ), "sweep", "--config", str(sweep), "--submit"],
        capture_output=True,
        text=True,
        cwd=project,
        check=True,
    )
    submitted = time.perf_counter() - start
    jobs = [
        line.split("Submitted job array ")[1].split(" ")[0].rstrip(",") for line in out.stdout.splitlines() if "Submitted job array" in line
    ]
    wait_gone(jobs[0])
    return submitted, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    env = dict(os.environ, NEXA_SLURM_MAX_ARRAY="1001")
    subprocess.run(["bash", str(ROOT / "tests" / "cluster" / "slurm.sh"), "start"], env=env, check=True)
    results = {"raw": [], "nexa": []}
    with tempfile.TemporaryDirectory() as tmp:
        global PYZ
        sys.path.insert(0, str(ROOT))
        from nexa_ops import pyz

        PYZ = pyz.build(pyz.load_settings(str(ROOT / "shiv.toml")), str(Path(tmp) / "nexa.pyz")).path
        for _ in range(args.rounds):
            for name, func in (("raw", raw), ("nexa", nexa)):
                results[name].append(func(Path(tmp), args.tasks))
                print(f"  {name}: submit {results[name][-1][0]:.2f} s, all done {results[name][-1][1]:.1f} s", flush=True)
    best = {k: min(v, key=lambda r: r[1]) for k, v in results.items()}
    print(f"{args.tasks}-task array on the local Slurm (16 slots), best of {args.rounds}:")
    print(f"raw sbatch : submit {best['raw'][0]:.2f} s, finished {best['raw'][1]:.1f} s")
    print(f"nexa sweep : submit {best['nexa'][0]:.2f} s, finished {best['nexa'][1]:.1f} s")
    print(f"ratio nexa / raw: {best['nexa'][1] / best['raw'][1]:.2f}x (target <= 1.15x)")
    subprocess.run(["bash", str(ROOT / "tests" / "cluster" / "slurm.sh"), "start"], check=True)  # back to the test limit


if __name__ == "__main__":
    main()
