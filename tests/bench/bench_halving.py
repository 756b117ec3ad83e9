"""Benchmark on the real local Slurm: successive halving against the full grid at the largest
budget, side by side, and how long a rung waits for the one before it.

The program trains ``epochs`` epochs of ``--seconds-per-epoch`` each (a sleep), resuming from
its checkpoint in ``$NEXA_TRIAL_DIR``, and reports ``val_loss = (x - c)^2 + 1 / epochs``.

- **halving**: ``[search]`` over N configurations, eta 3, epochs 1..MAX, submitted with
  ``nexa sweep --submit``; timed from the submission until ``nexa_ops.wait`` sees the schedule
  finished.
- **full grid**: the same N configurations at ``epochs = MAX``, one array; timed the same way.

Compute is counted in budget units (epochs): what the schedule plans (trials x budget per
rung), what the trials really trained (a promoted trial resumes: it trains only the
difference), and the full grid's N x MAX. Wall time is end to end, Slurm's scheduling and the
promotion jobs included.

The gap between rungs: from the last end record of rung k (the array script's ``end``) to the
first start record of rung k + 1 (the worker's ``start``), which holds Slurm releasing the
dependent promotion job, its run (its log prints its own seconds), the sbatch of the next
array and that array's first task starting. Target: under 5 s here.

The cluster is shared: other jobs in the queue slow both the same way, and the figures of one
run say so (run it again on a quiet cluster for the table in docs/halving.md).

    python tests/bench/bench_halving.py [--configs 27] [--max-epochs 27] [--seconds-per-epoch 0.2] [--rounds 1] [--max-parallel N]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PROGRAM = '''\
import json, os, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
x, epochs, pause = float(args["x"]), int(args["epochs"]), float(args["seconds"])
folder = os.environ.get("NEXA_TRIAL_DIR")
path = os.path.join(folder, "ckpt.json") if folder else None
done = json.load(open(path))["epochs"] if path and os.path.exists(path) else 0
with open(os.environ["NEXA_METRICS_FILE"], "a") as out:
    for epoch in range(done, epochs):
        time.sleep(pause)
        out.write(json.dumps({"step": epoch, "val_loss": (x - 7.0) ** 2 + 1.0 / (epoch + 1)}) + "\\n")
if path:
    with open(path + ".tmp", "w") as fh:
        json.dump({"epochs": epochs}, fh)
    os.replace(path + ".tmp", path)
print("trained", epochs - done)
'''


def write_project(tmp: Path, configs: int, max_epochs: int, seconds: float, halving: bool, max_parallel: int = 0) -> Path:
    project = tmp / ("halving" if halving else "grid")
    project.mkdir(exist_ok=True)
    (project / "train.py").write_text(PROGRAM)
    python = os.path.realpath(sys.executable)
    (project / "nexa.toml").write_text(f'[cluster]\npython = "{python}"\n')
    lines = [
        f'name = "{project.name}"',
        f'command = ["{python}", "{project / "train.py"}"]',
        "[grid]",
        f"x = {list(range(configs))}",
        "[fixed]",
        f"seconds = {seconds}",
    ]
    if halving:
        lines += ["[search]", 'method = "halving"', 'metric = "val_loss"', "eta = 3"]
        lines += ["[search.budget]", 'param = "epochs"', "min = 1", f"max = {max_epochs}"]
    else:
        lines.append(f"epochs = {max_epochs}")
    lines += ["[resources]", "cpus_per_task = 1", 'time = "00:30:00"'] + ([f"max_parallel = {max_parallel}"] if max_parallel else [])
    (project / "sweep.toml").write_text("\n".join(lines) + "\n")
    return project


def submit_and_wait(project: Path):
    import nexa_ops

    run = project / "run"
    env = dict(os.environ, NEXA_CONFIG=str(project / "nexa.toml"))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nexa_ops", "sweep", "--config", "sweep.toml", "--submit", "--out", str(run)],
        cwd=str(project),
        env=env,
        check=True,
        capture_output=True,
    )
    st = nexa_ops.wait(run, poll=0.25, config=nexa_ops.load_config(project / "nexa.toml"))
    wall = time.perf_counter() - start
    return run, st, wall


def records(run: Path, index: int):
    def read(kind):
        path = run / "tasks" / f"{index}.{kind}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    return read("start"), read("end")


def trained(run: Path, index: int) -> int:
    """Epochs the task really trained: the lines it added to its metrics file."""
    path = run / "metrics" / f"{index}.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def halving_figures(run: Path, st) -> dict:
    plan = st.schedule.schedule
    manifest = json.loads((run / "manifest.json").read_text())
    gaps, promoters = [], []
    for k in range(1, len(manifest["rungs"])):
        before = [plan.index(k - 1, t) for t in manifest["rungs"][k - 1]["trials"]]
        after = [plan.index(k, t) for t in manifest["rungs"][k]["trials"]]
        last_end = max(records(run, i)[1].get("end", 0.0) for i in before)
        first_start = min(records(run, i)[0].get("start", float("inf")) for i in after)
        gaps.append(first_start - last_end)
    for entry in manifest["rungs"]:
        job = entry.get("promote_job_id")
        for log in (run / "logs").glob(f"promote-{entry['rung']}-{job}.out"):
            tail = log.read_text().strip().splitlines()[-1]
            promoters.append(float(tail.strip("()s ")))
    tasks = [t.index for t in st.tasks]
    return {
        "tasks": len(tasks),
        "planned_units": plan.budget_units,
        "trained_units": sum(trained(run, i) for i in tasks),
        "gaps": gaps,
        "promotion_seconds": promoters,
        "winner": st.schedule.winner,
        "rungs": [len(e["trials"]) for e in manifest["rungs"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=27)
    parser.add_argument("--max-epochs", type=int, default=27)
    parser.add_argument("--seconds-per-epoch", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-parallel", type=int, default=0, help="array throttle for both (a smaller share of the cluster)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nexa-bench-halving-") as folder:
        for round_ in range(args.rounds):
            tmp = Path(folder) / f"round{round_}"
            tmp.mkdir()
            order = [True, False] if round_ % 2 == 0 else [False, True]
            for halving in order:
                project = write_project(tmp, args.configs, args.max_epochs, args.seconds_per_epoch, halving, args.max_parallel)
                run, st, wall = submit_and_wait(project)
                if halving:
                    figures = halving_figures(run, st)
                    figures.update(kind="halving", wall=wall)
                else:
                    figures = {
                        "kind": "full grid",
                        "wall": wall,
                        "tasks": len(st.tasks),
                        "planned_units": float(args.configs * args.max_epochs),
                        "trained_units": sum(trained(run, t.index) for t in st.tasks),
                    }
                rows.append(figures)
                print(json.dumps(figures), flush=True)
    print()
    print(f"{args.configs} configurations, epochs 1..{args.max_epochs} (eta 3), {args.seconds_per_epoch} s per epoch", end="")
    print(f", {args.rounds} round(s)" + (f", at most {args.max_parallel} tasks at a time" if args.max_parallel else ""))
    print(f"{'':12}{'tasks':>8}{'planned units':>16}{'trained units':>16}{'wall s':>10}")
    for kind in ("halving", "full grid"):
        mine = [r for r in rows if r["kind"] == kind]
        wall = statistics.median(r["wall"] for r in mine)
        print(f"{kind:12}{mine[0]['tasks']:>8}{mine[0]['planned_units']:>16g}{mine[0]['trained_units']:>16g}{wall:>10.1f}")
    halves = [r for r in rows if r["kind"] == "halving"]
    grid = [r for r in rows if r["kind"] == "full grid"]
    print(
        f"halving / full grid: compute {halves[0]['trained_units'] / grid[0]['trained_units']:.2f}x (trained), "
        f"{halves[0]['planned_units'] / grid[0]['planned_units']:.2f}x (planned); "
        f"wall {statistics.median(r['wall'] for r in halves) / statistics.median(r['wall'] for r in grid):.2f}x"
    )
    gaps = [g for r in halves for g in r["gaps"]]
    promoters = [p for r in halves for p in r["promotion_seconds"]]
    print(f"rungs: {halves[0]['rungs']}; winner: trial {halves[0]['winner']}")
    shown = ", ".join(f"{g:.2f}" for g in gaps)
    print(f"gap from a rung's last task end to the next rung's first task start: {shown} s (max {max(gaps):.2f} s; target < 5 s)")
    print(f"promotion job's own run (decide + submit): {', '.join(f'{p:.2f}' for p in promoters)} s")


if __name__ == "__main__":
    main()
