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


def test_the_sweep_env_key_writes_a_private_env_file(tmp_path, monkeypatch):
    """`env = [...]`: the listed names and NAME_* prefixes, with their values now, in
    sweep.env (mode 0600); names a script cannot hold are never written."""
    import os
    import subprocess

    from nexa_ops.config import NexaConfig, parse_sweep
    from nexa_ops.sweep.plan import plan_sweep

    monkeypatch.setenv("WANDB_PROJECT", "it's $(touch pwned)")
    monkeypatch.setenv("WANDB_$(touch pwned)", "x")
    monkeypatch.setenv("WANDB_A\n#SBATCH --uid 0\nB", "y")
    monkeypatch.setenv("HF_HOME", "/h f")
    monkeypatch.setenv("HF_HOMEX", "not listed")
    monkeypatch.delenv("UNSET_ONE", raising=False)
    defn = parse_sweep({"name": "e", "command": ["true"], "env": ["WANDB_*", "HF_HOME", "UNSET_ONE"], "grid": {"x": [1]}}, "s.toml")
    art = plan_sweep(defn, NexaConfig(root=tmp_path), tmp_path / "run")
    assert art.env_names == ["HF_HOME", "WANDB_PROJECT"]
    env = tmp_path / "run" / "sweep.env"
    assert env.stat().st_mode & 0o777 == 0o600
    text = env.read_text()
    assert "pwned)=" not in text and "--uid" not in text and "HF_HOMEX" not in text
    shown = subprocess.run(
        ["bash", "-c", '. "$1" && printf "%s\\n" "$WANDB_PROJECT" "$HF_HOME"', "_", str(env)], capture_output=True, text=True,
        cwd=tmp_path, env={"PATH": os.environ["PATH"]},
    )
    assert shown.stdout.splitlines() == ["it's $(touch pwned)", "/h f"] and not list(tmp_path.rglob("pwned"))
    assert "sweep.env" in art.script_paths[0].read_text()
