"""Planning into a run folder: ``--out`` never rewrites another plan under a queued array."""

import json
import sys

from nexa_ops import worker
from tests.conftest import ROOT

PROBE = ROOT / "tests" / "data" / "argv_probe.py"


def sweep_file(tmp_path, command="train.py", values=(1, 2, 3), resources="", name="sweep.toml"):
    path = tmp_path / name
    path.write_text(
        f'name = "plan"\ncommand = [{json.dumps(sys.executable)}, {json.dumps(str(PROBE))}, "{command}"]\n'
        f"[grid]\nn = {list(values)}\n[resources]\n{resources}\n",
        encoding="utf-8",
    )
    return path


def snapshot(run):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir() if p.is_file()}


def refused(out, *words):
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


def test_out_holding_another_plan_is_refused_and_left_alone(nexa_cli, tmp_path):
    """The report: a second plan into a queued array's folder replaced its spec, so the
    pending tasks ran the new command. Now nothing in the folder changes."""
    run = tmp_path / "run"
    assert nexa_cli("sweep", "--config", str(sweep_file(tmp_path)), "--out", str(run)).returncode == 0
    before = snapshot(run)
    other = sweep_file(tmp_path, command="evil.py", name="other.toml")
    out = nexa_cli("sweep", "--config", str(other), "--out", str(run))
    refused(out, f"--out {run}: already holds the spec of another plan", "choose a new folder")
    assert snapshot(run) == before
    assert "task(s)" not in out.stdout  # nothing shown as planned


def test_out_holding_a_manifest_without_the_spec_is_refused(nexa_cli, tmp_path):
    run = tmp_path / "launch-run"
    run.mkdir()
    (run / "manifest.json").write_text('{"backend": "slurm", "kind": "launch", "job_ids": ["7"], "chunks": []}\n')
    out = nexa_cli("sweep", "--config", str(sweep_file(tmp_path)), "--out", str(run))
    refused(out, "already holds a run (manifest.json)")
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json"]


def test_the_same_plan_again_is_reused_as_it_is(nexa_cli, tmp_path):
    """Resuming: the same spec byte for byte keeps spec.json and its index untouched."""
    run = tmp_path / "run"
    path = sweep_file(tmp_path)
    assert nexa_cli("sweep", "--config", str(path), "--out", str(run)).returncode == 0
    before = snapshot(run)
    again = nexa_cli("sweep", "--config", str(path), "--out", str(run))
    assert again.returncode == 0, again.stderr
    after = snapshot(run)
    assert after["spec.json"] == before["spec.json"] and after["spec.argv"] == before["spec.argv"]


def test_the_same_plan_with_a_damaged_index_gets_a_new_index(nexa_cli, tmp_path):
    run = tmp_path / "run"
    path = sweep_file(tmp_path)
    assert nexa_cli("sweep", "--config", str(path), "--out", str(run)).returncode == 0
    spec = (run / "spec.json").read_bytes()
    (run / "spec.argv").write_bytes((run / "spec.argv").read_bytes()[:-40])
    assert nexa_cli("sweep", "--config", str(path), "--out", str(run)).returncode == 0
    assert (run / "spec.json").read_bytes() == spec
    assert worker.verify_index(str(run / "spec.json")) is None


def test_the_same_plan_with_new_resources_rewrites_only_the_script(nexa_cli, tmp_path):
    run = tmp_path / "run"
    assert nexa_cli("sweep", "--config", str(sweep_file(tmp_path)), "--out", str(run)).returncode == 0
    spec = (run / "spec.json").read_bytes()
    out = nexa_cli("sweep", "--config", str(sweep_file(tmp_path, resources='time = "00:10:00"')), "--out", str(run))
    assert out.returncode == 0, out.stderr
    assert (run / "spec.json").read_bytes() == spec
    assert "#SBATCH --time=00:10:00" in (run / "plan.sbatch").read_text()


def test_a_run_already_run_is_not_started_again(nexa_cli, tmp_path):
    """The same plan, but it ran (manifest.json): starting it again would lose its jobs."""
    run = tmp_path / "run"
    path = sweep_file(tmp_path)
    env = {"PROBE_DIR": str(tmp_path)}
    assert nexa_cli("sweep", "--config", str(path), "--out", str(run), "--local", env=env).returncode == 0
    manifest = (run / "manifest.json").read_bytes()
    out = nexa_cli("sweep", "--config", str(path), "--out", str(run), "--local", env=env)
    refused(out, "already submitted or run (manifest.json)")
    assert (run / "manifest.json").read_bytes() == manifest
    assert nexa_cli("sweep", "--config", str(path), "--out", str(run)).returncode == 0  # planning alone: fine
    changed = sweep_file(tmp_path, resources='time = "00:10:00"', name="changed.toml")
    refused(nexa_cli("sweep", "--config", str(changed), "--out", str(run)), "already submitted with another sbatch script")
