"""The Python API as the README shows it: names, docstrings, dataclass results, cheap import,
a real submission through launch_slurm_sweep and a real container through run_container."""

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nexa_ops
from tests.conftest import ROOT
from tests.test_containers import SECRET, mapped_ids, project  # noqa: F401 - fixtures

PUBLIC_FUNCTIONS = [
    "launch_slurm_sweep", "launch", "run_container", "build_image", "sync_repository", "estimate_cost",
    "cost_report", "campaign_spend", "reconcile", "teardown", "status", "wait", "cancel", "resubmit_failed",
    "logs", "load_config", "load_sweep",
]
RESULT_TYPES = ["SweepArtifacts", "LaunchResult", "ContainerResult", "BuildResult", "SyncResult", "TeardownResult", "RunStatus"]


def test_import_is_cheap_and_lazy():
    code = "import sys, nexa_ops; print(sorted(m for m in sys.modules if m.split('.')[0] in ('invoke', 'tabulate', 'nexa_ops')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['nexa_ops']"


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_public_functions_are_documented(name):
    func = getattr(nexa_ops, name)
    assert callable(func) and name in nexa_ops.__all__
    doc = inspect.getdoc(func) or ""
    assert len(doc.splitlines()) >= 1, f"{name} has no docstring"
    params = list(inspect.signature(func).parameters)
    if params:
        assert "Args:" in doc, f"{name}: no Args: section"
        for param in params:
            assert param in doc, f"{name}: argument {param!r} undocumented"
    assert "Returns:" in doc or "Raises:" in doc, f"{name}: says neither what it returns nor what it raises"


@pytest.mark.parametrize("name", RESULT_TYPES)
def test_results_are_dataclasses(name):
    assert dataclasses.is_dataclass(getattr(nexa_ops, name))


def test_error_hierarchy():
    for name in ("ConfigError", "ToolError", "ToolMissing", "Refused"):
        assert issubclass(getattr(nexa_ops, name), nexa_ops.NexaError)


def test_sweep_definition_round_trip(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "api"\ncommand = ["python", "t.py"]\n[grid]\nlr = [0.1, 0.2]\n')
    defn = nexa_ops.load_sweep(path)
    assert isinstance(defn, nexa_ops.SweepDefinition)
    artifacts = nexa_ops.launch_slurm_sweep(defn, out=tmp_path / "run")
    assert artifacts.job_count == 2 and artifacts.job_ids == [] and not artifacts.submitted
    assert artifacts.spec_path == tmp_path / "run" / "spec.json" and artifacts.script_paths[0].exists()


@pytest.mark.slurm
def test_readme_example_submits_for_real(slurm_cluster, tmp_path, monkeypatch):
    """The README's example, verbatim but for the folder: a real job array on Slurm."""
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("PROBE_DIR", str(probe))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "random_search.toml").write_text(
        'name = "random-search"\n'
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(ROOT / 'tests' / 'data' / 'argv_probe.py'))}]\n"
        "[random]\nsamples = 6\nseed = 1\n[random.params]\nlr = { log_uniform = [1e-5, 1e-2] }\n"
    )
    from nexa_ops import launch_slurm_sweep

    artifacts = launch_slurm_sweep(Path("sweeps/random_search.toml"), submit=True)
    print(f"Submitted job array {artifacts.job_count} jobs")
    assert artifacts.job_count == 6 and len(artifacts.job_ids) == 1 and artifacts.submitted
    assert artifacts.run_dir.parent == tmp_path / "runs"
    slurm_cluster.wait(artifacts.job_ids)
    final = nexa_ops.status(artifacts.run_dir)
    assert [t.state for t in final.tasks] == ["COMPLETED"] * 6
    assert sorted(int(p.stem) for p in probe.glob("*.json")) == list(range(6))


def test_run_container_returns_a_result(project, mapped_ids):  # noqa: F811
    uid, gid = mapped_ids
    result = nexa_ops.run_container("train-light", ["sh", "-c", "echo hi; exit 4"], config=nexa_ops.load_config(),
                                    uid=uid, gid=gid, capture=True)
    assert isinstance(result, nexa_ops.ContainerResult)
    assert result.exit_code == 4 and result.stdout == "hi\n" and result.argv[:2] == ["docker", "run"]
