"""Sweeps on the real local Slurm: arrays really run and every task gets exactly its argv."""

import json
import os
import subprocess
import sys

import pytest

from nexa_ops import launch_slurm_sweep
from nexa_ops.errors import ToolError
from tests.conftest import ROOT

PROBE = ROOT / "tests" / "data" / "argv_probe.py"
HOSTILE = ["a b", "it's", 'say "hi"', "$(touch pwned)", "x; rm -rf /", "ünïcødé ✓", "--leading-dash", "`id`", "*", "tab\there"]

pytestmark = pytest.mark.slurm


def write_sweep(tmp_path, grid, resources="", extra=""):
    lines = [
        'name = "e2e"',
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(PROBE))}]",
        extra,
        "[grid]",
    ]
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in grid.items()]
    lines += ["[resources]", 'time = "00:05:00"', resources]
    path = tmp_path / "sweep.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def probe_dir(tmp_path, monkeypatch):
    path = tmp_path / "probe"
    path.mkdir()
    monkeypatch.setenv("PROBE_DIR", str(path))
    return path


def read_probes(probe_dir):
    return {int(p.stem): json.loads(p.read_text()) for p in probe_dir.glob("*.json")}


def test_hostile_grid_with_excludes_runs_as_one_array(slurm_cluster, tmp_path, probe_dir, nexa_cli):
    path = write_sweep(tmp_path, {"msg": HOSTILE, "n": [1, 2]}, "max_parallel = 4", extra='[[exclude]]\nmsg = "*"\nn = 1')
    out = nexa_cli("sweep", "--config", str(path), "--submit", "--out", str(tmp_path / "run"), env={"PROBE_DIR": str(probe_dir)})
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["job_ids"]) == 1 and manifest["tasks"] == 19
    assert manifest["user"] and manifest["spec"].endswith("spec.json") and manifest["submitted_at"]
    job = manifest["job_ids"][0]
    throttle = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=4" in throttle
    slurm_cluster.wait([job])
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    probes = read_probes(probe_dir)
    assert sorted(probes) == list(range(19))
    for task in spec["tasks"]:
        assert probes[task["index"]]["argv"] == task["argv"][2:]
        assert probes[task["index"]]["env"]["SLURM_ARRAY_TASK_ID"] == str(task["index"])
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "run" / "logs" / f"{job}_0.out").exists()
    end = json.loads((tmp_path / "run" / "tasks" / "18.end.json").read_text())
    assert end["exit_code"] == 0


def test_larger_than_max_array_size_is_chunked(slurm_cluster, tmp_path, probe_dir):
    count = 2 * slurm_cluster.max_array_size + 7
    path = write_sweep(tmp_path, {"i": list(range(count))}, "cpus_per_task = 1")
    artifacts = launch_slurm_sweep(path, submit=True, out=tmp_path / "run")
    assert artifacts.job_count == count
    assert [c.offset for c in artifacts.chunks] == [0, 25, 50]
    assert [c.count for c in artifacts.chunks] == [25, 25, 7]
    assert len(artifacts.job_ids) == 3 and artifacts.submitted
    slurm_cluster.wait(artifacts.job_ids, timeout=180)
    probes = read_probes(probe_dir)
    assert sorted(probes) == list(range(count))
    for index, probe in probes.items():
        assert probe["argv"] == [f"--i={index}"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [c["offset"] for c in manifest["chunks"]] == [0, 25, 50]


def test_gpu_jobs_see_their_devices(slurm_cluster, tmp_path, probe_dir):
    path = write_sweep(tmp_path, {"i": [0, 1]}, "gpus_per_node = 2")
    artifacts = launch_slurm_sweep(path, submit=True, out=tmp_path / "run")
    slurm_cluster.wait(artifacts.job_ids)
    for probe in read_probes(probe_dir).values():
        assert probe["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_typed_gres(slurm_cluster, tmp_path, probe_dir):
    path = write_sweep(tmp_path, {"i": [0]}, 'gpus_per_node = 1\ngpu_type = "fake"')
    artifacts = launch_slurm_sweep(path, submit=True, out=tmp_path / "run")
    assert "#SBATCH --gres=gpu:fake:1" in artifacts.script_paths[0].read_text()
    slurm_cluster.wait(artifacts.job_ids)
    assert read_probes(probe_dir)[0]["env"]["CUDA_VISIBLE_DEVICES"] == "0"


@pytest.mark.parametrize(
    "resources, message",
    [
        ('partition = "nope"', "Invalid partition name specified"),
        ("gpus_per_node = 3", "Requested node configuration is not available"),
        ("nodes = 3", "Node count specification invalid"),
    ],
)
def test_refused_submission_keeps_spec(slurm_cluster, tmp_path, nexa_cli, resources, message):
    path = write_sweep(tmp_path, {"i": [0, 1]}, resources)
    out = nexa_cli("sweep", "--config", str(path), "--submit", "--out", str(tmp_path / "run"))
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert (tmp_path / "run" / "spec.json").exists() and (tmp_path / "run" / "e2e.sbatch").exists()
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_refusal_through_the_api_is_a_tool_error(slurm_cluster, tmp_path):
    path = write_sweep(tmp_path, {"i": [0]}, 'partition = "nope"')
    with pytest.raises(ToolError) as info:
        launch_slurm_sweep(path, submit=True, out=tmp_path / "run")
    assert info.value.tool == "sbatch" and info.value.returncode == 1
    assert "Invalid partition name specified" in str(info.value)


def test_dry_run_submits_nothing(slurm_cluster, tmp_path, nexa_cli):
    path = write_sweep(tmp_path, {"i": [0, 1]})
    out = nexa_cli("sweep", "--config", str(path), "--submit", "--dry-run", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "sbatch --parsable" in out.stdout and str(tmp_path / "run" / "e2e.sbatch") in out.stdout
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_dry_run_shows_the_chunks_a_submission_makes(slurm_cluster, tmp_path, nexa_cli):
    """MaxArraySize is read from Slurm for a dry run too (a read-only query)."""
    path = write_sweep(tmp_path, {"i": list(range(60))})
    out = nexa_cli("sweep", "--config", str(path), "--submit", "--dry-run", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    calls = [line for line in out.stdout.splitlines() if "sbatch --parsable" in line]
    assert len(calls) == 3 and [c.split()[-1] for c in calls] == ["0", "25", "50"], out.stdout
    assert "--array=0-9" in calls[2]


def test_project_defaults_reach_the_script(slurm_cluster, tmp_path, probe_dir):
    (tmp_path / "nexa.toml").write_text('[cluster]\npartition = "debug"\nruns_dir = "my runs"\n')
    path = write_sweep(tmp_path, {"i": [0]})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        artifacts = launch_slurm_sweep(path, submit=True)
    finally:
        os.chdir(cwd)
    assert artifacts.run_dir.parent == tmp_path / "my runs"
    assert "#SBATCH --partition=debug" in artifacts.script_paths[0].read_text()
    slurm_cluster.wait(artifacts.job_ids)
    assert read_probes(probe_dir)[0]["argv"] == ["--i=0"]


# --- #SBATCH quoting, proven by the real sbatch parsing the generated script ------------------

HOSTILE_PARTITIONS = [
    'debug" --uid=0 "--export=ALL,LD_PRELOAD=/tmp/x.so',
    "debug' --uid=0 '--export=ALL",
    "debug --uid=0",
    "debug#--uid=0",
    'debug\\" --uid=0 \\"',
]


@pytest.mark.parametrize("partition", HOSTILE_PARTITIONS)
def test_the_real_sbatch_reads_a_hostile_partition_as_one_value(slurm_cluster, tmp_path, partition):
    """The report: a partition with embedded quotes became separate --uid=0 and --export
    options (and one with # was cut to `debug`, which exists). sbatch --test-only parses
    the generated script itself and must see one partition, the whole value: unknown."""
    path = write_sweep(tmp_path, {"i": [0]}, f"partition = {json.dumps(partition)}")
    artifacts = launch_slurm_sweep(path, out=tmp_path / "run")
    out = subprocess.run(["sbatch", "--test-only", str(artifacts.script_paths[0]), "0"], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    first = partition.split(",")[0]  # a partition value is a comma-separated list to Slurm
    assert f"invalid partition specified: {first}\n" in out.stderr


def test_a_project_path_with_hash_spaces_quotes_and_percent(slurm_cluster, tmp_path, probe_dir):
    """--chdir, --output and --error of a project (and run folder) whose path holds #,
    spaces, both quotes and % patterns: what Slurm stores (a held job, scontrol), and where
    slurmd really writes the logs (a run), are exactly the paths nexa reads back."""
    from nexa_ops import track
    from nexa_ops.config import load_config
    from nexa_ops.tools import slurm

    root = tmp_path / "proj #1 \"dq\" 'sq' 100%done %A_%a %x"
    root.mkdir()
    (root / "nexa.toml").write_text('[cluster]\nruns_dir = "runs"\n')
    path = write_sweep(root, {"i": [0, 1]}, "extra = ['--comment=c #1 \"q\" \\z']")
    cfg = load_config(root / "nexa.toml")
    planned = launch_slurm_sweep(path, config=cfg)
    held = slurm.sbatch(str(planned.script_paths[0]), options=["--hold"], args=["0"])
    try:
        (record, *_) = slurm.show_job(held)
        assert record["WorkDir"] == str(root)
        assert record["Comment"] == 'c #1 "q" \\z'
        # (scontrol's StdOut replaces %A and %a with plain string search and does not
        # undo %%, so it cannot show these paths; the run below shows where logs really go.)
    finally:
        slurm.scancel([held])

    artifacts = launch_slurm_sweep(path, submit=True, config=cfg)
    assert str(root) in str(artifacts.run_dir)
    slurm_cluster.wait(artifacts.job_ids)
    (job,) = artifacts.job_ids
    status = track.status(artifacts.run_dir, config=cfg)
    for row in status.tasks:
        assert row.log == f"{artifacts.run_dir}/logs/{job}_{row.index}.out"
        assert os.path.isfile(row.log) and os.path.isfile(row.log[: -len(".out")] + ".err")
    assert [p["cwd"] for p in read_probes(probe_dir).values()] == [str(root)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["probe", root.name])  # no stray log folders


def test_sweep_env_reaches_every_task_even_with_export_none(slurm_cluster, tmp_path, probe_dir, monkeypatch):
    """The sweep file's `env`: the listed variables (names, NAME_* prefixes) with their values
    at planning reach every task through sweep.env, also when the site submits with
    --export=NONE; nothing else does, and hostile names or values never run anything."""
    monkeypatch.setenv("SBATCH_EXPORT", "NONE")
    monkeypatch.setenv("PROBE_ENV", "WANDB_PROJECT,WANDB_MODE,HF_HOME,NEXA_LEAK")
    monkeypatch.setenv("WANDB_PROJECT", "it's $(touch pwned) `touch pwned` \"q\"")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HOME", "/h f")
    monkeypatch.setenv("NEXA_LEAK", "must not arrive")
    monkeypatch.setenv("WANDB_$(touch pwned)", "x")
    path = write_sweep(tmp_path, {"i": [0, 1]}, extra='env = ["PROBE_*", "WANDB_*", "HF_HOME"]')
    artifacts = launch_slurm_sweep(path, submit=True, out=tmp_path / "run")
    slurm_cluster.wait(artifacts.job_ids)
    assert artifacts.env_names == ["HF_HOME", "PROBE_DIR", "PROBE_ENV", "WANDB_MODE", "WANDB_PROJECT"]
    assert (artifacts.run_dir / "sweep.env").stat().st_mode & 0o777 == 0o600
    probes = read_probes(probe_dir)
    assert sorted(probes) == [0, 1]
    for probe in probes.values():
        assert probe["env"]["WANDB_PROJECT"] == "it's $(touch pwned) `touch pwned` \"q\""
        assert (probe["env"]["WANDB_MODE"], probe["env"]["HF_HOME"], probe["env"]["NEXA_LEAK"]) == ("offline", "/h f", None)
    assert not list(tmp_path.rglob("pwned"))


def test_a_sweep_that_fits_is_one_sbatch_and_no_scontrol(slurm_cluster, tmp_path, probe_dir, monkeypatch):
    """MaxArraySize is asked of Slurm (scontrol show config) only when it refuses the array:
    a sweep that fits costs one sbatch; one too large is refused, then sent in chunks."""
    from nexa_ops import proc

    calls = []
    real = proc.run
    monkeypatch.setattr(proc, "run", lambda argv, *a, **k: calls.append(argv[0]) or real(argv, *a, **k))
    path = write_sweep(tmp_path, {"i": [0, 1, 2]}, "cpus_per_task = 1")
    artifacts = launch_slurm_sweep(path, submit=True, out=tmp_path / "small")
    assert [c for c in calls if c != "git"] == ["sbatch"] and len(artifacts.chunks) == 1  # git: provenance
    calls.clear()
    path = write_sweep(tmp_path, {"i": list(range(30))}, "cpus_per_task = 1")
    artifacts = launch_slurm_sweep(path, submit=True, out=tmp_path / "large")
    assert [c for c in calls if c != "git"] == ["sbatch", "scontrol", "sbatch", "sbatch"]
    assert [c.count for c in artifacts.chunks] == [25, 5] and len(artifacts.job_ids) == 2
    manifest = json.loads((artifacts.run_dir / "manifest.json").read_text())
    assert [c["count"] for c in manifest["chunks"]] == [25, 5]  # the refused array left no record
    slurm_cluster.wait(artifacts.job_ids)
    assert sorted(read_probes(probe_dir)) == list(range(30))
