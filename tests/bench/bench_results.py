"""Benchmark: ``nexa results`` over a 10,000-task run with 100 metric lines per task, against
a floor, in one run.

nexa: what ``nexa results RUN`` does after start-up: ``load_results`` (the run's status from
its spec, manifest and 20,000 task records; one scan of ``metrics/``; every file read and
parsed; ranking) and the table rendered. Floor: ``os.scandir`` of ``metrics/`` +
``open().read()`` of every file + ``json.loads`` of every line, nothing else. Runs alternate
(floor, nexa) ``--repeat`` times on a warm page cache; prints the best of each and the ratio
(target: within 1.5x), and the CLI's wall time once (start-up included).

    python tests/bench/bench_results.py [--tasks 10000] [--lines 100] [--repeat 5] [--dir DIR]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nexa_ops import runs  # noqa: E402
from nexa_ops.config import NexaConfig, load_sweep  # noqa: E402
from nexa_ops.results import load_results, table  # noqa: E402
from nexa_ops.sweep.plan import plan_sweep  # noqa: E402


def populate(root: Path, tasks: int, lines: int) -> Path:
    """A finished local run of ``tasks`` tasks (planned by nexa itself), each with its start
    and end records and ``lines`` metric lines like a trainer writes them."""
    side = int(math.sqrt(tasks))
    sweep = root / "sweep.toml"
    sweep.write_text(
        'name = "bench"\ncommand = ["python", "train.py"]\n[grid]\n'
        f"lr = {json.dumps([round(1e-5 * 1.1**i, 10) for i in range(side)])}\nseed = {json.dumps(list(range(tasks // side)))}\n"
    )
    run_dir = plan_sweep(load_sweep(sweep), NexaConfig(root=root), root / "run").run_dir
    runs.write_manifest(run_dir, {"run_id": "bench", "name": "bench", "backend": "local", "tasks": tasks, "job_ids": [], "chunks": []})
    now = time.time()
    for i in range(tasks):
        with open(run_dir / "tasks" / f"{i}.start.json", "w") as fh:
            fh.write(json.dumps({"index": i, "start": now - 600, "host": "node1", "job_id": None, "restart_count": 0}))
        with open(run_dir / "tasks" / f"{i}.end.json", "w") as fh:
            fh.write(json.dumps({"index": i, "exit_code": 0, "end": now - (i % 300), "job_id": "local"}))
        base = 0.5 + (i % 97) / 100
        with open(run_dir / "metrics" / f"{i}.jsonl", "w") as fh:
            for step in range(1, lines + 1):
                loss = base + 1.0 / step
                fh.write(json.dumps({"step": step * 100, "loss": loss, "val_loss": loss * 1.1, "acc": 1 / (1 + loss), "lr": 1e-4}) + "\n")
    return run_dir


def floor(run_dir: Path) -> int:
    n = 0
    for entry in os.scandir(run_dir / "metrics"):
        with open(entry.path, "rb") as fh:
            for line in fh.read().splitlines():
                json.loads(line)
                n += 1
    return n


def nexa(run_dir: Path) -> int:
    results = load_results(run_dir, config=NexaConfig(root=run_dir.parent))
    table.render_table(results)
    return sum(r.steps for r in results.rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", help="reuse or create the run here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nexa-bench-results-") as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        run_dir = root / "run"
        if not (run_dir / "metrics").is_dir() or sum(1 for _ in os.scandir(run_dir / "metrics")) != args.tasks:
            root.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            run_dir = populate(root, args.tasks, args.lines)
            print(f"wrote {args.tasks:,} tasks x {args.lines} lines in {time.perf_counter() - start:.1f} s")
        size = sum(e.stat().st_size for e in os.scandir(run_dir / "metrics"))
        floor(run_dir)  # warm the page cache for both
        times: dict = {"floor": [], "nexa": []}
        counts = {}
        for _ in range(args.repeat):
            for name, func in (("floor", floor), ("nexa", nexa)):
                start = time.perf_counter()
                counts[name] = func(run_dir)
                times[name].append(time.perf_counter() - start)
        assert counts["floor"] == counts["nexa"] == args.tasks * args.lines, counts
        start = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "nexa_ops", "results", str(run_dir), "--top", "5"], capture_output=True, text=True, cwd=str(root)
        )
        wall = time.perf_counter() - start
        assert cli.returncode == 0, cli.stderr
        f, n = min(times["floor"]), min(times["nexa"])
        print(f"tasks: {args.tasks:,} x {args.lines} lines ({size / 1e6:.0f} MB of metrics), Python {sys.version.split()[0]}")
        print(f"floor (scandir + read + json.loads per line): best {f:.3f} s   runs {', '.join(f'{s:.3f}' for s in times['floor'])}")
        print(f"nexa results (status + metrics + rank + table): best {n:.3f} s   runs {', '.join(f'{s:.3f}' for s in times['nexa'])}")
        print(f"ratio nexa / floor: {n / f:.2f}x (target: within 1.5x)")
        print(f"`nexa results RUN --top 5` wall time, start-up included: {wall:.3f} s")


if __name__ == "__main__":
    main()
