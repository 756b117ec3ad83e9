"""`nexa launch --mode slurm` on the real 2-node local Slurm: one job, two torchruns, four
gloo ranks that all_reduce and take one DDP step; failures and refusals come back clearly."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nexa_ops.errors import ToolError
from nexa_ops.launcher.run import launch
from tests.conftest import ROOT
from tests.test_launcher_run import read_ranks, torch_path, train  # noqa: F401 - fixtures

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run folders (./runs) land in the test's folder, as they would in a user's project."""
    monkeypatch.chdir(tmp_path)


def launch_file(tmp_path, train_path, extra=""):
    path = tmp_path / "launch.toml"
    path.write_text(
        'mode = "slurm"\n'
        f'command = ["python", {json.dumps(str(train_path))}, "--out", {json.dumps(str(tmp_path / "out"))}, "it\'s a b"]\n'
        'env = ["HF_HOME", "WANDB_*"]\n'
        "join_timeout = 120\n"  # slack for a loaded CI machine: both nodes' torchruns must start in time
        f"{extra}\n"
        '[resources]\nnodes = 2\ngpus_per_node = 2\ntime = "00:05:00"\n'
    )
    return path


def log_excerpt(path):
    """A failed job's log for the assertion message: its start (where the first rank's error
    is) and its end (srun's verdict); the middle is the other ranks' tracebacks."""
    text = path.read_text(errors="replace")
    return text if len(text) <= 8000 else text[:5000] + "\n[...]\n" + text[-3000:]


def the_run_dir(tmp_path):
    """The one run folder under ./runs; `runs/manifests` (cost manifests) sits beside it, and
    directory order is the file system's, so never take the first entry."""
    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if (p / "manifest.json").is_file())
    return run_dir


@pytest.fixture
def site_env(monkeypatch):
    """A submitting shell with listed variables, one that must not leak, and a site that
    defaults every job and step to --export=NONE."""
    monkeypatch.setenv("HF_HOME", "/data/hf cache")
    monkeypatch.setenv("WANDB_PROJECT", "nexa's test")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("NEXA_LEAK", "must not reach the ranks")
    monkeypatch.setenv("SBATCH_EXPORT", "NONE")
    monkeypatch.setenv("SLURM_EXPORT_ENV", "NONE")


def test_two_node_job_every_rank_is_right(slurm_cluster, tmp_path, torch_path, train, site_env, nexa_cli):  # noqa: F811
    path = launch_file(tmp_path, train)
    out = nexa_cli("launch", "--config", str(path), "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Cost estimate" in out.stdout and "Submitted job " in out.stdout and "2 node(s) x 2 process(es)" in out.stdout
    run_dir = the_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backend"] == "slurm" and manifest["exit_code"] == 0 and manifest["state"] == "COMPLETED"
    assert manifest["env"] == ["HF_HOME", "PATH", "WANDB_MODE", "WANDB_PROJECT"]
    job = manifest["job_ids"][0]
    # ONE job of two nodes, not an array.
    shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    assert "NumNodes=2 " in shown and "ArrayJobId" not in shown
    ranks = read_ranks(tmp_path / "out")
    assert sorted(ranks) == [0, 1, 2, 3]
    by_node = {}
    for rank, seen in ranks.items():
        assert seen["RANK"] == str(rank) and seen["WORLD_SIZE"] == "4" and seen["LOCAL_WORLD_SIZE"] == "2"
        assert seen["LOCAL_RANK"] == str(rank % 2) and seen["GROUP_RANK"] == str(rank // 2)
        assert seen["sum"] == 1.0 + 2 + 3 + 4
        assert seen["weight"] == ranks[0]["weight"]  # the DDP step averaged every rank's gradient
        assert seen["MASTER_ADDR"] and seen["MASTER_ADDR"] == ranks[0]["MASTER_ADDR"]
        assert seen["MASTER_PORT"] == ranks[0]["MASTER_PORT"]
        assert seen["SLURM_JOB_ID"] == job and seen["CUDA_VISIBLE_DEVICES"] == "0,1"
        assert seen["argv"][-1] == "it's a b" and seen["cwd"] == str(tmp_path)
        assert (seen["HF_HOME"], seen["WANDB_PROJECT"], seen["WANDB_MODE"]) == ("/data/hf cache", "nexa's test", "offline")
        assert seen["NEXA_LEAK"] is None
        by_node.setdefault(seen["SLURM_NODEID"], set()).add(rank)
    # Two torchruns, one per node, each with a consecutive pair of ranks.
    assert sorted(map(sorted, by_node.values())) == [[0, 1], [2, 3]]
    assert "OMP_NUM_THREADS" in (run_dir / f"launch-{job}.log").read_text()


def test_failing_rank_is_named_and_the_job_fails(slurm_cluster, tmp_path, torch_path, train, monkeypatch, nexa_cli):  # noqa: F811
    monkeypatch.setenv("FAIL_RANK", "2")
    out = nexa_cli("launch", "--config", str(launch_file(tmp_path, train)), "--env", "FAIL_RANK", "--wait")
    # The job's own exit code: srun's, 1 or 143 depending on how --kill-on-bad-exit raced.
    assert out.returncode in (1, 143), out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("nexa: error: train: rank 2 (local_rank 0 on ") and "exited with 3" in last
    run_dir = the_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["state"] == "FAILED" and manifest["failures"][0]["rank"] == 2


def test_unlisted_variables_do_not_reach_the_job(slurm_cluster, tmp_path, torch_path, train, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FAIL_RANK", "0")  # would fail rank 0 if it leaked in
    result = launch(config=launch_file(tmp_path, train), project=None, workdir=tmp_path, wait=True, wait_timeout=300)
    assert result.exit_code == 0 and result.job_state == "COMPLETED", log_excerpt(result.log_path)
    assert "FAIL_RANK" not in result.env_names and sorted(read_ranks(tmp_path / "out")) == [0, 1, 2, 3]


def test_impossible_node_count_is_refused_by_slurm(slurm_cluster, tmp_path, train, nexa_cli):  # noqa: F811
    out = nexa_cli("launch", "--config", str(launch_file(tmp_path, train)), "--nodes", "3")
    assert out.returncode == 1
    assert out.stderr.startswith("nexa: error: sbatch exited with 1: Batch job submission failed: Node count specification invalid")
    run_dir = the_run_dir(tmp_path)
    assert "Node count specification invalid" in json.loads((run_dir / "manifest.json").read_text())["error"]
    with pytest.raises(ToolError, match="Node count specification invalid"):
        launch(config=launch_file(tmp_path, train), nodes=3, workdir=tmp_path, project=None)


def test_launch_ddp_sh_by_hand_inside_an_allocation(slurm_cluster, tmp_path):
    """The per-node script alone, under a plain srun over two nodes: same rendezvous
    endpoint and id everywhere, node 0 hosts it, nproc from the allocated GPUs."""
    out = subprocess.run(
        ["srun", "-N2", "--ntasks-per-node=1", "--gpus-per-node=2", "--export=ALL", "bash", str(ROOT / "bin" / "launch_ddp.sh"),
         "--dry-run", "--join-timeout", "5", "--", "python", "-m", "pkg.train", "a b"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = sorted(shlex.split(line) for line in out.stdout.splitlines())
    assert len(lines) == 2
    job = lines[0][6].split("=")[1]
    common = [
        "torchrun", "--nnodes=2", "--nproc_per_node=2", "--max_restarts=0", "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{20000 + int(job) % 12000}", f"--rdzv_id={job}",
    ]
    tail = ["--no_python", "python", "-m", "pkg.train", "a b"]
    assert lines == [
        common + ["--rdzv_conf=is_host=false,join_timeout=5"] + tail,
        common + ["--rdzv_conf=is_host=true,join_timeout=5"] + tail,
    ]


def test_python_api_submits_without_waiting(slurm_cluster, tmp_path, torch_path, train):  # noqa: F811
    result = launch(config=launch_file(tmp_path, train), workdir=tmp_path)
    assert result.job_id and result.exit_code is None and result.script_path.exists()
    assert (result.run_dir / "launch.env").stat().st_mode & 0o777 == 0o600
    slurm_cluster.wait([result.job_id], timeout=120)
    assert sorted(read_ranks(tmp_path / "out")) == [0, 1, 2, 3]
    assert Path(sys.executable).parent.as_posix() in (result.run_dir / "launch.env").read_text()


def test_launch_prints_the_estimate_and_max_cost_refuses(slurm_cluster, tmp_path, train, nexa_cli):  # noqa: F811
    path = launch_file(tmp_path, train, extra="").read_text().replace('time = "00:05:00"', 'time = "02:00:00"\ngpu_type = "H100"')
    (tmp_path / "launch.toml").write_text(path)
    out = nexa_cli("launch", "--config", str(tmp_path / "launch.toml"), "--max-cost", "10")
    assert out.returncode == 3, out.stdout + out.stderr
    assert "Cost estimate" in out.stdout and "is above --max-cost $10.00" in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing planned, nothing submitted
    jobs = subprocess.run(["squeue", "-h", "-n", "train", "-o", "%i"], capture_output=True, text=True).stdout
    assert jobs.strip() == ""


def test_launch_cost_manifest_gets_actual_hours(slurm_cluster, tmp_path, torch_path, train, nexa_cli):  # noqa: F811
    launch_file(tmp_path, train)
    (tmp_path / "nexa.toml").write_text('[cost]\ngpu_type = "H100"\n')  # the fake GPUs' price
    out = nexa_cli("launch", "--config", str(tmp_path / "launch.toml"), "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = the_run_dir(tmp_path)
    cost_path = tmp_path / "runs" / "manifests" / f"cost_{run_dir.name}.json"
    cost = json.loads(cost_path.read_text())
    assert cost["kind"] == "launch" and cost["nodes"] == 2 and cost["gpus_per_node"] == 2 and cost["estimated_usd"] > 0
    assert json.loads((run_dir / "tasks" / "0.end.json").read_text())["exit_code"] == 0
    report = nexa_cli("cost.report", "--format", "json")
    assert report.returncode == 0, report.stderr
    reconciled = json.loads(cost_path.read_text())
    assert reconciled["actual_usd"] is not None and reconciled["actual_usd"] > 0


def test_the_real_sbatch_reads_launch_script_values_whole(slurm_cluster, tmp_path):
    """The multi-node script's #SBATCH lines are quoted the same way: a hostile partition
    stays one (unknown) partition; a working folder with #, quotes and % is the job's WorkDir."""
    from nexa_ops.config import ClusterConfig, Resources
    from nexa_ops.launcher import spec as plan
    from nexa_ops.tools import slurm

    def script(partition, workdir):
        spec = plan.resolve(None, "launch.toml", command=["python", "t.py"], mode="slurm", resources=Resources(partition=partition))
        run_dir = str(tmp_path / "run #1 100%")
        text = plan.render_ddp_script(
            spec, cluster=ClusterConfig(), run_dir=run_dir, log_path=slurm.filename_pattern(run_dir, "launch-%j.log", "run"),
            workdir=workdir, env_names=[],
        )
        path = tmp_path / "launch.sbatch"
        path.write_text(text)
        return str(path)

    out = subprocess.run(["sbatch", "--test-only", script('debug" --uid=0 "--export=ALL', str(tmp_path))], capture_output=True, text=True)
    assert out.returncode == 1 and 'invalid partition specified: debug" --uid=0 "--export=ALL\n' in out.stderr
    workdir = tmp_path / "w #1 \"q\" 'q' 50%x"
    workdir.mkdir()
    held = slurm.sbatch(script("debug", str(workdir)), options=["--hold"])
    try:
        assert slurm.show_job(held)[0]["WorkDir"] == str(workdir)
    finally:
        slurm.scancel([held])


def test_hostile_variable_names_never_reach_launch_env_or_the_script(slurm_cluster, tmp_path, torch_path, train, monkeypatch):  # noqa: F811
    """The report: a name matched by a glob (`WANDB_*`) with a line break added #SBATCH lines,
    `WANDB_$(touch x)` ran a command when launch.env was sourced. Such names are not written."""
    monkeypatch.setenv("WANDB_$(touch pwned)", "1")
    monkeypatch.setenv("WANDB_A\n#SBATCH --uid 0\nWANDB_B", "2")
    monkeypatch.setenv("WANDB_MODE", "offline")
    result = launch(config=launch_file(tmp_path, train), project=None, workdir=tmp_path, wait=True, wait_timeout=300)
    assert result.exit_code == 0 and result.job_state == "COMPLETED", log_excerpt(result.log_path)
    assert [n for n in result.env_names if n.startswith("WANDB_")] == ["WANDB_MODE"]
    env_text = (result.run_dir / "launch.env").read_text()
    script = result.script_path.read_text()
    for text in (env_text, script):
        assert "pwned" not in text and "--uid" not in text and "WANDB_B" not in text
    assert "export WANDB_MODE=offline" in env_text
    assert not list(tmp_path.rglob("pwned")) and not (result.run_dir / "pwned").exists()
