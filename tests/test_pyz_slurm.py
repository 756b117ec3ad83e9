"""The compute-node side proven from the built nexa.pyz: a sweep planned and submitted by
`python3 nexa.pyz` from an empty folder runs on the real Slurm with the worker imported
straight from the zipapp."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.services.pyz import clean_env, require_python

pytestmark = pytest.mark.slurm

PROBE = ROOT / "tests" / "data" / "argv_probe.py"
HOSTILE = ["a b", "it's", "$(touch pwned)", "ünïcødé ✓", "--dash"]


@pytest.mark.parametrize("version", ["3.8", "3.13"])
def test_sweep_from_pyz_runs_on_slurm(slurm_cluster, nexa_pyz, tmp_path, version):
    python = require_python(version)
    work = tmp_path / "cluster home"
    work.mkdir()
    pyz = shutil.copy(nexa_pyz, work / "nexa.pyz")
    probe = work / "probe"
    probe.mkdir()
    (work / "nexa.toml").write_text(f'[cluster]\npython = "{python}"\npyz_path = "{pyz}"\n')
    grid = {"msg": HOSTILE, "n": list(range(6))}
    lines = ['name = "from-pyz"', f"command = [{json.dumps(sys.executable)}, {json.dumps(str(PROBE))}]", "[grid]"]
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in grid.items()]
    (work / "sweep.toml").write_text("\n".join(lines) + "\n[resources]\nmax_parallel = 8\n", encoding="utf-8")
    env = clean_env(tmp_path / "home", tmp_path, PROBE_DIR=str(probe))
    (tmp_path / "home").mkdir()
    out = subprocess.run([python, str(pyz), "sweep", "--config", "sweep.toml", "--submit", "--out", "run"],
                         cwd=str(work), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    script = (work / "run" / "from-pyz.sbatch").read_text()
    assert f"{pyz}/site-packages" in script
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
    assert not (work / "pwned").exists()
