"""Benchmark: ``cost.report`` over 100,000 cost manifests vs a bare floor, in one run.

nexa: ``report.cost_report`` (scan the folder, read and parse every manifest, check it is ours,
filter, skip reconciling finished runs, group by campaign, sum) and render the table. Floor:
``os.scandir`` + ``open().read()`` + ``json.loads`` of the same files and nothing else.
Runs alternate (floor, nexa) ``--repeat`` times on a warm page cache; prints the best of each
and the ratio (target: within 2x).

    python tests/bench/bench_cost_report.py [--manifests 100000] [--repeat 3] [--dir DIR]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nexa_ops.config import CostConfig, Resources  # noqa: E402
from nexa_ops.cost import (
    book,  # noqa: E402
    pricing,  # noqa: E402
    report,  # noqa: E402
)
from nexa_ops.cost import estimate as estimate_mod  # noqa: E402

CAMPAIGNS = [f"campaign-{i}" for i in range(20)]
USERS = [f"user{i}" for i in range(50)]
GPUS = ["H100", "A100-80GB", "A100-40GB", "RTX4090"]


def populate(runs_dir: Path, count: int) -> None:
    """``count`` finished manifests, as submissions and reconcile write them (plain writes:
    the lock and rename are what the bench does not measure)."""
    folder = book.manifests_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    table = estimate_mod.shipped_prices()
    estimates = [
        pricing.estimate(Resources(gpus_per_node=g, gpu_type=gpu, time="04:00:00"), t, table, CostConfig())
        for gpu in GPUS
        for g in (1, 8)
        for t in (1, 64)
    ]
    for i in range(count):
        est = estimates[i % len(estimates)]
        run_id = f"sweep{i % 97}-20251201-{i:06d}-{i % 65536:04x}"
        doc = book.manifest_document(
            est, run_id=run_id, name=f"sweep{i % 97}", kind="sweep", campaign=CAMPAIGNS[i % len(CAMPAIGNS)], run_dir=runs_dir / run_id
        )
        doc.update(
            user=USERS[i % len(USERS)],
            submitted_at=f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00Z",
            job_ids=[str(1000 + i)],
            status="finished",
            actual_gpu_hours=round(est.gpu_hours * 0.6, 6),
            actual_usd=round(est.total_usd * 0.6, 6),
            actual_source="worker",
            tasks_ok=est.tasks,
            reconciled_at="2025-12-31T00:00:00Z",
        )
        with open(folder / f"cost_{run_id}.json", "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)


def floor(runs_dir: Path) -> int:
    n = 0
    for entry in os.scandir(book.manifests_dir(runs_dir)):
        with open(entry.path, "rb") as fh:
            json.loads(fh.read())
        n += 1
    return n


def nexa(runs_dir: Path) -> int:
    rep = report.cost_report(runs_dir, by="campaign")
    rep.render("table")
    return rep.totals["runs"]


def best(func, runs_dir: Path, repeat: int, results: dict, key: str) -> None:
    for _ in range(repeat):
        start = time.perf_counter()
        count = func(runs_dir)
        seconds = time.perf_counter() - start
        results.setdefault(key, []).append(seconds)
        results[key + "_count"] = count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", help="reuse or create the manifests here (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nexa-bench-cost-") as tmp:
        runs_dir = Path(args.dir) if args.dir else Path(tmp)
        folder = book.manifests_dir(runs_dir)
        if not folder.is_dir() or sum(1 for _ in os.scandir(folder)) != args.manifests:
            start = time.perf_counter()
            populate(runs_dir, args.manifests)
            print(f"wrote {args.manifests:,} manifests in {time.perf_counter() - start:.1f} s")
        size = sum(e.stat().st_size for e in os.scandir(folder))
        floor(runs_dir)  # warm the page cache for both
        results: dict = {}
        for _ in range(args.repeat):
            best(floor, runs_dir, 1, results, "floor")
            best(nexa, runs_dir, 1, results, "nexa")
        assert results["floor_count"] == results["nexa_count"] == args.manifests, results
        f, n = min(results["floor"]), min(results["nexa"])
        print(f"manifests: {args.manifests:,} ({size / 1e6:.0f} MB), Python {sys.version.split()[0]}")
        print(f"floor (scandir + read + json.loads): best {f:.3f} s   runs {', '.join(f'{s:.3f}' for s in results['floor'])}")
        print(f"nexa cost.report --by campaign:      best {n:.3f} s   runs {', '.join(f'{s:.3f}' for s in results['nexa'])}")
        print(f"ratio nexa / floor: {n / f:.2f}x (target: within 2x)")


if __name__ == "__main__":
    main()
