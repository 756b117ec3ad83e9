"""What `nexa launch` adds over running the same command directly.

    python tests/bench/bench_launch.py [--repeat N]

Prints median wall times (and the ratio) in one run, for:
- local mode vs the bare command: a no-op (pure start-up cost), a 1 s program, and a
  program writing 200 MB to stdout (the cost of streaming it and teeing it into the log);
- ddp mode vs a bare `torchrun` with the same options: 2 gloo processes that join,
  all_reduce once and exit.
Run folders go to a temporary directory. Figures, not asserts.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

NEXA = [sys.executable, "-m", "nexa_ops", "launch"]
DDP_PROGRAM = (
    "import torch, torch.distributed as d; d.init_process_group('gloo');"
    "t = torch.ones(1); d.all_reduce(t); d.destroy_process_group()"
)


def run(argv: List[str], cwd: str, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}")
    return time.perf_counter() - start


def pair(bare: List[str], nexa: List[str], cwd: str, env: dict, repeat: int) -> Tuple[float, float]:
    """Median wall times, bare and nexa runs interleaved so machine noise hits both."""
    times: Tuple[List[float], List[float]] = ([], [])
    for _ in range(repeat):
        times[0].append(run(bare, cwd, env))
        times[1].append(run(nexa, cwd, env))
    return statistics.median(times[0]), statistics.median(times[1])


def row(label: str, bare: float, nexa: float) -> None:
    print(f"{label:<44} {bare * 1000:9.0f} {nexa * 1000:9.0f} {(nexa - bare) * 1000:+9.0f} {nexa / bare:7.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (median reported)")
    args = parser.parse_args()
    py = sys.executable
    env = dict(os.environ, PATH=os.path.dirname(py) + os.pathsep + os.environ.get("PATH", ""))
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeat} runs (ms)")
        print(f"{'case':<44} {'bare':>9} {'nexa':>9} {'added':>9} {'ratio':>8}")
        cases = [
            ("local: python -c pass", [py, "-c", "pass"]),
            ("local: sleep 1 s", [py, "-c", "import time; time.sleep(1)"]),
            ("local: write 200 MB to stdout (teed)", [py, "-c", "import sys; sys.stdout.buffer.write(b'x' * 200_000_000)"]),
        ]
        for label, command in cases:
            row(label, *pair(command, NEXA + ["--", *command], tmp, env, args.repeat))
        try:
            import torch  # noqa: F401
        except ImportError:
            print("ddp: skipped (PyTorch not installed: pip install torch==2.13.0)")
            return
        script = Path(tmp) / "ddp_noop.py"
        script.write_text(DDP_PROGRAM + "\n")
        command = [py, str(script)]
        torchrun = ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--max_restarts=0", "--no_python"]
        nexa = NEXA + ["--mode", "ddp", "--nproc-per-node", "2", "--", *command]
        row("ddp: 2 gloo procs, all_reduce (vs torchrun)", *pair(torchrun + command, nexa, tmp, env, args.repeat))


if __name__ == "__main__":
    main()
