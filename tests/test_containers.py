"""run-container and build-image: the argv planner without Docker, then a real engine.

The real-engine tests go through ``run_container``/``build_image`` and the ``nexa`` CLI against
the private dockerd of ``tests/services/docker.py``; the image is ``local/nexa-test:1`` (busybox
with the real ``bin/nexa-bootstrap.sh`` as entrypoint), selected through a ``nexa.toml`` tag
override, exactly as a user would point a service at their own tag.
"""

import os
import stat
from pathlib import Path

import pytest

from nexa_ops import __version__
from nexa_ops.config import load_config
from nexa_ops.containers import (
    ContainerError,
    Mount,
    RunSpec,
    build_image,
    canonical_name,
    check_env_names,
    check_gpus,
    gpus_args,
    parse_mount,
    plan_run,
    resolve_service,
    run_container,
)
from nexa_ops.errors import ConfigError, ToolError, ToolMissing
from nexa_ops.proc import quote
from tests.conftest import require_tool

SECRET = "s3cr3t-value-8f2a"  # a token value that must never appear in an argv or a log


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nexa.toml"
    path.write_text(text)
    return path


# --- pure planning ------------------------------------------------------------------------


def test_service_names_and_aliases():
    assert canonical_name("nexa_light") == canonical_name("train-light") == "nexa_light"
    assert canonical_name("train-heavy") == "nexa_heavy"
    assert canonical_name("infer") == "nexa_infer"
    with pytest.raises(ConfigError, match=r"unknown service 'train-lite' \(did you mean 'train-light'\?\)"):
        canonical_name("train-lite")


def test_default_tags_and_overrides(tmp_path):
    text = '[containers.services.train-heavy]\ntag = "reg.example/h:2"\ndockerfile = "docker/h.Dockerfile"\n'
    cfg = load_config(write_config(tmp_path, text))
    assert resolve_service("nexa_light", cfg).tag == "ghcr.io/nexa/nexa_light:latest"
    assert resolve_service("infer", cfg).dockerfile == "images/infer.Dockerfile"
    heavy = resolve_service("nexa_heavy", cfg)
    assert (heavy.tag, heavy.dockerfile, heavy.shipped) == ("reg.example/h:2", str(tmp_path / "docker" / "h.Dockerfile"), False)


def test_override_errors_name_file_and_key(tmp_path):
    cfg = load_config(write_config(tmp_path, '[containers.services.nexa_lite]\ntag = "x:1"\n'))
    with pytest.raises(ConfigError) as exc:
        resolve_service("infer", cfg)
    assert str(exc.value).startswith(f"{tmp_path / 'nexa.toml'}: containers.services.nexa_lite: unknown service")
    cfg = load_config(write_config(tmp_path, '[containers.services.infer]\ntag = "a:1"\n[containers.services.nexa_infer]\ntag = "b:1"\n'))
    with pytest.raises(ConfigError, match="configured twice"):
        resolve_service("infer", cfg)
    with pytest.raises(ConfigError, match=r"containers\.services\.infer\.tags: unknown key \(did you mean 'tag'\?\)"):
        load_config(write_config(tmp_path, '[containers.services.infer]\ntags = "a:1"\n'))


GOOD_REFS = [
    "ubuntu",
    "local/nexa-test:1",
    "127.0.0.1:5000/team/img:v1.2_3",
    "localhost/x",
    "ghcr.io/nexa/nexa_light:latest",
    "Registry.Example.com/a__b/c-d--e.f:TAG_1",
    "[::1]:5000/x:1",
    "img@sha256:" + "a" * 64,
    "img:tag@sha256:" + "0" * 64,
]
BAD_REFS = [
    "--privileged",
    "-v/:/host",
    "--volume=/:/host",
    "-it",
    "name:--privileged",
    "name:-x",
    "UPPER",
    "team/Name:1",
    "name:tag with space",
    "name:",
    "name:" + "a" * 129,
    "a//b",
    "/abs",
    "x/",
    "_x",
    "a:b:c",
    "name@sha256:abc",
    "name@",
    "a" * 256,
    "",
    " ",
]


@pytest.mark.parametrize("ref", GOOD_REFS)
def test_good_image_references(tmp_path, ref):
    cfg = load_config(write_config(tmp_path, f'[containers.services.infer]\ntag = "{ref}"\n'))
    assert resolve_service("nexa_infer", cfg).tag == ref


@pytest.mark.parametrize("ref", BAD_REFS)
def test_bad_image_references_are_one_line_config_errors(tmp_path, ref):
    """Issue 20, 11: `tag = "--privileged"` became a `docker run` flag."""
    path = write_config(tmp_path, f'[containers.services.train-light]\ntag = "{ref}"\n')
    with pytest.raises(ConfigError) as exc:
        resolve_service("nexa_light", load_config(path))  # asked by name, configured by alias: the key is the file's
    assert str(exc.value) == (
        f"{path}: containers.services.train-light.tag: expected an image reference like "
        f"'registry.example:5000/team/name:tag' or 'name@sha256:<hex>', got {ref!r}"
    )


def test_plan_run_argv_is_exact():
    spec = RunSpec(
        image="local/img:1",
        service="nexa_light",
        command=["python", "-c", "print('a b')", "x y"],
        uid=1234,
        gid=555,
        groups=[555, 27, 44],
        gpus="0,1",
        env_names=["HF_TOKEN"],
        pull="never",
        mounts=[Mount("/proj", "/workspace"), Mount("/data", "/data", readonly=True)],
        shm_size="16g",
        ulimits=["memlock=-1"],
        network="host",
        tty=True,
        name="nexa-x",
    )
    assert plan_run(spec) == [
        "docker", "run", "--rm", "-i", "-t", "--name", "nexa-x", "--label", "ai.nexa.service=nexa_light",
        "--pull", "never", "--user", "1234:555", "--group-add", "27", "--group-add", "44",
        "--init", "--security-opt", "no-new-privileges", "--shm-size", "16g", "--ulimit", "memlock=-1",
        "--network", "host", "--gpus", '"device=0,1"',
        "--mount", "type=bind,source=/proj,target=/workspace", "--mount", "type=bind,source=/data,target=/data,readonly",
        "-w", "/workspace", "-e", "NEXA_WORKDIR=/workspace", "-e", "HF_HOME=/cache/huggingface", "-e", "HF_TOKEN",
        "--", "local/img:1", "python", "-c", "print('a b')", "x y",
    ]  # fmt: skip


def test_gpus_values():
    assert [gpus_args(check_gpus(v)) for v in ("all", "none", "0", "2", " 1,3 ")] == [
        ["--gpus", "all"], [], [], ["--gpus", "2"], ["--gpus", '"device=1,3"'],
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="--gpus: expected all, none"):
        check_gpus("many")


def test_env_takes_names_never_values():
    assert check_env_names(["HF_TOKEN", "WANDB_API_KEY", "HF_TOKEN"]) == ["HF_TOKEN", "WANDB_API_KEY"]
    with pytest.raises(ConfigError) as exc:
        check_env_names([f"HF_TOKEN={SECRET}"])
    assert "NAME, not NAME=value" in str(exc.value) and SECRET not in str(exc.value)
    with pytest.raises(ConfigError, match="expected a variable name"):
        check_env_names(["1BAD"])


def test_parse_mount(tmp_path):
    assert parse_mount("data:/data:ro", tmp_path, "nexa.toml", "k") == Mount(str(tmp_path / "data"), "/data", True)
    assert parse_mount("/scratch:/scratch", tmp_path, "nexa.toml", "k") == Mount("/scratch", "/scratch", False)
    for bad in ("/a", "/a:rel", "/a:/b:rx", "/a,b:/b"):
        with pytest.raises(ConfigError, match="nexa.toml: k: "):
            parse_mount(bad, tmp_path, "nexa.toml", "k")


def test_dry_run_prints_command_without_secret_values(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "no-docker-here"))  # dry run needs no docker
    monkeypatch.setenv("MY_TOKEN", SECRET)
    monkeypatch.setenv("WANDB_API_KEY", SECRET + "-wandb")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "data").mkdir()
    cfg = load_config(write_config(tmp_path, '[containers]\nmounts = ["data:/data:ro"]\nnetwork = "host"\n'))
    result = run_container("train-light", ["python", "train.py", "--lr", "1e-4"], gpus="2", env=["MY_TOKEN"], dry_run=True,
                           config=cfg, uid=1000, gid=1000)
    out = capsys.readouterr().out
    assert result.dry_run and result.exit_code == 0
    assert out.strip() == quote(result.argv)
    assert SECRET not in out
    for piece in ("-e MY_TOKEN", "-e WANDB_API_KEY", "--user 1000:1000", "--gpus 2", "--network host",
                  f"type=bind,source={tmp_path},target=/workspace", f"type=bind,source={tmp_path / 'hf'},target=/cache/huggingface",
                  f"type=bind,source={tmp_path / 'data'},target=/data,readonly",
                  "ghcr.io/nexa/nexa_light:latest python train.py --lr 1e-4"):
        assert piece in out
    assert not (tmp_path / "hf").exists()  # a dry run creates nothing


def test_run_refuses_bad_options(tmp_path, monkeypatch):
    cfg = load_config(write_config(tmp_path, ""))
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="--env NOT_SET_ANYWHERE: not set in this environment"):
        run_container("infer", ["true"], env=["NOT_SET_ANYWHERE"], dry_run=True, config=cfg)
    with pytest.raises(ConfigError, match="--pull: expected one of missing, never, always"):
        run_container("infer", ["true"], pull="sometimes", dry_run=True, config=cfg)
    cfg = load_config(write_config(tmp_path, '[containers]\nenv = ["OK", "no-dash"]\n'))
    with pytest.raises(ConfigError, match=r"nexa.toml: containers.env\[1\]: expected a variable name"):
        run_container("infer", ["true"], dry_run=True, config=cfg)


def test_dry_run_checks_mount_sources_like_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = load_config(write_config(tmp_path, ""))
    with pytest.raises(ConfigError, match=f"^mount source {tmp_path / 'nope'} does not exist \\(for /workspace\\)$"):
        run_container("infer", ["true"], workspace=str(tmp_path / "nope"), dry_run=True, config=cfg)
    cfg = load_config(write_config(tmp_path, '[containers]\nmounts = ["nowhere:/data"]\n'))
    with pytest.raises(ConfigError, match=f"^mount source {tmp_path / 'nowhere'} does not exist \\(for /data\\)$"):
        run_container("infer", ["true"], dry_run=True, config=cfg)
    assert capsys.readouterr().out == "" and not (tmp_path / "hf").exists()


def test_commas_in_mount_paths_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "a,b").mkdir()
    cfg = load_config(write_config(tmp_path, ""))
    with pytest.raises(ConfigError, match=f"^--workspace: paths with ',' cannot be bind-mounted by nexa, got '{tmp_path}/a,b'$"):
        run_container("infer", ["true"], workspace=str(tmp_path / "x" / ".." / "a,b"), dry_run=True, config=cfg)
    cfg = load_config(write_config(tmp_path, '[containers]\nworkspace = "a,b"\n'))
    with pytest.raises(ConfigError, match=r"nexa.toml: containers.workspace: paths with ',' cannot be bind-mounted"):
        run_container("infer", ["true"], dry_run=True, config=cfg)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "a,b"))
    with pytest.raises(ConfigError, match=r"^the HuggingFace cache \(\$HF_HOME\): paths with ','"):
        run_container("infer", ["true"], dry_run=True, config=load_config(write_config(tmp_path, "")))


def test_build_dry_run_checks_the_dockerfile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "no-docker-here"))
    cfg = load_config(write_config(tmp_path, '[containers.services.infer]\ndockerfile = "nope.Dockerfile"\n'))
    missing = f"containers.services.infer.dockerfile: Dockerfile {tmp_path / 'nope.Dockerfile'} does not exist"
    with pytest.raises(ConfigError, match=missing):
        build_image("infer", dry_run=True, config=cfg)
    assert capsys.readouterr().out == ""
    (tmp_path / "nope.Dockerfile").write_text("FROM scratch\n")
    assert build_image("infer", dry_run=True, config=cfg).dockerfile == str(tmp_path / "nope.Dockerfile")


def test_cli_dry_runs_fail_like_the_real_run(tmp_path, nexa_cli):
    env = {"HF_HOME": str(tmp_path / "hf")}
    res = nexa_cli("run-container", "infer", "--dry-run", "--workspace", "nope", "--", "true", env=env)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == f"nexa: error: mount source {tmp_path / 'nope'} does not exist (for /workspace)\n"
    (tmp_path / "a,b").mkdir()
    res = nexa_cli("run-container", "infer", "--dry-run", "--workspace", "x/../a,b", "--", "true", env=env)
    assert res.returncode == 2
    assert res.stderr == f"nexa: error: --workspace: paths with ',' cannot be bind-mounted by nexa, got '{tmp_path}/a,b'\n"
    write_config(tmp_path, '[containers.services.infer]\ndockerfile = "nope.Dockerfile"\n')
    res = nexa_cli("build-image", "infer", "--dry-run")
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == (f"nexa: error: {tmp_path / 'nexa.toml'}: containers.services.infer.dockerfile: "
                          f"Dockerfile {tmp_path / 'nope.Dockerfile'} does not exist\n")


def test_build_dry_run_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = build_image("infer", push=True, dry_run=True, config=load_config(write_config(tmp_path, "")), build_args=["NEXA_UID=1001"])
    ctx = tmp_path / "cache" / "nexa" / "build" / "nexa_infer"
    assert capsys.readouterr().out.splitlines() == [
        f"docker build -f {ctx}/Dockerfile -t ghcr.io/nexa/nexa_infer:latest --build-arg NEXA_VERSION={__version__} "
        f"--build-arg NEXA_UID=1001 --label ai.nexa.version={__version__} --label ai.nexa.service=nexa_infer -- {ctx}",
        "docker push -- ghcr.io/nexa/nexa_infer:latest",
    ]
    assert result.pushed and not ctx.exists()


def test_cli_help_and_unknown_service(nexa_cli):
    shown = nexa_cli("run-container", "--help")
    assert shown.returncode == 0
    for flag in ("--gpus", "--env", "--pull", "--user", "--workspace", "--project", "--dry-run"):
        assert flag in shown.stdout
    assert "--push" in nexa_cli("build-image", "--help").stdout
    bad = nexa_cli("run-container", "trian-light", "--", "true")
    assert (bad.returncode, bad.stderr.strip()) == (2, "nexa: error: unknown service 'trian-light' (did you mean 'train-light'?); "
                                                     "expected one of nexa_heavy, nexa_infer, nexa_light, infer, train-heavy, train-light")


def test_cli_env_value_is_refused(nexa_cli):
    bad = nexa_cli("run-container", "infer", "--env", f"HF_TOKEN={SECRET}", "--dry-run", "--", "true")
    assert bad.returncode == 2 and "takes a variable NAME" in bad.stderr and SECRET not in bad.stderr + bad.stdout


def test_docker_cli_missing(nexa_cli, tmp_path):
    res = nexa_cli("run-container", "infer", "--", "true", env={"PATH": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 127
    assert res.stderr.strip() == (
        "nexa: error: docker: not found on PATH (install the Docker CLI (Debian: apt-get install docker.io) "
        "or set [containers] docker in nexa.toml)"
    )


def test_daemon_not_running(nexa_cli, tmp_path):
    require_tool("docker")
    sock = f"unix://{tmp_path}/no-daemon.sock"
    res = nexa_cli("run-container", "infer", "--", "true", env={"DOCKER_HOST": sock, "HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 1
    first = res.stderr.strip().splitlines()[0]
    assert first == (f"nexa: error: docker exited with 1: the Docker daemon is not running or not reachable at {sock} "
                     "(start dockerd, or set DOCKER_HOST)")


# --- a real engine -------------------------------------------------------------------------


@pytest.fixture
def mapped_ids():
    """The uid:gid to run as: ours, or a non-zero one when tests run as root (to prove mapping)."""
    if os.getuid() == 0:
        return 4321, 4322
    return os.getuid(), os.getgid()


@pytest.fixture
def project(tmp_path, docker_engine, monkeypatch, mapped_ids):
    """A project folder owned by the mapped user, nexa.toml pointing train-light at the test
    image, the private engine in DOCKER_HOST and a host HF cache owned by the user."""
    uid, gid = mapped_ids
    ws = tmp_path / "proj"
    hf = tmp_path / "hf"
    for folder in (ws, hf):
        folder.mkdir()
        os.chown(folder, uid, gid)
    (ws / "nexa.toml").write_text(docker_engine.toml(**{"train-light": docker_engine.test_image, "infer": "local/absent:1"}))
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("NEXA_TEST_SECRET", SECRET)
    monkeypatch.chdir(ws)
    return ws


def test_run_container_real(project, mapped_ids):
    uid, gid = mapped_ids
    script = (
        'pwd; echo "home=$HOME"; touch "$HOME/probe" && echo home-writable; '
        'echo "boot=$NEXA_BOOTSTRAPPED"; echo "secret=$NEXA_TEST_SECRET"; '
        'echo made > from-container.txt; echo cached > "$HF_HOME/from-container"; id -G'
    )
    result = run_container("train-light", ["sh", "-c", script], env=["NEXA_TEST_SECRET"], config=load_config(),
                           uid=uid, gid=gid, groups=[gid, 4400], capture=True)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "/workspace"  # the working directory is the mounted workspace
    assert lines[1].startswith("home=") and lines[1] != "home=/" and lines[2] == "home-writable"
    assert lines[3] == "boot=1" and "nexa-bootstrap: user=" in result.stderr and f"uid={uid} gid={gid}" in result.stderr
    assert lines[4] == f"secret={SECRET}"  # arrived by name...
    assert SECRET not in " ".join(result.argv) and "NEXA_TEST_SECRET" in result.argv  # ...and not on the command line
    assert set(lines[5].split()) == {str(gid), "4400"}  # supplementary groups kept
    made = project / "from-container.txt"
    assert made.read_text() == "made\n"
    st = made.stat()
    assert (st.st_uid, st.st_gid) == (uid, gid)  # owned by the host user, not root
    cached = Path(os.environ["HF_HOME"]) / "from-container"
    assert cached.read_text() == "cached\n" and cached.stat().st_uid == uid  # the host HF cache is mounted


def test_exit_code_and_secret_through_cli(project, nexa_cli, mapped_ids):
    uid, gid = mapped_ids
    env = {"DOCKER_HOST": os.environ["DOCKER_HOST"], "HF_HOME": os.environ["HF_HOME"], "NEXA_TEST_SECRET": SECRET, "NEXA_VERBOSE": "1"}
    res = nexa_cli("run-container", "train-light", "--env", "NEXA_TEST_SECRET", "--gpus", "none", "--pull", "never",
                   "--user", f"{uid}:{gid}", "--", "sh", "-c", 'echo "got $NEXA_TEST_SECRET"; exit 7', cwd=project, env=env)
    assert res.returncode == 7, res.stderr
    assert res.stdout == f"got {SECRET}\n"
    logged = [line for line in res.stderr.splitlines() if line.startswith("+ docker run")]
    assert len(logged) == 1 and "-e NEXA_TEST_SECRET" in logged[0] and SECRET not in res.stderr


def test_own_uid_default(project, mapped_ids):
    """Without uid/gid the container runs as this process's uid:gid."""
    result = run_container("nexa_light", ["id", "-u"], config=load_config(), capture=True)
    assert result.exit_code == 0 and result.stdout.strip() == str(os.getuid())
    assert f"--user {os.getuid()}:{os.getgid()}" in " ".join(result.argv)


def test_missing_image_with_pull_never(project, nexa_cli):
    with pytest.raises(ContainerError) as exc:
        run_container("infer", ["true"], pull="never", config=load_config(), capture=True)
    assert exc.value.exit_code == 125
    res = nexa_cli("run-container", "infer", "--pull", "never", "--", "true", cwd=project,
                   env={"DOCKER_HOST": os.environ["DOCKER_HOST"], "HF_HOME": os.environ["HF_HOME"]})
    assert res.returncode == 125
    assert res.stderr.strip() == ("nexa: error: image local/absent:1 is not on this machine and --pull never forbids pulling it; "
                                  "build it with `nexa build-image nexa_infer` or use --pull missing")


def test_missing_mount_source_is_clear(project):
    toml = (project / "nexa.toml").read_text()
    (project / "nexa.toml").write_text(toml.replace("[containers]\n", '[containers]\nmounts = ["nowhere:/data"]\n'))
    with pytest.raises(ConfigError, match=f"mount source {project / 'nowhere'} does not exist"):
        run_container("train-light", ["true"], config=load_config(), capture=True)


def test_build_image_real(project, docker_engine, tmp_path, mapped_ids):
    """build-image with an overridden Dockerfile and tag on the real engine: the tag and the
    version label land on the image, which then runs through run-container."""
    ctx = tmp_path / "ctx"
    (ctx / "bin").mkdir(parents=True)
    bootstrap = Path(__file__).resolve().parent.parent / "bin" / "nexa-bootstrap.sh"
    (ctx / "bin" / "nexa-bootstrap.sh").write_text(bootstrap.read_text())
    (ctx / "Dockerfile").write_text(
        f"FROM {docker_engine.base_image}\nARG NEXA_VERSION=dev\nLABEL ai.nexa.version=$NEXA_VERSION\n"
        "COPY bin/nexa-bootstrap.sh /usr/local/bin/nexa-bootstrap.sh\nRUN chmod 0755 /usr/local/bin/nexa-bootstrap.sh\n"
        'USER nexa\nENTRYPOINT ["/usr/local/bin/nexa-bootstrap.sh"]\n'
    )
    (project / "nexa.toml").write_text(
        docker_engine.toml()
        + f'[containers.services.train-heavy]\ntag = "local/nexa-built:1"\ndockerfile = "{ctx / "Dockerfile"}"\ncontext = "{ctx}"\n'
    )
    docker_engine.docker("image", "rm", "-f", "local/nexa-built:1", check=False)
    result = build_image("train-heavy", config=load_config(), capture=True)
    assert result.tag == "local/nexa-built:1" and not result.pushed
    labels = docker_engine.docker("image", "inspect", "--format", "{{json .Config.Labels}}", "local/nexa-built:1").stdout
    assert f'"ai.nexa.version":"{__version__}"' in labels and '"ai.nexa.service":"nexa_heavy"' in labels
    uid, gid = mapped_ids
    ran = run_container("nexa_heavy", ["sh", "-c", "echo $NEXA_BOOTSTRAPPED"], pull="never", config=load_config(),
                        uid=uid, gid=gid, capture=True)
    assert (ran.exit_code, ran.stdout) == (0, "1\n")


def test_build_image_failure_is_a_tool_error(project, tmp_path):
    (tmp_path / "bad.Dockerfile").write_text("FROM local/nexa-base:1\nRUN exit 3\n")
    (project / "nexa.toml").write_text(f'[containers.services.infer]\ntag = "local/bad:1"\ndockerfile = "{tmp_path / "bad.Dockerfile"}"\n')
    with pytest.raises(ToolError) as exc:
        build_image("infer", config=load_config(), capture=True)
    assert exc.value.tool == "docker" and exc.value.exit_code != 0


def test_no_image_reference_ever_reaches_docker_as_an_option(project, docker_engine, nexa_cli):
    """A hostile tag is refused before docker runs (dry runs too), and even a reference that got
    past the check could not become an option: the real engine reads what follows `--` as the
    image ('invalid reference format'), never as --privileged."""
    env = {"DOCKER_HOST": docker_engine.host, "HF_HOME": os.environ["HF_HOME"], "NEXA_VERBOSE": "1"}
    good = (project / "nexa.toml").read_text()
    for ref in ("--privileged", "-v/:/host", "name:--privileged"):
        (project / "nexa.toml").write_text(good.replace('"local/absent:1"', f'"{ref}"'))
        for extra in (["--dry-run"], []):
            res = nexa_cli("run-container", "infer", *extra, "--", "id", cwd=project, env=env)
            assert (res.returncode, res.stdout) == (2, ""), res.stderr
            assert res.stderr == (
                f"nexa: error: {project / 'nexa.toml'}: containers.services.infer.tag: expected an image reference like "
                f"'registry.example:5000/team/name:tag' or 'name@sha256:<hex>', got {ref!r}\n"
            )  # one line, and no "+ docker ..." line: docker never ran
        res = nexa_cli("build-image", "infer", "--dry-run", cwd=project, env=env)
        assert res.returncode == 2 and "containers.services.infer.tag" in res.stderr and res.stdout == ""

    from nexa_ops.tools import docker as tool

    spec = RunSpec(image="--privileged", service="nexa_infer", command=["id"], shm_size=None, name="nexa-bypass-test")
    bypass = tool.run(plan_run(spec), capture=True)
    assert bypass.returncode == 125 and "invalid reference format" in bypass.stderr
    assert docker_engine.docker("ps", "-aq", "--filter", "name=nexa-bypass-test").stdout.strip() == ""
    assert tool.image_id("--privileged") is None  # `image inspect -- NAME`: "no such image", not an unknown flag


def test_run_and_build_with_options_ended_on_the_real_engine(project, docker_engine, tmp_path, mapped_ids):
    uid, gid = mapped_ids
    ran = run_container("train-light", ["sh", "-c", "echo ok"], pull="never", config=load_config(), uid=uid, gid=gid, capture=True)
    assert (ran.exit_code, ran.stdout) == (0, "ok\n")
    assert ran.argv[ran.argv.index("--") + 1] == docker_engine.test_image
    ctx = tmp_path / "-ctx"  # a context folder whose name starts with '-': still a path after `--`
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {docker_engine.base_image}\n")
    (project / "nexa.toml").write_text(
        docker_engine.toml() + f'[containers.services.infer]\ntag = "local/ended:1"\ndockerfile = "{ctx / "Dockerfile"}"\n'
        f'context = "{ctx}"\n'
    )
    built = build_image("infer", config=load_config(), capture=True)
    assert built.argv[-2:] == ["--", str(ctx)]
    assert docker_engine.docker("image", "inspect", "--format", "{{.Id}}", "local/ended:1").stdout.startswith("sha256:")


def test_bootstrap_is_executable_in_image(docker_engine):
    out = docker_engine.docker("run", "--rm", "--entrypoint", "stat", docker_engine.test_image,
                               "-c", "%a %U", "/usr/local/bin/nexa-bootstrap.sh")
    assert out.stdout.strip() == "755 root"
    assert stat.S_IMODE((Path(__file__).resolve().parent.parent / "bin" / "nexa-bootstrap.sh").stat().st_mode) & 0o111


def test_tool_missing_in_library(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ToolMissing):
        run_container("infer", ["true"], config=load_config(write_config(tmp_path, "")), capture=True)
