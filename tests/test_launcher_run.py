"""`nexa launch`: pure argv/script planning, and real local and 2-process gloo DDP runs."""

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nexa_ops.config import ClusterConfig, Resources
from nexa_ops.errors import ConfigError
from nexa_ops.launcher import spec as launch_spec
from nexa_ops.launcher.run import launch, load_launch_file, visible_gpus
from nexa_ops.tools import nvidia_smi, torchrun
from tests.conftest import ROOT, require, require_tool

HOSTILE = ["a b", "it's", 'say "hi"', "$(touch pwned)", "x; rm -rf /", "ünïcødé ✓", "--leading-dash", "`id`", "*"]

# The training script every real test runs: one all_reduce and one DDP step, then a record
# of what this rank saw. Written into the test's folder; `--out DIR` or `--out=DIR`.
TRAIN = textwrap.dedent(
    """
    import datetime, json, os, sys
    args = sys.argv[1:]
    out = next(a.split("=", 1)[1] for a in args if a.startswith("--out=")) if "--out" not in args else args[args.index("--out") + 1]
    if os.environ.get("FAIL_RANK") == os.environ["RANK"]:
        print("rank %s failing on purpose" % os.environ["RANK"], file=sys.stderr)
        sys.exit(3)
    import torch
    import torch.distributed as dist
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank = dist.get_rank()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = (model(torch.full((8, 4), float(rank + 1))) ** 2).mean()
    loss.backward()
    opt.step()
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
            "SLURM_NODEID", "SLURMD_NODENAME", "SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", "HF_HOME", "WANDB_PROJECT",
            "WANDB_MODE", "NEXA_LEAK", "NEXA_RUN_DIR")
    record = {k: os.environ.get(k) for k in keys}
    record.update(sum=total.item(), weight=model.module.weight.detach().flatten().tolist(), argv=args, cwd=os.getcwd())
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "rank%d.json" % rank), "w") as fh:
        json.dump(record, fh)
    dist.destroy_process_group()
    """
)

# `torchrun` output of a real failure (torch 2.13, rank 1 exiting 3), kept verbatim.
CHILD_FAILED = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
/work/main/.venv/bin/python FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-28_15:57:33
  host      : node7
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 24581)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 24581
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-28_15:57:33
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 3 (pid: 24582)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""

# `nvidia-smi -L` on a machine with two A100s, one of them split into MIG devices.
NVIDIA_SMI_L = """\
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-4f4b1c3e-2b0d-8a8e-7c3f-0e6a1d0f6b21)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-9a1e7f5d-1c2b-4e3a-b8d7-6f5e4d3c2b1a)
  MIG 3g.40gb     Device  0: (UUID: MIG-0b1e2d3c-4f5a-6b7c-8d9e-0f1a2b3c4d5e)
  MIG 3g.40gb     Device  1: (UUID: MIG-1c2d3e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f)
"""


def require_torch():
    require(importlib.util.find_spec("torch") is not None, "PyTorch not installed (pip install torch==2.13.0)")


@pytest.fixture
def torch_path(monkeypatch):
    """PATH with this venv's bin first, so `torchrun` and `python` are the ones with torch."""
    require_torch()
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    require_tool("torchrun")
    return os.environ["PATH"]


@pytest.fixture
def train(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(TRAIN, encoding="utf-8")
    return path


def read_ranks(out: Path):
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in out.glob("rank*.json")}


# --- pure: argv, failures, options, env, GPUs, script --------------------------------


def test_torchrun_argv_single_node():
    cmd = ["python", "-m", "pkg.train", "--lr", "a b"]
    assert torchrun.argv(cmd, nproc_per_node=2) == [
        "torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--max_restarts=0", "--no_python", *cmd,
    ]
    script = torchrun.argv(["train.py", "--x"], nproc_per_node=4, port=29511, join_timeout=9, max_restarts=1)
    assert script == [
        "torchrun", "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:29511", "--rdzv_id=nexa-29511", "--nnodes=1",
        "--nproc_per_node=4", "--max_restarts=1", "--rdzv_conf=join_timeout=9", "train.py", "--x",
    ]


def test_parse_failures_names_root_cause_first():
    failures = torchrun.parse_failures(CHILD_FAILED)
    assert [(f.rank, f.local_rank, f.exit_code, f.host) for f in failures] == [(1, 1, 3, "localhost"), (0, 0, -15, "node7")]
    assert failures[0].describe() == "rank 1 (local_rank 1 on localhost) exited with 3"
    assert torchrun.parse_failures("no report here") == []


def test_launch_file_and_option_precedence(tmp_path):
    path = tmp_path / "launch.toml"
    path.write_text(
        'mode = "slurm"\ncommand = ["python", "train.py"]\nenv = ["HF_HOME"]\nnproc_per_node = 2\n'
        '[resources]\nnodes = 2\ngpus_per_node = 4\ntime = "01:00:00"\n'
    )
    file = load_launch_file(path)
    spec = launch_spec.resolve(file, str(path), project_env=["WANDB_*"])
    got = (spec.mode, spec.command, spec.name, spec.nproc_per_node, spec.resources.nodes)
    assert got == ("slurm", ["python", "train.py"], "train", 2, 2)
    assert spec.env == ["WANDB_*", "HF_HOME"]
    spec = launch_spec.resolve(file, str(path), command=["python", "other.py", "x"], nodes=3, nproc_per_node=1, env=["HF_HOME", "A"])
    assert (spec.command, spec.name, spec.resources.nodes, spec.nproc_per_node, spec.env) == (
        ["python", "other.py", "x"], "other", 3, 1, ["HF_HOME", "A"],
    )
    assert launch_spec.resolve(None, "options", command=["python", "t.py"]).mode == "local"
    three = Resources(gpus_per_node=3)
    assert launch_spec.resolve(None, "options", command=["./run"], mode="slurm", resources=three).nproc_for_slurm() == 3


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ('command = ["x"]\nnproc_per_nod = 2\n', {}, "launch.toml: nproc_per_nod: unknown key (did you mean 'nproc_per_node'?)"),
        ('command = ["x"]\nmode = "mpi"\n', {}, "launch.toml: mode: expected one of local, ddp, slurm, got 'mpi'"),
        ('command = "python train.py"\n', {}, "launch.toml: command: expected a list of strings"),
        ("", {}, "launch.toml: command: no command"),
        ('command = ["x"]\n[resources]\ntime = "soon"\n', {}, "launch.toml: resources.time: expected a Slurm time"),
        ('command = ["x"]\nenv = ["A B"]\n', {}, "launch.toml: env[0]: expected an environment variable name or a glob like 'WANDB_*'"),
        ('command = ["x"]\nenv = ["OK", "A-B"]\n', {}, "launch.toml: env[1]: expected an environment variable name"),
        ('command = ["x"]\n', {"env": ["A B"]}, "--env: expected an environment variable name or a glob like 'WANDB_*', got 'A B'"),
        ('command = ["x"]\n', {"mode": "local", "nproc_per_node": 2}, "local mode runs one process"),
        ('command = ["x"]\n', {"mode": "ddp", "nodes": 2}, "ddp mode runs on this machine; use --mode slurm for 2 nodes"),
        ('command = ["x"]\n[resources]\nntasks_per_node = 2\n', {"mode": "slurm"}, "one torchrun per node"),
        ('command = ["x"]\nrdzv_port = 70000\n', {}, "launch.toml: rdzv_port: expected a TCP port 1..65535, got 70000"),
        ('command = ["x"]\nrdzv_port = 0\n', {"mode": "ddp"}, "launch.toml: rdzv_port: expected a TCP port 1..65535, got 0"),
        ('command = ["x"]\nrdzv_port = 99999\n', {"rdzv_port": 29500}, "launch.toml: rdzv_port: expected a TCP port"),
        ('command = ["x"]\n', {"mode": "ddp", "rdzv_port": 0}, "--rdzv-port: expected a TCP port 1..65535, got 0"),
        ('command = ["x"]\nname = "a/b"\n', {}, "launch.toml: name: expected letters"),
        ('command = ["x"]\nname = "ok"\n', {"name": "ab\n"}, "--name: expected letters, digits, '.', '_' or '-', got 'ab\\n'"),
        ('command = ["x"]\n', {"mode": "mpi"}, "--mode: expected one of local, ddp, slurm, got 'mpi'"),
    ],
)
def test_bad_launch_input_is_one_clear_error(tmp_path, text, kwargs, message):
    path = tmp_path / "launch.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        launch(config=path, dry_run=True, **kwargs)
    assert message in str(info.value).replace(str(tmp_path) + "/", "")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "section, message",
    [
        ("rdzv_port = 99999", "nexa.toml: launch.rdzv_port: expected a TCP port 1..65535, got 99999"),
        ("rdzv_port = 0", "nexa.toml: launch.rdzv_port: expected a TCP port 1..65535, got 0"),
        ('env = ["A B"]', "nexa.toml: launch.env[0]: expected an environment variable name or a glob like 'WANDB_*', got 'A B'"),
    ],
)
def test_bad_project_launch_section_names_nexa_toml(nexa_cli, tmp_path, section, message):
    (tmp_path / "nexa.toml").write_text(f"[launch]\n{section}\n")
    out = nexa_cli("launch", "--mode", "ddp", "--dry-run", "--", "train.py", env={"NEXA_CONFIG": ""})
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"nexa: error: {tmp_path / message}\n"


def test_project_rdzv_port_reaches_torchrun_below_the_launch_file(tmp_path):
    (tmp_path / "nexa.toml").write_text("[launch]\nrdzv_port = 29600\n")
    (tmp_path / "launch.toml").write_text('mode = "ddp"\ncommand = ["train.py"]\n')
    out = io.StringIO()
    launch(config=tmp_path / "launch.toml", project=tmp_path / "nexa.toml", dry_run=True, out=out)
    assert "--rdzv_endpoint=127.0.0.1:29600" in out.getvalue()
    (tmp_path / "launch.toml").write_text('mode = "ddp"\ncommand = ["train.py"]\nrdzv_port = 29700\n')
    out = io.StringIO()
    launch(config=tmp_path / "launch.toml", project=tmp_path / "nexa.toml", dry_run=True, out=out)
    assert "--rdzv_endpoint=127.0.0.1:29700" in out.getvalue()


def test_cli_bad_name_and_port_name_the_option(nexa_cli, tmp_path):
    for args, message in (
        (["--name", "ab\n"], "--name: expected letters, digits, '.', '_' or '-', got 'ab\\n'"),
        (["--name", "a\tb"], "--name: expected letters, digits, '.', '_' or '-', got 'a\\tb'"),
        (["--mode", "ddp", "--rdzv-port", "99999"], "--rdzv-port: expected a TCP port 1..65535, got 99999"),
        (["--env", "A B"], "--env: expected an environment variable name or a glob like 'WANDB_*', got 'A B'"),
    ):
        out = nexa_cli("launch", *args, "--dry-run", "--", "train.py", env={"NEXA_CONFIG": ""})
        assert (out.returncode, out.stdout, out.stderr) == (2, "", f"nexa: error: {message}\n"), args
    assert not (tmp_path / "runs").exists()


def test_env_selection_globs_and_quoting(tmp_path):
    environ = {"PATH": "/p", "HF_HOME": "/h f", "WANDB_PROJECT": "it's", "WANDB_MODE": "$(touch pwned)", "SECRET": "x"}
    chosen = launch_spec.select_env(["HF_HOME", "WANDB_*", "UNSET_VAR"], environ)
    assert chosen == {"HF_HOME": "/h f", "PATH": "/p", "WANDB_MODE": "$(touch pwned)", "WANDB_PROJECT": "it's"}
    env_file = tmp_path / "launch.env"
    env_file.write_text(launch_spec.env_file(chosen))
    out = subprocess.run(
        ["bash", "-c", '. "$1" && printf "%s\\n" "$HF_HOME" "$WANDB_PROJECT" "$WANDB_MODE"', "_", str(env_file)],
        capture_output=True, text=True, cwd=tmp_path, env={},
    )
    assert out.stdout.splitlines() == ["/h f", "it's", "$(touch pwned)"]
    assert not (tmp_path / "pwned").exists()


def test_gpu_counting_from_cuda_visible_devices_and_nvidia_smi(tmp_path, monkeypatch):
    assert [launch_spec.count_cuda_visible(v) for v in (None, "", "0", "0,1,2", "GPU-4f4b,GPU-9a1e", "0,-1,2")] == [None, 0, 1, 3, 2, 1]
    assert len(nvidia_smi.parse_list(NVIDIA_SMI_L)) == 2
    # No GPU here: a stand-in nvidia-smi replays the real tool's `-L` output.
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 9\ncat <<'EOF'\n{NVIDIA_SMI_L}EOF\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert visible_gpus({}) == 2
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3"}) == 1
    monkeypatch.setenv("PATH", "/nonexistent")
    assert visible_gpus({}) == 0


def test_ddp_dry_run_default_nproc(nexa_cli, tmp_path):
    base = ["launch", "--mode", "ddp", "--dry-run", "--", "python", "train.py", "a b"]
    expect = "torchrun --standalone --nnodes=1 --nproc_per_node={} --max_restarts=0 --no_python python train.py 'a b'\n"
    out = nexa_cli(*base, env={"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert (out.returncode, out.stdout) == (0, expect.format(3)), out.stderr
    out = nexa_cli(*base, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert out.stdout == expect.format(1)
    out = nexa_cli("launch", "--mode", "ddp", "--rdzv-port", "29999", "--nproc-per-node", "2", "--dry-run", "--", "train.py")
    assert "--rdzv_endpoint=127.0.0.1:29999" in out.stdout and "--no_python" not in out.stdout
    assert not (tmp_path / "runs").exists()


def test_slurm_script_is_complete_quoted_and_shellcheck_clean(tmp_path):
    require_tool("shellcheck")
    spec = launch_spec.resolve(
        None, "options", command=["python", "train.py", *HOSTILE], mode="slurm", name="big",
        resources=Resources(nodes=4, gpus_per_node=8, cpus_per_task=32, mem="200G", time="02:00:00", extra=["--exclusive"]),
        join_timeout=120,
    )
    script = launch_spec.render_ddp_script(
        spec, cluster=ClusterConfig(partition="gpu", account="lab"), run_dir="/runs/big 1", log_path="/runs/big 1/launch-%j.log",
        workdir="/home/u/my proj", env_names=["HF_HOME", "PATH"],
    )
    for line in (
        "#SBATCH --job-name=big", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8", "#SBATCH --cpus-per-task=32", "#SBATCH --mem=200G",
        '#SBATCH --output="/runs/big 1/launch-%j.log"', '#SBATCH --chdir="/home/u/my proj"', "#SBATCH --exclusive",
        "#SBATCH --export=NONE", "run_dir='/runs/big 1'", "#   HF_HOME PATH",
    ):
        assert line in script.splitlines(), line
    assert "srun --export=ALL" in script and "--nproc-per-node 8 --join-timeout 120 --max-restarts 0 --" in script
    assert sum(1 for line in script.splitlines() if "srun " in line and not line.startswith("#")) == 1
    path = tmp_path / "big.sbatch"
    path.write_text(script)
    check = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    # The command after `--` reaches bash word for word.
    words = script.split(" -- ", 1)[1].strip()
    echoed = subprocess.run(["bash", "-c", f"printf '%s\\n' {words}"], capture_output=True, text=True, cwd=tmp_path)
    assert echoed.stdout.splitlines() == ["python", "train.py", *HOSTILE]


def test_launch_ddp_sh_is_shellcheck_clean_and_refuses_outside_slurm():
    require_tool("shellcheck", "bash")
    script = ROOT / "bin" / "launch_ddp.sh"
    assert subprocess.run(["shellcheck", str(script)], capture_output=True).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = subprocess.run(["bash", str(script), "--", "python", "t.py"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "not inside a Slurm allocation" in out.stderr
    help_text = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True).stdout
    assert "--nproc-per-node N" in help_text and "--join-timeout S" in help_text


def test_slurm_dry_run_prints_script_and_writes_nothing(nexa_cli, tmp_path):
    (tmp_path / "launch.toml").write_text('mode = "slurm"\ncommand = ["python", "train.py"]\nenv = ["HF_HOME"]\n[resources]\nnodes = 2\n')
    out = nexa_cli("launch", "--config", "launch.toml", "--dry-run", env={"HF_HOME": "/secret/value"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("#!/bin/bash\n") and "#SBATCH --nodes=2" in out.stdout
    assert out.stdout.splitlines()[-1].startswith("sbatch --parsable --export=NONE ")
    assert "/secret/value" not in out.stdout  # values live in launch.env, never printed
    assert not (tmp_path / "runs").exists()


# --- real: local mode -----------------------------------------------------------------

PROBE = (
    "import json, os, sys; print('to stdout', flush=True); print('to stderr', file=sys.stderr, flush=True);"
    "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'run': os.environ['NEXA_RUN_DIR']}, open('probe.json', 'w'));"
    "sys.exit(int(os.environ.get('EXIT', '0')))"
)


def test_local_streams_tees_and_passes_exit_code(nexa_cli, tmp_path):
    out = nexa_cli("launch", "--", sys.executable, "-c", PROBE, *HOSTILE, env={"EXIT": "4"})
    assert out.returncode == 4
    assert "to stdout" in out.stdout and "to stderr" in out.stderr and "to stderr" not in out.stdout
    assert "nexa: error: launch: exited with 4 (log: " in out.stderr
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["argv"] == HOSTILE and probe["cwd"] == str(tmp_path)
    run_dir = Path(probe["run"])
    assert run_dir.parent == tmp_path / "runs"
    assert sorted((run_dir / "launch.log").read_text().splitlines()) == ["to stderr", "to stdout"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["exit_code"] == 4 and manifest["backend"] == "local" and manifest["command"][3:] == HOSTILE
    assert not (tmp_path / "pwned").exists()
    ok = nexa_cli("launch", "--", sys.executable, "-c", PROBE)
    assert ok.returncode == 0 and "finished in" in ok.stderr


def test_local_missing_program_is_one_line(nexa_cli):
    out = nexa_cli("launch", "--", "no-such-program-xyz", "--flag")
    assert out.returncode == 127
    assert out.stderr.strip() == "nexa: error: no-such-program-xyz: not found on PATH (the command to launch)"


@pytest.mark.parametrize("signame, expected", [("SIGINT", 130), ("SIGTERM", 143)])
def test_local_forwards_signals_so_the_program_cleans_up(tmp_path, signame, expected):
    program = textwrap.dedent(
        """
        import signal, sys, time
        def bye(signum, frame):
            open("cleaned", "w").write(signal.Signals(signum).name)
            sys.exit(128 + signum)
        signal.signal(signal.SIGINT, bye)
        signal.signal(signal.SIGTERM, bye)
        open("ready", "w").close()
        time.sleep(60)
        """
    )
    nexa = subprocess.Popen(
        [sys.executable, "-m", "nexa_ops", "launch", "--", sys.executable, "-c", program],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 20
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline and nexa.poll() is None, nexa.communicate()
        time.sleep(0.05)
    nexa.send_signal(getattr(signal, signame))
    _, err = nexa.communicate(timeout=20)
    assert nexa.returncode == expected, err
    assert (tmp_path / "cleaned").read_text() == signame


def test_local_runs_the_gloo_script_as_one_process(nexa_cli, tmp_path, torch_path, train):
    """The training script, without torchrun: world size 1, the rendezvous given by the caller."""
    import socket
    import warnings

    with warnings.catch_warnings():  # torch without numpy warns on import
        warnings.simplefilter("ignore", UserWarning)
        import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rendezvous = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    out = nexa_cli(
        "launch", "--mode", "local", "--", "python", str(train), "--out", str(tmp_path / "out"), "it's a b",
        env={"PATH": torch_path, **rendezvous},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finished in" in out.stderr
    ranks = read_ranks(tmp_path / "out")
    assert sorted(ranks) == [0]
    seen = ranks[0]
    assert {k: seen[k] for k in rendezvous} == rendezvous
    assert seen["sum"] == 1.0 and seen["argv"][-1] == "it's a b" and seen["cwd"] == str(tmp_path)
    torch.manual_seed(0)  # the same step without DDP: one rank, so DDP's averaging changes nothing
    model = torch.nn.Linear(4, 1)
    before = model.weight.detach().flatten().tolist()
    (model(torch.full((8, 4), 1.0)) ** 2).mean().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert seen["weight"] != before
    assert seen["weight"] == pytest.approx(model.weight.detach().flatten().tolist())
    run_dir = Path(seen["NEXA_RUN_DIR"])
    assert run_dir.parent == tmp_path / "runs" and (run_dir / "launch.log").is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["exit_code"] == 0 and manifest["backend"] == "local"


# --- real: ddp with torchrun and gloo ----------------------------------------------------


def test_ddp_two_processes_all_reduce_and_step(nexa_cli, tmp_path, torch_path, train):
    out = nexa_cli(
        "launch", "--mode", "ddp", "--nproc-per-node", "2", "--join-timeout", "20", "--",
        "python", str(train), "--out", str(tmp_path / "out"), "it's a b",
        env={"PATH": torch_path},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = read_ranks(tmp_path / "out")
    assert sorted(ranks) == [0, 1]
    for rank, seen in ranks.items():
        assert seen["RANK"] == str(rank) and seen["LOCAL_RANK"] == str(rank)
        assert seen["WORLD_SIZE"] == "2" and seen["LOCAL_WORLD_SIZE"] == "2"
        assert seen["sum"] == 3.0 and seen["argv"][-1] == "it's a b"
        assert seen["MASTER_ADDR"] == ranks[0]["MASTER_ADDR"] and seen["MASTER_PORT"] == ranks[0]["MASTER_PORT"]
        assert seen["weight"] == ranks[0]["weight"]  # one DDP step: gradients were averaged
        assert Path(seen["NEXA_RUN_DIR"]).parent == tmp_path / "runs"
    log = (Path(ranks[0]["NEXA_RUN_DIR"]) / "launch.log").read_text()
    assert "OMP_NUM_THREADS" in log  # torchrun's own banner went to the log too


def test_ddp_failing_rank_is_named(nexa_cli, tmp_path, torch_path, train):
    out = nexa_cli(
        "launch", "--mode", "ddp", "--nproc-per-node", "2", "--join-timeout", "20", "--",
        "python", str(train), "--out", str(tmp_path / "out"),
        env={"PATH": torch_path, "FAIL_RANK": "1"},
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("nexa: error: train: rank 1 (local_rank 1 on ") and "exited with 3" in last


def test_ddp_with_a_given_port_and_a_script(nexa_cli, tmp_path, torch_path, train):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = nexa_cli(
        "launch", "--mode", "ddp", "--nproc-per-node", "2", "--rdzv-port", str(port), "--join-timeout", "20", "--",
        str(train), f"--out={tmp_path / 'out'}", env={"PATH": torch_path},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = read_ranks(tmp_path / "out")
    assert sorted(ranks) == [0, 1] and {r["sum"] for r in ranks.values()} == {3.0}


def test_torchrun_missing_is_a_clear_error(nexa_cli, tmp_path):
    out = nexa_cli("launch", "--mode", "ddp", "--", "python", "train.py", env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 127
    assert out.stderr.strip() == f"nexa: error: torchrun: not found on PATH ({torchrun.HINT})"
    assert not (tmp_path / "runs").exists()


def test_sweep_task_runs_under_torchrun(nexa_cli, tmp_path, torch_path, train):
    outs = [str(tmp_path / "out0"), str(tmp_path / "out1")]
    (tmp_path / "sweep.toml").write_text(
        f'name = "ddp-sweep"\ncommand = ["python", {json.dumps(str(train))}]\n'
        f'[launcher]\nkind = "torchrun"\nnproc_per_node = 2\n[grid]\nout = {json.dumps(outs)}\n'
    )
    out = nexa_cli("sweep", "--config", "sweep.toml", "--local", "--out", "run", env={"PATH": torch_path})
    assert out.returncode == 0, out.stdout + out.stderr
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    prefix = ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--max_restarts=0", "--no_python"]
    assert spec["tasks"][0]["argv"][:6] == prefix
    for folder in outs:
        ranks = read_ranks(Path(folder))
        assert sorted(ranks) == [0, 1] and {r["WORLD_SIZE"] for r in ranks.values()} == {"2"}
        assert {r["sum"] for r in ranks.values()} == {3.0}


def test_waiting_for_a_slurm_launch_polls_little_and_sees_the_end_record_at_once(tmp_path, monkeypatch):
    """`launch --wait` asks squeue at once, 2 s later, then ever more rarely; the job's end
    record makes it ask again at once, so a job of days is not polled every half second."""
    from nexa_ops.launcher import run as launcher_run
    from nexa_ops.tools import slurm

    (tmp_path / "tasks").mkdir()
    asked = []
    ended_at = []

    def squeue(job_ids, fmt="%i"):
        asked.append(time.monotonic())
        return [["7"]] if not ended_at or time.monotonic() - ended_at[0] < 0.3 else []

    def end_later():
        time.sleep(3.2)
        (tmp_path / "tasks" / "0.end.json").write_text('{"index": 0, "exit_code": 0, "end": 1, "job_id": "7"}')
        ended_at.append(time.monotonic())

    monkeypatch.setattr(slurm, "squeue", squeue)
    monkeypatch.setattr(slurm, "job_outcome", lambda job: ("COMPLETED", 0))
    result = launcher_run.LaunchResult(mode="slurm", name="t", argv=[], run_dir=tmp_path, log_path=tmp_path / "x.log", job_id="7")
    import threading

    writer = threading.Thread(target=end_later)
    writer.start()
    done = launcher_run.wait_for_job(result, interval=0.1)
    writer.join()
    assert (done.job_state, done.exit_code) == ("COMPLETED", 0)
    polls_before_end = [t for t in asked if t < ended_at[0]]
    assert len(polls_before_end) == 2  # at 0 s and 2 s (the next would have been at 6 s)
    assert asked[-1] - ended_at[0] < 1.0  # the end seen within a second of the record
