"""The compute-node side proven from the built nexa.pyz: a sweep planned and submitted by
`python3 nexa.pyz` from an empty folder runs on the real Slurm, its tasks' argv read by the
array script from spec.nul (3.13), or by the worker imported straight from the zipapp on
the nodes' python3 (3.6, RHEL 8's, for a plan without spec.nul)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.services.pyz import clean_env, require_python

pytestmark = pytest.mark.slurm

PROBE = ROOT / "tests" / "data" / "argv_probe.py"
HOSTILE = ["a b", "it's", "$(touch pwned)", "ünïcødé ✓", "--dash"]


@pytest.mark.parametrize("version", ["3.6", "3.13"])
def test_sweep_from_pyz_runs_on_slurm(slurm_cluster, nexa_pyz, tmp_path, version):
    """3.6: the login node's and the compute nodes' `python3` on PATH is 3.6 (the default
    `[cluster] python`, as on RHEL 8); 3.13: `[cluster] python` names the interpreter."""
    python = require_python(version)
    work = tmp_path / "cluster home"
    work.mkdir()
    pyz = shutil.copy(nexa_pyz, work / "nexa.pyz")
    probe = work / "probe"
    probe.mkdir()
    node_bin = tmp_path / "bin"
    node_bin.mkdir()
    os.symlink(python, str(node_bin / "python3"))
    cluster = f'pyz_path = "{pyz}"\n' + (f'python = "{python}"\n' if version != "3.6" else "")
    (work / "nexa.toml").write_text("[cluster]\n" + cluster)
    grid = {"msg": HOSTILE, "n": list(range(6))}
    lines = ['name = "from-pyz"', f"command = [{json.dumps(sys.executable)}, {json.dumps(str(PROBE))}]", "[grid]"]
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in grid.items()]
    (work / "sweep.toml").write_text("\n".join(lines) + "\n[resources]\nmax_parallel = 8\n", encoding="utf-8")
    env = clean_env(tmp_path / "home", tmp_path, PROBE_DIR=str(probe))
    env["PATH"] = f"{node_bin}:{env['PATH']}"  # sbatch hands the submitting shell's PATH to the job
    (tmp_path / "home").mkdir()
    if version == "3.6":
        # Planned first and spec.nul removed, as in a plan of an older nexa: the array script then
        # leaves every task to the worker, which runs on the nodes' python3, 3.6.
        out = subprocess.run([python, str(pyz), "sweep", "--config", "sweep.toml", "--out", "run"], cwd=str(work), env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        (work / "run" / "spec.nul").unlink()
    out = subprocess.run([python, str(pyz), "sweep", "--config", "sweep.toml", "--submit", "--out", "run"],
                         cwd=str(work), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    script = (work / "run" / "from-pyz.sbatch").read_text()
    assert f"{pyz}/site-packages" in script
    assert ("\n  python3 -S -c " if version == "3.6" else f"\n  {python} -S -c ") in script  # the worker, when spec.nul cannot be used
    manifest = json.loads((work / "run" / "manifest.json").read_text())
    assert len(manifest["job_ids"]) == 2  # 30 tasks > MaxArraySize 25: chunked
    slurm_cluster.wait(manifest["job_ids"], timeout=180)
    spec = json.loads((work / "run" / "spec.json").read_text())
    assert spec["count"] == 30
    for task in spec["tasks"]:
        seen = json.loads((probe / f"{task['index']}.json").read_text())
        assert seen["argv"] == task["argv"][2:]
        end = json.loads((work / "run" / "tasks" / f"{task['index']}.end.json").read_text())
        assert end["exit_code"] == 0
    # Following the run, from the zipapp on the same interpreter.
    follow = {
        ("wait", "run", "--timeout", "60"): "all 30 task(s) completed",
        ("status", "run"): "30 COMPLETED",
        ("logs", "run", "--task", "7"): "",
        ("cost.reconcile",): "finished",
        ("cancel", "run"): "",
    }
    for argv, expected in follow.items():
        res = subprocess.run([python, str(pyz), *argv], cwd=str(work), env=env, capture_output=True, text=True)
        assert res.returncode == 0 and expected in res.stdout + res.stderr, f"nexa {' '.join(argv)}: {res.stdout}{res.stderr}"
    # 3.6: the worker ran on this interpreter, and left its bytecode cache for that cache tag
    # only. 3.13: the array script read every argv from spec.nul, and no worker started.
    tag = "cpython-" + version.replace(".", "")
    cached = [p.name for p in (work / "run").glob(".nexa-worker.*.pyc")]
    assert cached == ([f".nexa-worker.{tag}.pyc"] if version == "3.6" else [])
    assert not (work / "pwned").exists()
