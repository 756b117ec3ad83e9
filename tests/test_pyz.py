"""nexa.pyz for real: built once (``nexa_pyz`` fixture), then run under every CPython 3.6-3.13
from an empty folder, with HOME empty, nothing installed and no network (``unshare -n``)."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Tuple

import pytest

from nexa_ops import pyz
from nexa_ops.tools import pip
from tests.conftest import ROOT, require
from tests.services.pyz import PYTHONS, clean_env, require_python

PROGRAM = """\
import json, os, sys
out = os.path.join(os.environ["PROBE_DIR"], os.environ["NEXA_TASK_INDEX"] + ".json")
with open(out, "w") as fh:
    json.dump({"argv": sys.argv[1:], "python": sys.version_info[:2]}, fh)
"""


@pytest.fixture(scope="module")
def offline() -> List[str]:
    """Argv prefix that runs a command in a new network namespace (loopback only, down)."""
    prefix = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    ok = shutil.which("unshare") is not None and subprocess.run(prefix + ["true"], capture_output=True).returncode == 0
    require(ok, "unshare --net unavailable (util-linux, root or user namespaces)")
    return prefix


def run(argv, env, cwd, offline_prefix=(), timeout=120):
    argv = list(offline_prefix) + [str(a) for a in argv]
    return subprocess.run(argv, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout)


def extraction_dirs(root: Path) -> List[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("nexa.pyz_")) if root.is_dir() else []


# --- the built artifact ----------------------------------------------------------------------


def test_pyz_is_small_and_carries_everything(nexa_pyz):
    size = nexa_pyz.stat().st_size
    assert size < 1_000_000, f"nexa.pyz is {size:,} bytes"
    with zipfile.ZipFile(str(nexa_pyz)) as archive:
        names = set(archive.namelist())
        env = json.loads(archive.read("environment.json"))
        main = archive.read("__main__.py").decode()
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    # Every module and every shipped file of the checkout, where pyproject.toml maps it.
    mapped = {"sbatch": "nexa_ops/sbatch", "bin": "nexa_ops/bin", "images": "nexa_ops/images", "docs": "nexa_ops/docs"}
    shipped = pyz.project_files(ROOT, ["nexa_ops", "sbatch", "bin", "images", "docs"])
    assert any(n.startswith("sbatch/") for n in shipped) and any(n.startswith("nexa_ops/data/") for n in shipped)
    for name in shipped:
        top, _, rest = name.partition("/")
        inside = "site-packages/" + (f"{mapped[top]}/{rest}" if top in mapped else name)
        assert inside in names, f"{name} is missing from nexa.pyz ({inside})"
        if (ROOT / name).stat().st_mode & 0o111:
            assert modes[inside] & 0o111, f"{inside} lost its executable bit"
    # The pinned pure-Python dependencies that still run on 3.6, tomli and the dataclasses
    # backport included whatever Python built it.
    for dist in ("invoke-2.2.1", "tabulate-0.8.10", "tomli-1.2.3", "dataclasses-0.8"):
        assert f"site-packages/{dist}.dist-info/METADATA" in names
    assert "site-packages/dataclasses.py" in names
    assert not [n for n in names if n.endswith((".pyc", ".so", ".pyd"))]
    assert env["entry_point"] == "nexa_ops.cli:main" and env["reproducible"] is True and env["root"] is None
    assert "default_root()" in main and "_bootstrap.bootstrap()" in main


def test_two_builds_of_one_tree_are_byte_identical(tmp_path, monkeypatch):
    snap = snapshot(tmp_path / "snap")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    settings = pyz.load_settings(str(snap / "shiv.toml"))
    first = pyz.build(settings, str(tmp_path / "a.pyz"))
    second = pyz.build(settings, str(tmp_path / "b.pyz"))
    assert first.sha256 == second.sha256 and first.build_id == second.build_id
    assert (tmp_path / "a.pyz").read_bytes() == (tmp_path / "b.pyz").read_bytes()
    assert first.built_at == "2023-11-14 22:13:20"  # SOURCE_DATE_EPOCH, not the wall clock


def test_build_task_prints_size_and_refuses_too_large(nexa_cli, tmp_path):
    snap = snapshot(tmp_path / "snap")
    out = tmp_path / "dist" / "nexa.pyz"
    ok = nexa_cli("build", "--config", str(snap / "shiv.toml"), "--output", str(out))
    assert ok.returncode == 0, ok.stderr
    assert f"Built {out}: " in ok.stdout and "bytes" in ok.stdout and "limit 1,000,000" in ok.stdout
    before = out.read_bytes()
    text = (snap / "shiv.toml").read_text().replace("max_bytes = 1000000", "max_bytes = 1000")
    (snap / "shiv.toml").write_text(text)
    big = nexa_cli("build", "--config", str(snap / "shiv.toml"), "--output", str(out))
    assert big.returncode == 1 and "Traceback" not in big.stderr
    assert big.stderr.startswith("nexa: error: nexa.pyz would be ") and "above max_bytes = 1,000" in big.stderr
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["nexa.pyz"]


def test_build_dry_run_prints_commands_and_writes_nothing(nexa_cli, tmp_path):
    out = tmp_path / "x.pyz"
    res = nexa_cli("build", "--config", str(ROOT / "shiv.toml"), "--output", str(out), "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(" -m pip --disable-pip-version-check wheel " in line for line in lines)
    assert any(" download " in line and "--require-hashes" in line and "--python-version 3.6" in line for line in lines)
    assert any(" -m shiv " in line and "--reproducible" in line and "nexa_ops.cli:main" in line for line in lines)
    assert not out.exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (("output = ", "outptu = "), "shiv.toml: outptu: unknown key (did you mean 'output'?)"),
        (('"tomli==1.2.3 --hash', '"tomli==1.2.3 #--hash'), "shiv.toml: requirements[2]: expected 'name==version --hash=sha256:<64 hex>'"),
        (('entry_point = "nexa_ops.cli:main"', 'entry_point = "nexa_ops.cli:other"'), "differs from pyproject.toml [project.scripts]"),
        (
            ('python_floor = "3.6"', 'python_floor = "3.8"'),
            "shiv.toml: python_floor: expected 3.6 or lower (nexa.pyz runs on CPython 3.6+), got '3.8'",
        ),
        # A dependency that no longer runs on 3.6 is refused by pip's download for the floor.
        (
            ('"tabulate==0.8.10 --hash=sha256:0ba055423dbaa164b9e456abe7920c5e8ed33fcc16f6d1b2f2d152c8e1e8b4fc"',
             '"tabulate==0.9.0 --hash=sha256:024ca478df22e9340661486f85298cff5f6dcdba14f3813e8830015b9ed1948f"'),
            "shiv.toml: requirements: tabulate==0.9.0 requires Python >=3.7, but nexa.pyz must run on Python 3.6 (python_floor)",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(nexa_cli, tmp_path, edit, message):
    snap = snapshot(tmp_path / "snap")
    text = (snap / "shiv.toml").read_text()
    assert edit[0] in text
    (snap / "shiv.toml").write_text(text.replace(edit[0], edit[1], 1))
    res = nexa_cli("build", "--config", str(snap / "shiv.toml"), "--output", str(tmp_path / "x.pyz"))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.pyz").exists()


PIP_FLOOR_STDERR = """\
ERROR: Ignored the following versions that require a different python version: 0.10.0 Requires-Python >=3.10; 0.9.0 Requires-Python >=3.7
ERROR: Could not find a version that satisfies the requirement tabulate==0.9.0 (from versions: 0.8.9, 0.8.10, 0.10.0)
ERROR: No matching distribution found for tabulate==0.9.0
"""


def test_floor_refusal_reads_pips_reason():
    """pip's own words (pip 23.2 with --python-version 3.6; the version list shortened) become one line."""
    assert pip.floor_refusal(PIP_FLOOR_STDERR, "3.6") == (
        "tabulate==0.9.0 requires Python >=3.7, but nexa.pyz must run on Python 3.6 (python_floor): pin a release that supports 3.6"
    )
    offline = "ERROR: Could not find a version that satisfies the requirement tabulate==0.9.0 (from versions: none)\n"
    offline += "ERROR: No matching distribution found for tabulate==0.9.0\n"
    assert pip.floor_refusal(offline, "3.6") is None  # no network: pip's own message stays


def snapshot(dest: Path) -> Path:
    """A frozen copy of the files a build reads (others may be editing the checkout)."""
    settings = pyz.load_settings(str(ROOT / "shiv.toml"))
    for name in pyz.project_files(ROOT, settings.sources) + ["shiv.toml"]:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(str(ROOT / name), str(dest / name))
    return dest


# --- running it ------------------------------------------------------------------------------


#: Values that must reach the program literally (line breaks are refused by the sweep file).
HOSTILE = ["a b", "it's", 'say "hi"', "$(touch pwned)", "ünïcødé ✓", "--dash", "back\\slash {x}"]

#: What every interpreter runs from its copied nexa.pyz once the sweep file ({sweep}) is
#: planned ({plan}) and run with --local ({local}): the argv after ``python nexa.pyz``, and a
#: check of the command's stdout against the plan's spec. Exit code 0 is checked for each. A
#: command joins with one line, e.g. `nexa results` once it exists:
#:     (["results", "{local}", "--format", "json"], lambda out, spec: ...),
PER_PYTHON = [
    (["--help"], lambda out, spec: all(n in out for n in ("sweep", "worker", "status", "cost.report", "cache-clean"))),
    (["sweep", "--help"], lambda out, spec: "--local" in out and "--submit" in out),
    (["worker", "--spec", "{plan}/spec.json", "--task-id", "3", "--dry-run"], lambda out, spec: json.loads(out) == argv_of(spec, 3)),
    (["status", "{local}", "--json"], lambda out, spec: json.loads(out)["counts"] == {"COMPLETED": spec["count"]}),
    (["status", "{local}"], lambda out, spec: f"{spec['count']} COMPLETED" in out and "it's" in out),
    (["cost.report", "--by", "run", "--format", "json"], lambda out, spec: rows(out) == [("local", spec["count"])]),
    (["cost.report", "--by", "run"], lambda out, spec: "local" in out and "TOTAL" in out),
    (["cost.estimate", "--config", "{sweep}", "--json"], lambda out, spec: json.loads(out)["tasks"] == spec["count"]),
    (["cache-clean", "--dry-run"], lambda out, spec: out.startswith("Would remove 0 item(s)")),
]


def argv_of(spec: dict, index: int) -> List[str]:
    return spec["tasks"][index]["argv"]


def rows(report: str) -> List[Tuple[str, int]]:
    """(run, tasks done) of each row of ``cost.report --by run --format json``."""
    return [(r["run_id"], r["tasks_done"]) for r in json.loads(report)["rows"]]


def imported(module: str, verbose: str) -> bool:
    """Whether PYTHONVERBOSE output shows ``module`` (or a submodule) imported: "import 'x' # ..."
    (3.7+) or "import x # loaded from Zip ..." (3.6, zipimport)."""
    return re.search(r"^import '?" + re.escape(module) + r"[.' ]", verbose, re.M) is not None


def hostile_sweep(folder: Path, python: str) -> Path:
    """A sweep with grid, fixed, random and exclude, and values a shell would mangle."""
    (folder / "prog.py").write_text(PROGRAM, encoding="utf-8")
    lines = [
        'name = "pyz-check"',
        f"command = [{json.dumps(python)}, {json.dumps(str(folder / 'prog.py'))}]",
        "[grid]",
        f"msg = {json.dumps(HOSTILE, ensure_ascii=False)}",
        "n = [1, 2]",
        "[fixed]",
        f"tag = {json.dumps(HOSTILE[4] + ' ' + HOSTILE[3], ensure_ascii=False)}",
        "[random]",
        "samples = 1",
        "seed = 7",
        "[random.params]",
        "lr = { log_uniform = [1e-5, 1e-1] }",
        "drop = { uniform = [0.0, 0.5] }",
        "k = { int_uniform = [1, 9] }",
        f"opt = {{ choice = {json.dumps(['adam', HOSTILE[2], True, 3], ensure_ascii=False)} }}",
        "[[exclude]]",
        f"msg = {json.dumps(HOSTILE[1])}",
        "n = 2",
        "[resources]",
        "max_parallel = 2",
    ]
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("version", PYTHONS)
def test_runs_alone_on_each_python(version, nexa_pyz, tmp_path, offline):
    """The copied nexa.pyz on one interpreter: a cold first start, a plan byte-identical to
    the one 3.11 makes of the same file, the array script as a node runs it with this
    interpreter as its python3, a --local run, then the ``PER_PYTHON`` commands."""
    python, reference = require_python(version), require_python("3.11")
    app, home, tmpd, work, probe = (tmp_path / d for d in ("app", "home", "tmp", "work", "probe"))
    for d in (app, home, tmpd, work, probe):
        d.mkdir()
    shutil.copy2(str(nexa_pyz), str(app / "nexa.pyz"))
    pyzfile = app / "nexa.pyz"
    sweep = hostile_sweep(work, python)
    env = clean_env(home, tmpd, PROBE_DIR=str(probe))
    bare = run([python, "-c", "import nexa_ops"], env, work)
    assert bare.returncode != 0, f"nexa_ops is importable without the zipapp under {python}"

    res = run([python, pyzfile, "--version"], env, work, offline)  # the first start extracts, on this interpreter
    assert res.returncode == 0 and res.stdout.startswith("nexa "), res.stderr

    # The same sweep file planned on 3.11 and on this interpreter, into the same folder.
    plan = work / "run"
    planned = {}
    for who in (reference, python):
        shutil.rmtree(str(plan), ignore_errors=True)
        res = run([who, pyzfile, "sweep", "--config", sweep, "--out", plan], env, work, offline)
        assert res.returncode == 0, res.stderr
        planned[who] = [(plan / name).read_bytes() for name in ("spec.json", "pyz-check.sbatch", "spec.nul")]
    assert planned[python] == planned[reference], f"{version} planned another spec.json or script than 3.11"
    spec = json.loads(planned[python][0])
    kept = [t["params"] for t in spec["tasks"]]
    assert spec["count"] == 2 * len(HOSTILE) - 1 and {"msg": HOSTILE[1], "n": 2} not in [{"msg": p["msg"], "n": p["n"]} for p in kept]
    assert "Planned only" in res.stdout and f"{pyzfile}/site-packages" in planned[python][1].decode()

    # The compute-node side, as Slurm would run the script. The script reads each argv from
    # spec.nul itself; without it (moved away here, as in an older nexa's plan) it starts
    # `python3 -S -c <stub> nexa.pyz/site-packages`, with this interpreter as the node's
    # python3. That imports no dataclasses: on 3.7+ the backport in site-packages (first on
    # sys.path there) would shadow the standard library's.
    (plan / "spec.nul").rename(plan / "spec.nul.kept")
    node_bin = tmp_path / "node-bin"
    node_bin.mkdir()
    os.symlink(python, str(node_bin / "python3"))
    node_env = dict(env, PATH=f"{node_bin}:{env['PATH']}", SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_JOB_ID="77", PYTHONVERBOSE="1")
    script = plan / "pyz-check.sbatch"
    res = run(["bash", script], node_env, work, offline)
    assert res.returncode == 0, res.stderr
    assert imported("nexa_ops.worker", res.stderr) and not imported("dataclasses", res.stderr), res.stderr
    seen = json.loads((probe / "1.json").read_text())
    assert seen == {"argv": spec["tasks"][1]["argv"][2:], "python": [int(x) for x in version.split(".")]}
    assert json.loads((plan / "tasks" / "1.end.json").read_text())["exit_code"] == 0
    # That first task left the worker's compiled code in the run folder: the next one loads
    # it instead of reading the zip and compiling (zipimport caches no bytecode).
    (cached,) = plan.glob(".nexa-worker.*.pyc")
    res = run(["bash", script], dict(node_env, SLURM_ARRAY_TASK_ID="2"), work, offline)
    assert res.returncode == 0 and not imported("nexa_ops", res.stderr), res.stderr
    assert json.loads((probe / "2.json").read_text())["argv"] == spec["tasks"][2]["argv"][2:]
    # With spec.nul, no Python starts before the program: nothing of nexa is imported.
    (plan / "spec.nul.kept").rename(plan / "spec.nul")
    res = run(["bash", script], dict(node_env, SLURM_ARRAY_TASK_ID="3"), work, offline)
    assert res.returncode == 0 and not imported("nexa_ops", res.stderr), res.stderr
    assert json.loads((probe / "3.json").read_text())["argv"] == spec["tasks"][3]["argv"][2:]
    for seen in probe.iterdir():
        seen.unlink()

    local = work / "local"
    res = run([python, pyzfile, "sweep", "--config", sweep, "--local", "--out", local], env, work, offline)
    assert res.returncode == 0, res.stderr
    assert f"{spec['count']} succeeded, 0 failed" in res.stdout
    for task in spec["tasks"]:
        assert json.loads((probe / f"{task['index']}.json").read_text())["argv"] == task["argv"][2:]

    for argv, check in PER_PYTHON:
        argv = [a.replace("{plan}", str(plan)).replace("{local}", str(local)).replace("{sweep}", str(sweep)) for a in argv]
        res = run([python, pyzfile, *argv], env, work, offline)
        assert res.returncode == 0 and "Traceback" not in res.stderr, f"nexa {' '.join(argv)}: {res.stderr}"
        assert check(res.stdout, spec), f"nexa {' '.join(argv)} on {version}:\n{res.stdout}"

    assert not (work / "pwned").exists()
    assert list(home.iterdir()) == [], "nexa.pyz wrote into $HOME"
    roots = list(tmpd.iterdir())
    assert len(roots) == 1 and roots[0].name.endswith("-shiv") and stat.S_IMODE(roots[0].stat().st_mode) == 0o700
    assert [p.name[:9] for p in extraction_dirs(roots[0])] == ["nexa.pyz_"]
    assert sorted(p.name for p in app.iterdir()) == ["nexa.pyz"]


def test_help_prints_the_pages_from_the_pyz_alone(nexa_pyz, tmp_path, offline):
    """The reference on an air-gapped cluster: the pages come from inside nexa.pyz, copied
    alone into an empty folder, with no checkout and no network."""
    python = require_python("3.8")
    app, home, tmpd = tmp_path / "app", tmp_path / "home", tmp_path / "tmp"
    for d in (app, home, tmpd):
        d.mkdir()
    shutil.copy2(str(nexa_pyz), str(app / "nexa.pyz"))
    env = clean_env(home, tmpd)
    res = run([python, app / "nexa.pyz", "help"], env, tmp_path, offline)
    assert res.returncode == 0, res.stderr
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md") if p.name != "index.md")
    assert sorted(line.split()[0] for line in res.stdout.splitlines() if line.startswith("  ") and not line.startswith("   ")) == pages
    res = run([python, app / "nexa.pyz", "help", "sweep"], env, tmp_path, offline)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (ROOT / "docs" / "sweep.md").read_text(encoding="utf-8")
    res = run([python, app / "nexa.pyz", "help", "status"], env, tmp_path, offline)
    assert res.returncode == 0 and res.stdout.startswith("# Following a run"), res.stderr
    res = run([python, app / "nexa.pyz", "help", "sweeps"], env, tmp_path, offline)
    assert res.returncode == 2 and res.stderr.startswith("nexa: error: help: unknown topic 'sweeps' (did you mean 'sweep'?)")
    assert res.stderr.count("\n") == 1
    assert sorted(p.name for p in app.iterdir()) == ["nexa.pyz"] and list(home.iterdir()) == []


DATACLASSES_AFTER = """
import json, runpy, sys
sys.argv = [sys.argv[1], "--version"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
import dataclasses
print(json.dumps([dataclasses.__file__, sys.prefix]))
"""


@pytest.mark.parametrize("version", ["3.6", "3.7", "3.13"])
def test_dataclasses_backport_only_where_the_standard_library_lacks_it(version, nexa_pyz, tmp_path):
    """The backport ships for 3.6; on 3.7+ shiv's bootstrap (and our warm start) put the
    zipapp's site-packages after the standard library, whose dataclasses wins."""
    python = require_python(version)
    home, tmpd = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpd.mkdir()
    env = clean_env(home, tmpd)
    for start in ("cold", "warm"):
        res = run([python, "-c", DATACLASSES_AFTER, nexa_pyz], env, tmp_path)
        assert res.returncode == 0, res.stderr
        where, prefix = json.loads(res.stdout.splitlines()[-1])
        if version == "3.6":
            assert "-shiv/nexa.pyz_" in where and where.endswith("/site-packages/dataclasses.py"), start
        else:
            assert where == os.path.join(prefix, "lib", f"python{version}", "dataclasses.py"), start


SYS_PATH_AFTER = """
import json, runpy, sys
sys.argv = [sys.argv[1], "--version"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print(json.dumps([sys.path, sorted(m for m in sys.modules if m.startswith("_bootstrap"))]))
"""


def test_warm_start_matches_shiv_bootstrap(nexa_pyz, tmp_path):
    """A warm start skips shiv's bootstrap but leaves sys.path exactly as shiv would; any
    SHIV_* override (here SHIV_COMPILE_PYC) takes shiv's own path."""
    python = require_python("3.10")
    home, tmpd = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpd.mkdir()
    env = clean_env(home, tmpd)
    first = run([python, nexa_pyz, "--version"], env, tmp_path)
    assert first.returncode == 0 and first.stdout.startswith("nexa "), first.stderr
    warm = run([python, "-c", SYS_PATH_AFTER, nexa_pyz], env, tmp_path)
    shiv = run([python, "-c", SYS_PATH_AFTER, nexa_pyz], dict(env, SHIV_COMPILE_PYC="0"), tmp_path)
    assert warm.returncode == 0 and shiv.returncode == 0, warm.stderr + shiv.stderr
    warm_path, warm_boot = json.loads(warm.stdout.splitlines()[-1])
    shiv_path, shiv_boot = json.loads(shiv.stdout.splitlines()[-1])
    assert warm_path == shiv_path and any(p.endswith("/site-packages") and "-shiv/nexa.pyz_" in p for p in warm_path)
    assert warm_boot == [] and "_bootstrap" in shiv_boot
    forced = run([python, nexa_pyz, "--version"], dict(env, SHIV_FORCE_EXTRACT="1"), tmp_path)
    assert forced.returncode == 0 and forced.stdout == first.stdout, forced.stderr


def test_32_concurrent_first_runs_all_succeed(nexa_pyz, tmp_path):
    python = require_python("3.6")  # shiv's bootstrap and its extraction lock on the oldest Python
    home, tmpd = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpd.mkdir()
    env = clean_env(home, tmpd)

    def start(_):
        return run([python, nexa_pyz, "--help"], env, tmp_path, timeout=300)

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(start, range(32)))
    failed = [r for r in results if r.returncode != 0 or "Commands:" not in r.stdout]
    assert not failed, failed[0].stderr
    (root,) = tmpd.iterdir()
    assert len(extraction_dirs(root)) == 1
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_shiv_root_overrides_and_unsafe_default_is_refused(nexa_pyz, tmp_path):
    python = require_python("3.12")
    home, tmpd, mine = tmp_path / "home", tmp_path / "tmp", tmp_path / "my root"
    home.mkdir()
    tmpd.mkdir()
    res = run([python, nexa_pyz, "--help"], clean_env(home, tmpd, SHIV_ROOT=str(mine)), tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(extraction_dirs(mine)) == 1 and list(tmpd.iterdir()) == []

    # Someone else's (here: world-writable) folder at the default place is not trusted.
    env = clean_env(home, tmpd)
    code = "import sys; sys.path.insert(0, sys.argv[1]); import nexa_ops.pyz as p; print(p.default_root())"
    default = Path(run([python, "-c", code, ROOT], env, tmp_path).stdout.strip())
    assert default.parent == tmpd
    default.mkdir()
    default.chmod(0o777)
    res = run([python, nexa_pyz, "--help"], env, tmp_path)
    assert res.returncode == 1 and "is not a private folder of yours; set SHIV_ROOT" in res.stderr
    assert "Traceback" not in res.stderr and extraction_dirs(default) == []


def test_cache_clean_removes_other_builds_only(nexa_pyz, tmp_path, nexa_cli):
    python = require_python("3.11")
    snap = snapshot(tmp_path / "snap")
    with open(snap / "nexa_ops" / "__init__.py", "a", encoding="utf-8") as fh:
        fh.write("# another build\n")
    other = pyz.build(pyz.load_settings(str(snap / "shiv.toml")), str(tmp_path / "old" / "nexa.pyz"))
    home, tmpd = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpd.mkdir()
    env = clean_env(home, tmpd)
    for app in (nexa_pyz, other.path):
        assert run([python, app, "--help"], env, tmp_path).returncode == 0
    (root,) = tmpd.iterdir()
    assert len(extraction_dirs(root)) == 2
    foreign = root / ("tool.pyz_" + "0" * 64)  # another shiv app sharing the root: not ours
    (foreign / "site-packages" / "tool").mkdir(parents=True)
    current = pyz.pyz_environment(nexa_pyz)["build_id"]

    dry = run([python, nexa_pyz, "cache-clean", "--dry-run"], env, tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"Would remove {root}/nexa.pyz_{other.build_id}" in dry.stdout and len(extraction_dirs(root)) == 2

    res = run([python, nexa_pyz, "cache-clean"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"Removed {root}/nexa.pyz_{other.build_id}\n" in res.stdout
    assert f"Removed {root}/.nexa.pyz_{other.build_id}_lock" in res.stdout
    assert f"kept build {current[:12]}" in res.stdout
    assert [p.name for p in extraction_dirs(root)] == [f"nexa.pyz_{current}"]
    assert foreign.is_dir() and (root / f".nexa.pyz_{current}_lock").exists()
    assert run([python, nexa_pyz, "--help"], env, tmp_path).returncode == 0  # the kept one still runs

    # From a checkout (not a pyz) with --keep and --root: the old build's fresh extraction goes too.
    assert run([python, other.path, "--help"], env, tmp_path).returncode == 0
    res = nexa_cli("cache-clean", "--root", str(root), "--keep", str(nexa_pyz))
    assert res.returncode == 0, res.stderr
    assert [p.name for p in extraction_dirs(root)] == [f"nexa.pyz_{current}"]


WAITER = """\
import os, sys, time
probe = os.environ["PROBE_DIR"]
open(os.path.join(probe, "started-" + os.environ["NEXA_TASK_INDEX"]), "w").close()
deadline = time.time() + 120
while not os.path.exists(os.path.join(probe, "go")):
    if time.time() > deadline:
        sys.exit(9)
    time.sleep(0.05)
"""


def test_cache_clean_never_removes_an_extraction_in_use(nexa_pyz, tmp_path, nexa_cli):
    """Issue 20, 6: cache-clean deleted the extraction of a running `sweep --local`, which then
    died with ModuleNotFoundError. A running nexa holds its extraction's lock: it is skipped."""
    python = require_python("3.11")
    app, home, tmpd, work, probe = (tmp_path / d for d in ("app", "home", "tmp", "work", "probe"))
    for d in (app, home, tmpd, work, probe):
        d.mkdir()
    running, idle = app / "nexa.pyz", app / "idle.pyz"
    shutil.copy2(str(nexa_pyz), str(running))
    shutil.copy2(str(nexa_pyz), str(idle))
    build = pyz.pyz_environment(nexa_pyz)["build_id"]
    env = clean_env(home, tmpd, PROBE_DIR=str(probe))
    assert run([python, idle, "--version"], env, work).returncode == 0  # extracted, then unused
    (work / "wait.py").write_text(WAITER)
    (work / "sweep.toml").write_text(
        f'name = "busy"\ncommand = [{json.dumps(python)}, {json.dumps(str(work / "wait.py"))}]\n'
        "[grid]\nx = [1, 2]\n[resources]\nmax_parallel = 2\n"
    )
    sweep = subprocess.Popen(
        [python, str(running), "sweep", "--config", "sweep.toml", "--local", "--out", str(work / "run")],
        env=env, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (probe / "started-0").exists() and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (probe / "started-0").exists(), sweep.communicate(timeout=10)
        (root,) = tmpd.iterdir()
        in_use, unused = root / f"nexa.pyz_{build}", root / f"idle.pyz_{build}"
        assert in_use.is_dir() and unused.is_dir()

        dry = nexa_cli("cache-clean", "--root", str(root), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"Would remove {unused}\n" in dry.stdout and f"Kept {in_use}: in use by a running nexa\n" in dry.stdout
        res = nexa_cli("cache-clean", "--root", str(root))  # from the checkout: keeps no build by itself
        assert res.returncode == 0, res.stderr
        assert f"Removed {unused}\n" in res.stdout and f"Kept {in_use}: in use by a running nexa\n" in res.stdout
        assert in_use.is_dir() and not unused.exists()
    finally:
        (probe / "go").touch()
        out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 0, err
    assert "2 succeeded, 0 failed" in out and "Traceback" not in err
    assert (root / f"nexa.pyz_{build}" / "site-packages" / "nexa_ops").is_dir()

    # The sweep is over: nothing holds the extraction any more, and it goes.
    res = nexa_cli("cache-clean", "--root", str(root))
    assert res.returncode == 0 and f"Removed {in_use}\n" in res.stdout and "in use" not in res.stdout
    assert extraction_dirs(root) == [] and not (root / f".nexa.pyz_{build}_inuse").exists()
    assert run([python, running, "--version"], env, work).returncode == 0  # extracts again


def test_hold_extraction_waits_for_a_cleaner_and_follows_a_replaced_lock_file(tmp_path):
    import fcntl

    lock = tmp_path / ".n.pyz_b_inuse"
    held = pyz.hold_extraction(str(tmp_path), "n.pyz_b")
    assert held is not None and lock.exists()
    fd = os.open(str(lock), os.O_RDONLY)
    with pytest.raises(BlockingIOError):  # what the cleaner meets while a run holds it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    os.close(held)
    cleaner = os.open(str(lock), os.O_RDONLY)
    fcntl.flock(cleaner, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from nexa_ops import pyz; import os\n"
        "fd = pyz.hold_extraction(sys.argv[2], 'n.pyz_b')\n"
        "print(os.fstat(fd).st_ino == os.stat(os.path.join(sys.argv[2], '.n.pyz_b_inuse')).st_ino)\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert starter.poll() is None  # a starting run waits while the cleaner holds the lock
    lock.unlink()  # the cleaner removes the extraction and its lock file, then lets go
    os.close(cleaner)
    assert starter.communicate(timeout=30)[0].strip() == "True"  # it locked the new file, not the unlinked one
    assert lock.exists()


def test_code_runs_on_python_36_per_vermin():
    """Static check on top of the real runs: nothing in nexa_ops needs more than 3.6.

    ``tomllib`` is excluded: nexa_ops/toml.py imports it only on 3.11+ (tomli below);
    ``dataclasses`` counts as the backport nexa.pyz ships for 3.6."""
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    require(os.access(vermin, os.X_OK), "vermin not installed (pip install vermin)")
    argv = [vermin, "-t=3.6-", "--no-tips", "--violations", "--eval-annotations", "--exclude", "tomllib", "--backport", "dataclasses"]
    argv += ["nexa_ops", "tasks.py"]
    res = subprocess.run(argv, cwd=str(ROOT), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("version", ["3.6", "3.13"])
def test_the_python_api_imports_lazily_from_the_pyz(version, nexa_pyz, tmp_path):
    """The top-level names (nexa_ops.status, ...) load from their homes on first use, also on
    3.6, which has no module __getattr__ (PEP 562): the package's class does it there. The
    pyz's site-packages goes last on sys.path (docs/zipapp-python.md)."""
    python = require_python(version)
    code = (
        "import sys; sys.path.append(sys.argv[1] + '/site-packages'); import nexa_ops\n"
        "before = 'nexa_ops.track' in sys.modules\n"
        "print(before, nexa_ops.status.__module__, nexa_ops.load_sweep.__module__, 'status' in dir(nexa_ops))\n"
        "try:\n    nexa_ops.nope\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    res = subprocess.run([python, "-c", code, str(nexa_pyz)], cwd=str(tmp_path), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["False nexa_ops.track nexa_ops.config True", "module 'nexa_ops' has no attribute 'nope'"]
