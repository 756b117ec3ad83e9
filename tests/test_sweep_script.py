"""Resources -> #SBATCH directives and the rendered array script."""

import shlex
import subprocess

from nexa_ops.config import ClusterConfig, Resources
from nexa_ops.sweep.script import render_array_script
from nexa_ops.tools.slurm import array_spec, directives
from tests.conftest import require_tool


def test_directives_from_resources():
    res = Resources(
        nodes=2,
        gpus_per_node=8,
        gpu_type="H100",
        cpus_per_task=16,
        mem="200G",
        time="04:00:00",
        partition="gpu",
        account="ml",
        extra=["--qos=high"],
    )
    lines = directives(res, job_name="lr-grid", array="0-9%4", output="/r/logs/%A_%a.out")
    assert lines == [
        "#SBATCH --job-name=lr-grid",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=ml",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gres=gpu:H100:8",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --mem=200G",
        "#SBATCH --time=04:00:00",
        "#SBATCH --array=0-9%4",
        "#SBATCH --output=/r/logs/%A_%a.out",
        "#SBATCH --qos=high",
    ]


def test_untyped_gpus_and_cluster_defaults():
    lines = directives(Resources(gpus_per_node=2), job_name="x", cluster=ClusterConfig(partition="p", account="a"))
    assert "#SBATCH --gpus-per-node=2" in lines
    assert "#SBATCH --partition=p" in lines and "#SBATCH --account=a" in lines
    assert not any("gres" in line for line in lines)


def test_array_spec_with_throttle():
    assert array_spec(10, 4) == "0-9%4"
    assert array_spec(1, None) == "0"
    assert array_spec(100000, None) == "0-99999"


def render(tmp_path, **kw):
    args = dict(
        name="t",
        res=Resources(max_parallel=3),
        cluster=ClusterConfig(),
        count=5,
        spec_path=str(tmp_path / "my run" / "spec.json"),
        run_dir=str(tmp_path / "my run"),
        log_dir=str(tmp_path / "my run" / "logs"),
        workdir=str(tmp_path),
        worker_path="/opt/nexa.pyz/site-packages",
    )
    args.update(kw)
    return render_array_script(**args)


def test_script_quotes_paths_and_throttles(tmp_path):
    text = render(tmp_path)
    assert "#SBATCH --array=0-4%3" in text
    assert f'#SBATCH --output="{tmp_path}/my run/logs/%A_%a.out"' in text
    assert shlex.quote(str(tmp_path / "my run" / "spec.json")) in text
    assert "python3 -S -c" in text


def test_script_is_valid_bash(tmp_path):
    require_tool("bash")
    path = tmp_path / "s.sbatch"
    path.write_text(render(tmp_path))
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
