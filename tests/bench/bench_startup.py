"""Benchmark: start-up of ``python nexa.pyz --help`` (warm cache) vs ``python -c "import invoke"``.

In one run, with one interpreter (one that has invoke, so the floor exists): builds nexa.pyz
(or takes --pyz), times the first run on an empty extraction root (extraction included),
then alternates warm ``--help`` runs with the floor and prints medians (and minima) and the ratio (target:
within 1.3x). Also prints the compute-node worker's start as the array script runs it (``python -S -c
<stub> nexa.pyz/site-packages <cache> ...`` running ``true``, no extraction): the first task of a run
(imported from the zip) and the others (its code loaded from the run folder's cache),
against ``python -S -c pass``; and the
import cost of every command module loaded at start-up, so one that imports more than invoke
at load time shows up by name.

    python tests/bench/bench_startup.py [--pyz dist/nexa.pyz] [--repeat 31] [--python PATH]
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
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nexa_ops import pyz  # noqa: E402
from nexa_ops.sweep.script import BATCH_STUB  # noqa: E402
from nexa_ops.worker import index_bytes  # noqa: E402


def once(argv: List[str], env: Dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=env["TMPDIR"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def alternate(a: List[str], b: List[str], env: Dict[str, str], repeat: int) -> Tuple[List[float], List[float]]:
    """Times of ``a`` and ``b`` run in turn, so drift (other load) hits both alike."""
    xs, ys = [], []
    for _ in range(repeat):
        xs.append(once(a, env))
        ys.append(once(b, env))
    return xs, ys


def ms(times: List[float]) -> str:
    return f"{statistics.median(times) * 1000:7.1f} ms (min {min(times) * 1000:5.1f})"


PROBE = """
import importlib, json, sys, time
sys.path.insert(0, sys.argv[1])
import invoke, nexa_ops.commands.common
before = set(sys.modules)
start = time.perf_counter()
importlib.import_module("nexa_ops.commands." + sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps([seconds, sorted(set(sys.modules) - before - {"nexa_ops.commands." + sys.argv[2]})]))
"""


def command_module_costs(python: str, site: Path, env: Dict[str, str]) -> List[Tuple[str, float, List[str]]]:
    """(module, import seconds, modules it pulls in beyond invoke) for each command module that
    ``nexa_ops/cli.py`` loads at start-up. (``-X importtime`` does not see them: the CLI loads
    them with ``importlib.import_module``.)"""
    from nexa_ops.cli import COMMAND_MODULES

    rows = []
    for name in COMMAND_MODULES:
        if not (site / "nexa_ops" / "commands" / f"{name}.py").is_file():
            continue
        subprocess.run([python, "-c", PROBE, str(site), name], env=env, capture_output=True)  # write .pyc
        out = subprocess.run([python, "-c", PROBE, str(site), name], env=env, capture_output=True, text=True, check=True).stdout
        seconds, extra = json.loads(out)
        rows.append((name, seconds, extra))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", help="an existing nexa.pyz (default: build one now)")
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--python", default=sys.executable, help="interpreter (must be able to import invoke)")
    args = parser.parse_args()
    python = args.python
    with tempfile.TemporaryDirectory(prefix="nexa-bench-") as tmp:
        work = Path(tmp)
        if args.pyz:
            app = Path(args.pyz).resolve()
        else:
            result = pyz.build(pyz.load_settings(str(ROOT / "shiv.toml")), str(work / "nexa.pyz"))
            app = result.path
            print(f"built {app.name}: {result.size:,} bytes in {result.seconds:.1f} s")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIV_")}
        env["TMPDIR"] = str(work / "tmp")
        os.mkdir(env["TMPDIR"])
        subprocess.run([python, "-c", "import invoke"], env=env, check=True)

        first = once([python, str(app), "--help"], env)
        warm, floor = alternate([python, str(app), "--help"], [python, "-c", "import invoke"], env, args.repeat)
        bare = [once([python, "-c", "pass"], env) for _ in range(args.repeat)]

        spec = work / "spec.json"
        spec.write_text(json.dumps({"tasks": [{"index": 0, "params": {}, "argv": ["true"]}]}))
        (work / "spec.argv").write_bytes(index_bytes(str(spec), "", "", [["true"]]))  # as `nexa sweep` writes it
        task = ["--spec", str(spec), "--task-id", "0"]  # runs `true`, as a task would
        nowhere = str(work / "no-such-folder" / ".nexa-worker")  # the cache can't be written: always the first task
        first_task = [python, "-S", "-c", BATCH_STUB, f"{app}/site-packages", nowhere, *task]
        cached = [python, "-S", "-c", BATCH_STUB, f"{app}/site-packages", str(work / ".nexa-worker"), *task]
        once(cached, env)  # writes the cache
        first_t, bare_s = alternate(first_task, [python, "-S", "-c", "pass"], env, args.repeat)
        cached_t, bare_s2 = alternate(cached, [python, "-S", "-c", "pass"], env, args.repeat)
        bare_s += bare_s2

        version = subprocess.run([python, "-c", "import sys, invoke; print(sys.version.split()[0], invoke.__version__)"],
                                 env=env, capture_output=True, text=True).stdout.split()
        ratio = statistics.median(warm) / statistics.median(floor)
        print(f"python {version[0]} ({python}), invoke {version[1]}, {args.repeat} runs each, median (min)")
        print(f"  python -c pass                      {ms(bare)}")
        print(f"  python -c 'import invoke'  (floor)  {ms(floor)}")
        print(f"  python nexa.pyz --help     (warm)   {ms(warm)}")
        print(f"  python nexa.pyz --help     (first)  {first * 1000:7.1f} ms   (extraction into an empty root)")
        print(f"  ratio warm / floor                  {ratio:7.2f}x   (min/min {min(warm) / min(floor):.2f}x; target <= 1.30x)")
        print(f"  python -S -c pass                   {ms(bare_s)}")
        print(f"  worker, first task (zipimport)      {ms(first_t)}")
        print(f"  worker, later tasks (cached code)   {ms(cached_t)}")
        build_id = pyz.pyz_environment(app)["build_id"]
        (site,) = Path(env["TMPDIR"]).glob(f"*-shiv/{app.name}_{build_id}/site-packages")
        print("  command modules loaded at start-up (after invoke): import time, and what else they import")
        for name, seconds, extra in command_module_costs(python, site, env):
            verdict = "ok" if not extra else "HEAVY: imports " + ", ".join(extra[:8]) + (" ..." if len(extra) > 8 else "")
            print(f"    nexa_ops.commands.{name:12s} {seconds * 1000:6.2f} ms  {verdict}")


if __name__ == "__main__":
    main()
