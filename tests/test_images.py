"""The three real Dockerfiles and bin/nexa-bootstrap.sh.

Their CUDA / PyTorch bases cannot be pulled here, so the Dockerfiles are checked statically
(instructions, stages, pins, user, entrypoint, labels) and then parsed by the real Docker
engine: a copy whose FROM lines point at a dead loopback registry must fail at the pull, never
at the parser. The bootstrap script runs for real, under sh and shellcheck.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import List, Tuple

import pytest

from nexa_ops.containers import SERVICES
from tests.conftest import ROOT, require_root, require_tool

BOOTSTRAP = ROOT / "bin" / "nexa-bootstrap.sh"
ENTRYPOINT = "/usr/local/bin/nexa-bootstrap.sh"
KNOWN = {"FROM", "ARG", "ENV", "LABEL", "RUN", "COPY", "ADD", "USER", "WORKDIR", "ENTRYPOINT", "CMD", "EXPOSE",
         "VOLUME", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD"}
PIN_RE = re.compile(r"^[A-Za-z0-9_.\-]+(\[[A-Za-z0-9_,\-]+\])?==[0-9][A-Za-z0-9_.+!\-]*$")
FILES = [s.dockerfile for s in SERVICES.values()]


def instructions(path: Path) -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comments dropped, as Docker does."""
    out: List[Tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def stages(instrs: List[Tuple[str, str]]) -> List[List[Tuple[str, str]]]:
    result: List[List[Tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


@pytest.mark.parametrize("relpath", FILES)
def test_dockerfile_static(relpath):
    path = ROOT / relpath
    instrs = instructions(path)
    unknown = [w for w, _ in instrs if w not in KNOWN]
    assert not unknown, f"{relpath}: unknown instructions {unknown}"
    assert instrs[0][0] in ("FROM", "ARG")
    names: List[str] = []
    for stage in stages(instrs):
        image, *rest = stage[0][1].split()
        if rest:
            assert len(rest) == 2 and rest[0].upper() == "AS", f"{relpath}: bad FROM {stage[0][1]!r}"
            assert rest[1] not in names, f"{relpath}: stage {rest[1]} defined twice"
        # Pinned base: an exact version tag (with digits, never latest) or a digest.
        assert "@sha256:" in image or re.search(r":[^/]*\d[^/]*$", image), f"{relpath}: base {image} is not pinned"
        assert not image.endswith(":latest")
        for word, args in stage:
            if word == "COPY" and "--from=" in args:
                source = re.search(r"--from=(\S+)", args).group(1)
                assert source in names, f"{relpath}: COPY --from={source} names no earlier stage"
        if rest:
            names.append(rest[1])
    final = stages(instrs)[-1]
    words = [w for w, _ in final]
    # A non-root user at the end.
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{relpath}: last USER must not be root"
    # The bootstrap entrypoint, copied from the repo file that exists and is executable.
    assert json.loads(dict(final)["ENTRYPOINT"]) == [ENTRYPOINT]
    assert ("COPY", f"bin/nexa-bootstrap.sh {ENTRYPOINT}") in final
    assert words.index("ENTRYPOINT") > words.index("COPY")
    assert BOOTSTRAP.is_file() and os.access(BOOTSTRAP, os.X_OK)
    # The version label comes from the NEXA_VERSION build arg, declared in the final stage.
    assert any(w == "ARG" and a.startswith("NEXA_VERSION") for w, a in final)
    labels = " ".join(a for w, a in final if w == "LABEL")
    service = next(s.name for s in SERVICES.values() if s.dockerfile == relpath)
    wanted = ('ai.nexa.version="${NEXA_VERSION}"', 'org.opencontainers.image.version="${NEXA_VERSION}"', f'ai.nexa.service="{service}"')
    for label in wanted:
        assert label in labels, f"{relpath}: missing LABEL {label}"


def pip_requirements(instrs: List[Tuple[str, str]]) -> List[str]:
    reqs = []
    for word, args in instrs:
        if word != "RUN":
            continue
        for part in re.split(r"&&|;", args):
            tokens = part.split()
            if "pip" in [os.path.basename(t) for t in tokens] and "install" in tokens:
                after = tokens[tokens.index("install") + 1:]
                reqs += [t for t in after if not t.startswith("-")]
    return reqs


@pytest.mark.parametrize("relpath", FILES)
def test_versions_pinned(relpath):
    instrs = instructions(ROOT / relpath)
    reqs = pip_requirements(instrs)
    assert reqs, f"{relpath}: no pip installs found"
    loose = [r for r in reqs if not PIN_RE.match(r)]
    assert not loose, f"{relpath}: unpinned pip requirements {loose}"
    # torch is pinned once, the same everywhere in the file, and matches a PyTorch base tag.
    torch = {r.split("==")[1] for r in reqs if r.startswith("torch==")}
    assert len(torch) == 1, f"{relpath}: torch pins {torch}"
    for word, args in instrs:
        if word == "FROM" and args.startswith("pytorch/pytorch:"):
            assert args.split(":")[1].startswith(torch.pop() + "-")
        if word == "RUN" and "apt-get install" in args:
            assert "--no-install-recommends" in args and "rm -rf /var/lib/apt/lists" in args


def test_same_hf_stack_across_images():
    """One transformers / torch version across the images, so a checkpoint moves freely."""
    pins = {}
    for relpath in FILES:
        for req in pip_requirements(instructions(ROOT / relpath)):
            name, version = req.split("==")
            pins.setdefault(name.lower(), set()).add(version)
    for name in ("torch", "transformers"):
        assert len(pins[name]) == 1, f"{name} pinned differently: {pins[name]}"


def test_docker_parses_the_real_dockerfiles(docker_engine, tmp_path):
    """The engine's own parser reads every instruction: with the bases redirected to a dead
    loopback registry, the build must fail pulling step 1, never with a parse error."""
    ctx = tmp_path / "ctx"
    (ctx / "bin").mkdir(parents=True)
    (ctx / "bin" / "nexa-bootstrap.sh").write_text(BOOTSTRAP.read_text())
    broken = ctx / "broken.Dockerfile"
    broken.write_text("FROM 127.0.0.1:9/x:1\nRUNN true\n")
    control = docker_engine.docker("build", "-f", str(broken), str(ctx), check=False)
    assert control.returncode != 0 and "unknown instruction" in control.stderr.lower()
    for relpath in FILES:
        text = (ROOT / relpath).read_text()
        redirected = re.sub(r"^FROM (\S+)", r"FROM 127.0.0.1:9/\1", text, flags=re.M)
        # Stage names stay local: COPY --from=<stage> must still resolve to the stage.
        dockerfile = ctx / Path(relpath).name
        dockerfile.write_text(redirected)
        res = docker_engine.docker("build", "-f", str(dockerfile), "--build-arg", "NEXA_VERSION=test", str(ctx), check=False)
        assert res.returncode != 0
        assert "127.0.0.1:9" in res.stderr and ("connection refused" in res.stderr or "connect" in res.stderr), (relpath, res.stderr)
        assert "unknown instruction" not in res.stderr.lower() and "parse error" not in res.stderr.lower(), (relpath, res.stderr)
        steps = len(instructions(ROOT / relpath))
        assert f"Step 1/{steps} : FROM 127.0.0.1:9/" in res.stdout, (relpath, res.stdout)


# --- bin/nexa-bootstrap.sh ----------------------------------------------------------------


def test_bootstrap_shellcheck():
    require_tool("shellcheck")
    res = subprocess.run(["shellcheck", str(BOOTSTRAP)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def run_bootstrap(tmp_path, *command: str, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    base.update(env)
    return subprocess.run(["sh", str(BOOTSTRAP), *command], env=base, stdin=subprocess.DEVNULL, capture_output=True, text=True)


def test_bootstrap_fixes_home_and_execs(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    res = run_bootstrap(tmp_path, "sh", "-c", 'printf "%s|" "$HOME" "$HF_HOME" "$(pwd)" "$NEXA_BOOTSTRAPPED" "$1"; exit 5', "_", "a b",
                        HOME="/", NEXA_WORKDIR=str(ws))
    home = tmp_path / f"nexa-home-{os.getuid()}"
    assert res.returncode == 5  # the command's exit code, through exec
    assert res.stdout == f"{home}|{home}/.cache/huggingface|{ws}|1|a b|"
    assert home.is_dir() and (home / ".cache" / "huggingface").is_dir()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    summary = res.stderr.splitlines()
    assert summary[0].startswith("nexa-bootstrap: user=") and f"home={home}" in summary[0] and f"cwd={ws}" in summary[0]
    assert summary[1].startswith("nexa-bootstrap: gpus=none; nexa image ?")


def test_bootstrap_unwritable_hf_home_falls_back(tmp_path):
    res = run_bootstrap(tmp_path, "sh", "-c", 'echo "$HF_HOME"', HOME=str(tmp_path / "h"), HF_HOME="/proc/nexa-no-such/hf")
    assert res.returncode == 0
    assert res.stdout.strip() == f"{tmp_path}/h/.cache/huggingface"
    assert "warning: HF_HOME=/proc/nexa-no-such/hf is not writable" in res.stderr


def test_bootstrap_quiet_and_default_shell(tmp_path):
    res = run_bootstrap(tmp_path, HOME=str(tmp_path / "h"), NEXA_QUIET="1", NEXA_VERSION="9.9")
    assert (res.returncode, res.stderr) == (0, "")  # no command: a shell, reading empty stdin
    res = run_bootstrap(tmp_path, "true", HOME=str(tmp_path / "h"), NEXA_VERSION="9.9")
    assert "nexa image 9.9" in res.stderr


# --- bin/nexa-bootstrap.sh and other users (issue 20, 8) -----------------------------------

ATTACKER, VICTIM = 40101, 40102  # uids without a passwd entry, like a container's mapped uid
PLANT = """\
import os
open(os.path.join(os.environ["NEXA_TEST_SHARED"], "planted-code-ran-as-%d" % os.getuid()), "w").close()
"""


def as_uid(uid: int, argv, env, umask: str = "022") -> subprocess.CompletedProcess:
    """Run ``argv`` as ``uid`` (and gid ``uid``, no other groups) through util-linux setpriv."""
    wrapped = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", "sh", "-c", f'umask {umask}; exec "$@"', "_"]
    return subprocess.run(wrapped + list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)


@pytest.fixture
def shared_tmp():
    """A sticky, world-writable folder like /tmp, reachable by every uid."""
    require_root()
    require_tool("setpriv", "python3")
    folder = Path(tempfile.mkdtemp(prefix="nexa-shared-tmp-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _victim(shared: Path, *command: str, umask: str = "022") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": str(shared), "HOME": "/", "NEXA_TEST_SHARED": str(shared)}
    return as_uid(VICTIM, ["sh", str(BOOTSTRAP), *command], env, umask)


def _user_site(home: str) -> str:
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
    code = "import site, sys; print(site.getusersitepackages())"
    return subprocess.run([python, "-c", code], env={"HOME": home, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("plant", ["open-folder", "attackers-private-folder", "link-to-attackers-folder"])
def test_a_home_planted_by_another_user_is_never_used(shared_tmp, plant):
    """Another uid creates ${TMPDIR}/nexa-home-<victim uid> first, with a usercustomize.py that
    Python runs at start-up from $HOME: the bootstrap makes a fresh private HOME instead."""
    predictable = shared_tmp / f"nexa-home-{VICTIM}"
    target = shared_tmp / "attackers" if plant == "link-to-attackers-folder" else predictable
    site_dir = _user_site(str(target))
    assert site_dir.startswith(str(target) + "/")
    mode = {"open-folder": "777", "attackers-private-folder": "700", "link-to-attackers-folder": "777"}[plant]
    script = f'mkdir -p "{site_dir}" && printf %s "$PLANT" > "{site_dir}/usercustomize.py"'
    script += f' && chmod -R a+rX "{target}" && chmod {mode} "{target}"'
    if plant == "link-to-attackers-folder":
        script += f' && ln -s "{target}" "{predictable}"'
    env = {"PATH": "/usr/bin:/bin", "PLANT": PLANT}
    planted = as_uid(ATTACKER, ["sh", "-c", script], env)
    assert planted.returncode == 0, planted.stderr

    res = _victim(shared_tmp, "python3", "-c", "import os; print(os.environ['HOME'])")
    assert res.returncode == 0, res.stderr
    assert list(shared_tmp.glob("planted-code-ran-as-*")) == []  # nothing planted ran
    home = Path(res.stdout.strip())
    assert home.parent == shared_tmp and home.name.startswith(f"nexa-home-{VICTIM}.") and home != predictable
    info = home.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (VICTIM, 0o700)
    assert f"nexa-bootstrap: warning: {predictable} exists and is not a private folder of uid {VICTIM}; not using it" in res.stderr


def test_the_planted_code_would_run_from_that_home(shared_tmp):
    """The attack itself, to show the test above is real: with HOME in the planted folder,
    Python runs its usercustomize.py as the victim."""
    planted_home = shared_tmp / "planted"
    site_dir = _user_site(str(planted_home))
    env = {"PATH": "/usr/bin:/bin", "PLANT": PLANT}
    assert as_uid(ATTACKER, ["sh", "-c", f'mkdir -p "{site_dir}" && printf %s "$PLANT" > "{site_dir}/usercustomize.py" '
                                         f'&& chmod -R a+rwX "{planted_home}"'], env).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "HOME": str(planted_home), "NEXA_TEST_SHARED": str(shared_tmp)}
    assert as_uid(VICTIM, ["python3", "-c", "pass"], env).returncode == 0
    assert [p.name for p in shared_tmp.glob("planted-code-ran-as-*")] == [f"planted-code-ran-as-{VICTIM}"]


def test_the_private_fallback_home_is_made_0700_and_reused(shared_tmp):
    first = _victim(shared_tmp, "sh", "-c", 'echo "$HOME"', umask="000")  # a careless umask changes nothing
    home = shared_tmp / f"nexa-home-{VICTIM}"
    assert first.returncode == 0 and first.stdout.strip() == str(home) and "warning" not in first.stderr
    assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (VICTIM, 0o700)
    again = _victim(shared_tmp, "sh", "-c", 'echo "$HOME"')
    assert again.stdout.strip() == str(home) and "warning" not in again.stderr  # its own private folder: reused
