"""The commands of nexa.pyz that drive other tools, run from the copied zipapp on the oldest
CPython it supports (3.6, RHEL 8's python3) against the real tools: sync (rsync over ssh),
teardown (terraform), build-image and run-container (Docker), monitor-config (promtool),
gpu-exporter (the stand-in nvidia-smi), launch --mode local. The planning and run-following
commands run on every interpreter in tests/test_pyz.py; Slurm in tests/test_pyz_slurm.py."""

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool
from tests.services.pyz import clean_env, require_python

OLDEST = "3.6"

TF = """
terraform {
  backend "local" { path = "state/campaign.tfstate" }
}
resource "terraform_data" "node" {
  count = 2
  input = "node-${count.index}"
}
"""


@pytest.fixture
def oldest(nexa_pyz, tmp_path):
    """``run(*args, **env)``: ``python3.6 nexa.pyz ARGS`` in a project folder, from a bare
    environment (HOME and TMPDIR of its own) plus ``env``."""
    python = require_python(OLDEST)
    project = tmp_path / "my project"
    for folder in (project, tmp_path / "home", tmp_path / "tmp"):
        folder.mkdir()
    pyz = Path(shutil.copy(str(nexa_pyz), str(tmp_path / "nexa.pyz")))
    base = clean_env(tmp_path / "home", tmp_path / "tmp")

    def run(*args, timeout=120, **env):
        full = dict(base, **env)
        return subprocess.run([python, str(pyz), *args], cwd=str(project), env=full, capture_output=True, text=True, timeout=timeout)

    run.project, run.python, run.pyz, run.env = project, python, pyz, base
    return run


def test_sync_teardown_and_monitor_config_on_36(oldest, sshd, tmp_path):
    require_tool("terraform", "promtool")
    project = oldest.project
    (project / "train.py").write_text("print('train')\n")
    (project / "runs" / "old").mkdir(parents=True)
    (project / "runs" / "old" / "big.ckpt").write_text("weights")
    tf_dir = project / "infra tf"
    tf_dir.mkdir()
    (tf_dir / "main.tf").write_text(TF)
    dest = tmp_path / "remote home" / "proj"
    (project / "nexa.toml").write_text(sshd.toml(str(dest)) + '[teardown.exp1]\ntf_dir = "infra tf"\n')

    res = oldest("sync", "--dry-run")
    assert res.returncode == 0 and "train.py" in res.stdout and not dest.exists(), res.stderr
    res = oldest("sync")
    assert res.returncode == 0, res.stderr
    assert (dest / "train.py").read_text() == "print('train')\n" and not (dest / "runs").exists()

    tf_env = dict(os.environ, TF_CLI_CONFIG_FILE="/dev/null", CHECKPOINT_DISABLE="1")
    for args in (("init", "-input=false", "-no-color"), ("apply", "-auto-approve", "-input=false", "-no-color")):
        done = subprocess.run(["terraform", f"-chdir={tf_dir}", *args], env=tf_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    res = oldest("teardown", "--campaign", "exp1", "--dry-run")
    assert res.returncode == 0 and "would remove 2 resource(s)" in res.stdout, res.stderr
    res = oldest("teardown", "--campaign", "exp1", "--yes")
    assert res.returncode == 0 and "Destroyed 2 of 2 resource(s); manifest: " in res.stdout, res.stderr
    state = subprocess.run(["terraform", f"-chdir={tf_dir}", "state", "list"], env=tf_env, capture_output=True, text=True)
    assert state.stdout.split() == []

    res = oldest("monitor-config", "--target", "gpu01", "--out", "prom", "--check")
    assert res.returncode == 0 and "promtool check config: OK" in res.stdout, res.stderr
    assert sorted(p.name for p in (project / "prom").iterdir()) == ["gpu_rules.yml", "grafana", "prometheus.yml"]


def test_gpu_exporter_and_local_launch_on_36(oldest):
    fakes = f"{ROOT / 'tests' / 'fakes'}:{oldest.env['PATH']}"
    res = oldest("gpu-exporter", "--once", "--host-label", "gpu01", PATH=fakes)
    assert res.returncode == 0 and 'nvidia_smi_last_collect_success{host="gpu01"} 1\n' in res.stdout, res.stderr

    # The threaded HTTP server (ThreadingMixIn + HTTPServer: 3.6 has no ThreadingHTTPServer).
    env = dict(oldest.env, PATH=fakes)
    server = subprocess.Popen([oldest.python, str(oldest.pyz), "gpu-exporter", "--port", "0"], cwd=str(oldest.project), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        line = server.stderr.readline()
        assert "serving http://127.0.0.1:" in line, line
        url = line.split("serving ", 1)[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as page:
            body = page.read().decode()
        assert "nvidia_smi_utilization_gpu_ratio" in body
    finally:
        server.terminate()
        server.wait(timeout=10)

    code = "import sys; print(sys.version_info[:2], sys.argv[1:])"
    res = oldest("launch", "--mode", "local", "--", oldest.python, "-c", code, "a b", "$(x)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "(3, 6) ['a b', '$(x)']"


def test_build_image_and_run_container_on_36(oldest, docker_engine, tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "bin").mkdir(parents=True)
    shutil.copy(str(ROOT / "bin" / "nexa-bootstrap.sh"), str(ctx / "bin" / "nexa-bootstrap.sh"))
    (ctx / "Dockerfile").write_text(
        f"FROM {docker_engine.base_image}\nARG NEXA_VERSION=dev\nLABEL ai.nexa.version=$NEXA_VERSION\n"
        "COPY bin/nexa-bootstrap.sh /usr/local/bin/nexa-bootstrap.sh\nRUN chmod 0755 /usr/local/bin/nexa-bootstrap.sh\n"
        'USER nexa\nENTRYPOINT ["/usr/local/bin/nexa-bootstrap.sh"]\n'
    )
    tag = "local/nexa-py36:1"
    (oldest.project / "nexa.toml").write_text(
        docker_engine.toml() + f'[containers.services.train-heavy]\ntag = "{tag}"\ndockerfile = "{ctx / "Dockerfile"}"\ncontext = "{ctx}"\n'
    )
    docker_engine.docker("image", "rm", "-f", tag, check=False)
    env = {"DOCKER_HOST": docker_engine.host, "DOCKER_BUILDKIT": "0", "HF_HOME": str(tmp_path / "hf")}
    res = oldest("build-image", "train-heavy", **env)
    assert res.returncode == 0, res.stderr
    labels = json.loads(docker_engine.docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag).stdout)
    assert labels["ai.nexa.service"] == "nexa_heavy"
    command = ["sh", "-c", 'echo "got $1"; exit 7', "-", "a b"]
    res = oldest("run-container", "train-heavy", "--gpus", "none", "--pull", "never", "--", *command, **env)
    assert res.returncode == 7, res.stderr
    assert res.stdout == "got a b\n"
