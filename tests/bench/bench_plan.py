"""Benchmark: planning a 100,000-task grid vs a bare floor, in one run.

nexa: parse the sweep file, expand (grid product, formatting, argv), write spec.json and the
sbatch script. Floor: ``itertools.product`` building the same task dicts plus ``json.dump``.
Prints both times, the ratio (target: within 2x, under 2 s) and the memory peaks.

    python tests/bench/bench_plan.py [--tasks 100000] [--repeat 3]
"""

import argparse
import itertools
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nexa_ops.config import NexaConfig, load_sweep  # noqa: E402
from nexa_ops.sweep.plan import plan_sweep  # noqa: E402


def grid_for(total: int):
    # 4 keys: 50 x 40 x 10 x (total / 20000)
    last = max(1, total // 20000)
    return {
        "lr": [round(1e-4 * (i + 1), 6) for i in range(50)],
        "bs": [8 * (i + 1) for i in range(40)],
        "seed": list(range(10)),
        "model": [f"m{i}" for i in range(last)],
    }


def floor(grid, out: Path):
    keys = list(grid)
    tasks = []
    for index, combo in enumerate(itertools.product(*grid.values())):
        params = dict(zip(keys, combo))
        argv = ["python", "train.py"] + [f"--{k}={v}" for k, v in params.items()]
        tasks.append({"index": index, "params": params, "argv": argv})
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"tasks": tasks}, fh)
    return len(tasks)


def nexa(sweep_path: Path, out: Path):
    cfg = NexaConfig(root=out)
    artifacts = plan_sweep(load_sweep(sweep_path), cfg, out / "run")
    return artifacts.job_count


def timed(func, *args):
    tracemalloc.start()
    start = time.perf_counter()
    result = func(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    grid = grid_for(args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sweep = tmp / "sweep.toml"
        sweep.write_text(
            'name = "bench"\ncommand = ["python", "train.py"]\n[grid]\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in grid.items())
        )
        best = {}
        for _ in range(args.repeat):
            for name, func, arg in (("floor", floor, (grid, tmp / "floor.json")), ("nexa", nexa, (sweep, tmp))):
                # time without tracemalloc (it slows Python code several-fold), then measure memory once
                start = time.perf_counter()
                count = func(*arg)
                seconds = time.perf_counter() - start
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, count)
        peaks = {
            name: timed(func, *arg)[1] for name, func, arg in (("floor", floor, (grid, tmp / "floor.json")), ("nexa", nexa, (sweep, tmp)))
        }
        size = (tmp / "run" / "spec.json").stat().st_size
    f, n = best["floor"][0], best["nexa"][0]
    print(f"tasks: {best['nexa'][1]:,} (floor {best['floor'][1]:,}); spec.json {size / 1e6:.1f} MB; best of {args.repeat}")
    print(f"floor  (itertools.product + json.dump): {f:.3f} s, peak {peaks['floor'] / 1e6:.0f} MB")
    print(f"nexa   (parse + expand + spec + script): {n:.3f} s, peak {peaks['nexa'] / 1e6:.0f} MB")
    print(f"ratio  nexa / floor: {n / f:.2f}x (target <= 2x, < 2 s)")


if __name__ == "__main__":
    main()
