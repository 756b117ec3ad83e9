"""Pure checks of `nexa launch` option merging (launcher.spec.resolve): every bad value is named
where it came from: an option by its flag, the launch file or nexa.toml by file and key."""

import pytest

from nexa_ops.config import ClusterConfig, Resources
from nexa_ops.errors import ConfigError
from nexa_ops.launcher import spec as launch_spec

CMD = ["python", "train.py"]


def _error(file=None, **kw):
    with pytest.raises(ConfigError) as info:
        launch_spec.resolve(file, "/p/launch.toml" if file else "options", **{"command": CMD, **kw})
    return str(info.value)


@pytest.mark.parametrize("name", ["ab\n", "a\nb", "a\tb", "a\x00b", "a b", "a/b", "", "\n"])
def test_names_must_be_plain_identifiers_even_before_a_final_newline(name):
    assert _error(name=name) == f"--name: expected letters, digits, '.', '_' or '-', got {name!r}"
    assert _error(launch_spec.LaunchFile(name=name)).startswith("/p/launch.toml: name: expected letters")


def test_good_names_and_the_default_from_the_script():
    assert launch_spec.resolve(None, "options", command=CMD, name="run-1.v2_x").name == "run-1.v2_x"
    assert launch_spec.resolve(None, "options", command=["python", "my train!.py"]).name == "my_train_"


@pytest.mark.parametrize("port", [0, -1, 65536, 99999, True])
def test_rdzv_port_range_from_each_source(port):
    expected = f"expected a TCP port 1..65535, got {port!r}"
    assert _error(rdzv_port=port) == f"--rdzv-port: {expected}"
    assert _error(launch_spec.LaunchFile(rdzv_port=port)) == f"/p/launch.toml: rdzv_port: {expected}"
    assert _error(project_rdzv_port=port, project_where="/p/nexa.toml") == f"/p/nexa.toml: launch.rdzv_port: {expected}"


def test_rdzv_port_precedence_option_then_launch_file_then_project():
    def port(file_port=None, **kw):
        return launch_spec.resolve(launch_spec.LaunchFile(command=CMD, rdzv_port=file_port), "f", **kw).rdzv_port

    assert port() is None
    assert port(project_rdzv_port=1) == 1
    assert port(29501, project_rdzv_port=1) == 29501
    assert port(29501, rdzv_port=65535, project_rdzv_port=1) == 65535


@pytest.mark.parametrize("pattern", ["A B", "A\n", "1A", "", "A-B", "A=1"])
def test_env_patterns_are_named_by_their_source(pattern):
    expected = f"expected an environment variable name or a glob like 'WANDB_*', got {pattern!r}"
    assert _error(project_env=["OK", pattern], project_where="/p/nexa.toml") == f"/p/nexa.toml: launch.env[1]: {expected}"
    assert _error(launch_spec.LaunchFile(env=["OK", pattern]), project_env=["FINE"]) == f"/p/launch.toml: env[1]: {expected}"
    assert _error(env=[pattern], project_env=["FINE"]) == f"--env: {expected}"


def test_env_globs_are_accepted():
    spec = launch_spec.resolve(None, "options", command=CMD, env=["WANDB_*", "HF_?OME", "NCCL_[!AB]*"], project_env=["_X"])
    assert spec.env == ["_X", "WANDB_*", "HF_?OME", "NCCL_[!AB]*"]


def test_without_a_launch_file_nothing_is_called_options():
    assert _error(nproc_per_node=0) == "--nproc-per-node: expected an integer >= 1, got 0"
    assert _error(join_timeout=0) == "--join-timeout: expected an integer >= 1, got 0"
    assert _error(mode="mpi") == "--mode: expected one of local, ddp, slurm, got 'mpi'"
    assert _error(nodes=2) == "--nodes: local mode runs on this machine; use --mode slurm for 2 nodes"
    assert _error(mode="slurm", resources=Resources(ntasks_per_node=2)).startswith("resources: launch runs one torchrun")
    assert _error(command=[]).startswith("no command: give it after `--`")
    assert _error(launch_spec.LaunchFile(), command=[]).startswith("/p/launch.toml: command: no command")


HOSTILE_NAMES = ["WANDB_$(touch pwned)", "WANDB_A\n#SBATCH --uid 0\nWANDB_B", "WANDB_ X", "WANDB_\u00e9", "1WANDB", "WANDB_A\n"]


def test_names_a_script_cannot_hold_are_never_selected():
    environ = {name: "v" for name in HOSTILE_NAMES}
    environ.update(PATH="/p", WANDB_OK="it's")
    assert launch_spec.select_env(["WANDB_*", "*"], environ) == {"PATH": "/p", "WANDB_OK": "it's"}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_every_writer_of_names_refuses_them(name):
    with pytest.raises(ConfigError, match="environment variable name"):
        launch_spec.env_file({"WANDB_OK": "1", name: "x"})
    launch = launch_spec.resolve(None, "l.toml", command=["python", "t.py"], mode="slurm")
    with pytest.raises(ConfigError, match="environment variable name"):
        launch_spec.render_ddp_script(launch, cluster=ClusterConfig(), run_dir="/r", log_path="/r/l-%j.log", workdir="/w", env_names=[name])
