"""Benchmark: a run's code snapshot, first (a copy) and second (unchanged files hard-linked
from the first), against ``cp -r`` and ``cp -al`` of the same tree, in one run.

    python tests/bench/bench_snapshot.py [--files 2000] [--repeat 5]

Builds a project of ``--files`` small source files (40 packages) beside what a snapshot leaves
out (a sparse runs/ folder, __pycache__, a .git with many objects, ignored files). Each round
takes a first snapshot into a fresh runs folder, edits one file, takes a second snapshot (the
first is its ``--link-dest``), then times ``cp -r`` and ``cp -al`` of the first snapshot's
tree (the same files). Medians over ``--repeat`` rounds; prints figures and ratios and
asserts nothing. The target: the second snapshot under 0.3 s.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nexa_ops import snapshot  # noqa: E402
from nexa_ops.config import load_config  # noqa: E402


def build_tree(root: Path, files: int) -> None:
    for i in range(files):
        path = root / "src" / f"pkg{i % 40}" / f"mod_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\n" + "x = 1\n" * (i % 50))
    for i in range(40):
        cache = root / "src" / f"pkg{i}" / "__pycache__" / "mod.cpython-311.pyc"
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(os.urandom(4096))
    for i in range(1000):
        obj = root / ".git" / "objects" / f"{i % 256:02x}" / f"{i:038x}"
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(os.urandom(2048))
    for i in range(5):
        big = root / "runs" / f"old{i}" / "checkpoint.pt"
        big.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as fh:
            fh.truncate(100 * 1024 * 1024)
    (root / ".gitignore").write_text("*.ckpt\nwandb/\n")
    (root / "model.ckpt").write_bytes(os.urandom(65536))
    (root / "nexa.toml").write_text("")


def timed(fn: Callable[..., Any], *args: Any) -> Tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def cp(*args: str) -> None:
    subprocess.run(["cp", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="nexa-bench-snapshot-"))
    try:
        project = base / "proj"
        build_tree(project, args.files)
        cfg = load_config(cwd=project)
        times: Dict[str, List[float]] = {"first": [], "second": [], "cp -r": [], "cp -al": []}
        copied: List[int] = []
        for round_ in range(args.repeat):
            for old in (project / "runs").glob("bench-*"):
                shutil.rmtree(old)
            first_run = project / "runs" / f"bench-{round_}-first"
            second_run = project / "runs" / f"bench-{round_}-second"
            for path in (first_run, second_run):
                path.mkdir(parents=True)
            seconds, _ = timed(snapshot.take, cfg, first_run, project)
            times["first"].append(seconds)
            (project / "src" / "pkg0" / "mod_0.py").write_text(f"# edited in round {round_}\n")
            seconds, second = timed(snapshot.take, cfg, second_run, project)
            times["second"].append(seconds)
            assert second.linked_from == first_run / "code", second.linked_from
            copied.append(int(second.stats.get("number_of_regular_files_transferred", -1)))
            tree = str(first_run / "code")
            times["cp -r"].append(timed(cp, "-r", tree, str(base / "cp_r"))[0])
            times["cp -al"].append(timed(cp, "-al", tree, str(base / "cp_al"))[0])
            shutil.rmtree(base / "cp_r")
            shutil.rmtree(base / "cp_al")
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.files} source files (+ runs/, __pycache__, .git, ignored files left out); median of {args.repeat} rounds")
        for name, value in med.items():
            print(f"  {name:<8} {value * 1000:8.1f} ms   (min {min(times[name]) * 1000:.1f} ms)")
        print(f"  files copied by the second snapshot: {sorted(set(copied))} (the rest hard-linked)")
        print(f"  second / first snapshot:   {med['second'] / med['first']:.2f}x")
        print(f"  first snapshot / cp -r:    {med['first'] / med['cp -r']:.2f}x")
        print(f"  second snapshot / cp -al:  {med['second'] / med['cp -al']:.2f}x")
        print(f"  second snapshot under 0.3 s: {'yes' if med['second'] < 0.3 else 'NO'} ({med['second']:.3f} s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
