"""nexa sync: pure planning, then real rsync over a real sshd on 127.0.0.1."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nexa_ops.config import SyncConfig, load_config
from nexa_ops.errors import ConfigError, Refused, ToolError
from nexa_ops.sync import (
    MARKER,
    USER_WORDS,
    check_dest_probe,
    check_dest_text,
    make_plan,
    normalize_dest,
    rsync_argv,
    sync_repository,
)
from nexa_ops.tools import rsync as rs
from tests.services.sshd import free_port

SMALL_FILES = 2000
HOST_WORDS = "expected a host name (letters, digits, '-', '.'), an IPv4 address or an [IPv6] address"

# --- pure ----------------------------------------------------------------------------------


def _plan(tmp_path, **kw):
    cfg = SyncConfig(host="head", user="me", port=2222, dest="~/proj", exclude=["*.ckpt"], ssh_options=["ProxyJump=gw"])
    return make_plan(cfg, source=tmp_path, runs_dir=tmp_path / "runs", **kw)


def test_argv_has_archive_compression_mkpath_excludes_and_ignore_files(tmp_path):
    argv = rsync_argv(_plan(tmp_path))
    assert argv[:4] == ["rsync", "-a", "-z", "--mkpath"]
    for pattern in ("/runs/", "__pycache__/", "*.pyc", ".git/", "*.ckpt"):
        assert f"--exclude={pattern}" in argv
    assert "--filter=:- .gitignore" in argv and "--filter=:- .nexaignore" in argv
    assert "--delete" not in argv and "--dry-run" not in argv
    assert argv[-2] == str(tmp_path) + "/"
    assert argv[-1] == "me@head:proj/"  # ~/ dropped: relative paths are under the remote home
    ssh = argv[argv.index("-e") + 1]
    assert ssh == "ssh -o BatchMode=yes -o ConnectTimeout=10 -p 2222 -o ProxyJump=gw"


def test_argv_delete_dry_run_marker_and_quoted_identity(tmp_path):
    key = tmp_path / "my keys" / "id"
    key.parent.mkdir()
    key.write_text("k")
    argv = rsync_argv(_plan(tmp_path, delete=True, dry_run=True, identity=str(key)), marker_dir="/tmp/m")
    assert "--delete" in argv and "--dry-run" in argv
    assert argv[-2] == "/tmp/m/"
    assert f"-i '{key}' -o IdentitiesOnly=yes" in argv[argv.index("-e") + 1]


def test_runs_dir_elsewhere_in_the_tree_is_excluded_too(tmp_path):
    plan = make_plan(SyncConfig(host="h"), source=tmp_path, runs_dir=tmp_path / "out" / "runs")
    assert "/runs/" in plan.excludes and "/out/runs/" in plan.excludes
    assert plan.dest == tmp_path.name


@pytest.mark.parametrize(
    "kw, flag",
    [
        ({"host": "-oProxyCommand=x"}, f"--host: {HOST_WORDS}, got '-oProxyCommand=x'"),
        ({"host": "a b"}, "--host: expected a host name"),
        ({"host": ""}, f"--host: {HOST_WORDS}, got ''"),
        ({"host": "-u@h"}, f"--host: expected a user name before '@' ({USER_WORDS}), got '-u'"),
        ({"user": "-x"}, f"--user: expected a user name ({USER_WORDS}), got '-x'"),
        ({"user": "a\nb"}, "--user: expected a user name"),
        ({"dest": "a\nb"}, "--dest: expected a one-line path without control characters"),
        ({"port": 0}, "--port: expected a port between 1 and 65535, got 0"),
        ({"port": 70000}, "--port: expected a port between 1 and 65535, got 70000"),
        ({"identity": "/nonexistent/key"}, "--identity: identity file '/nonexistent/key' does not exist"),
        ({"dest": "  "}, "--dest: expected a destination path"),
    ],
)
def test_bad_options_name_the_option_not_the_file(tmp_path, kw, flag):
    cfg = SyncConfig(host="h", port=22)  # good file values: only the option is wrong
    args = {"host": "h"}
    args.update(kw)
    with pytest.raises(ConfigError) as info:
        make_plan(cfg, source=tmp_path, where="/p/nexa.toml", **args)
    assert str(info.value).startswith(flag)
    assert "nexa.toml" not in str(info.value) and "sync." not in str(info.value)


@pytest.mark.parametrize(
    "cfg, message",
    [
        (SyncConfig(), "/p/nexa.toml: sync.host: no host to sync to: pass --host or set host in [sync]"),
        (SyncConfig(host="-oProxyCommand=x"), "/p/nexa.toml: sync.host: expected a host name"),
        (SyncConfig(host="-u@h"), "/p/nexa.toml: sync.host: expected a user name before '@'"),
        (SyncConfig(host="h", user="a b"), f"/p/nexa.toml: sync.user: expected a user name ({USER_WORDS}), got 'a b'"),
        (SyncConfig(host="h", port=0), "/p/nexa.toml: sync.port: expected a port between 1 and 65535, got 0"),
        (SyncConfig(host="h", identity="/nonexistent/key"), "/p/nexa.toml: sync.identity: identity file"),
        (SyncConfig(host="h", dest=" "), "/p/nexa.toml: sync.dest: expected a destination path"),
        (SyncConfig(host="h", ssh_options=["-x"]), "/p/nexa.toml: sync.ssh_options[0]: expected an ssh option"),
    ],
)
def test_bad_file_values_name_the_file_and_key(tmp_path, cfg, message):
    with pytest.raises(ConfigError) as info:
        make_plan(cfg, source=tmp_path, where="/p/nexa.toml")
    assert str(info.value).startswith(message)


def test_good_options_override_bad_file_values(tmp_path):
    key = tmp_path / "id"
    key.write_text("k")
    cfg = SyncConfig(host="-bad", user="-bad", port=0, identity="/nonexistent/key")
    plan = make_plan(cfg, source=tmp_path, host="h", user="me", port=2222, identity=str(key))
    assert (plan.remote.login, plan.remote.port, plan.remote.identity) == ("me@h", 2222, str(key))


def test_cli_bad_options_name_the_option_without_a_project_file(tmp_path, nexa_cli):
    for args, message in (
        (["--port", "0"], "--port: expected a port between 1 and 65535, got 0"),
        (["--port", "abc"], "--port: expected an integer, got 'abc'"),
        (["--host=-x"], f"--host: {HOST_WORDS}, got '-x'"),
        (["--user=-x"], f"--user: expected a user name ({USER_WORDS}), got '-x'"),
        (["--identity", str(tmp_path / "missing")], f"--identity: identity file '{tmp_path / 'missing'}' does not exist"),
    ):
        argv = ["sync", "--host", "127.0.0.1", *args] if not args[0].startswith("--host") else ["sync", *args]
        out = nexa_cli(*argv, cwd=tmp_path, env={"NEXA_CONFIG": ""})
        assert (out.returncode, out.stderr) == (2, f"nexa: error: {message}\n"), argv


def test_user_at_host_and_dest_normalisation(tmp_path):
    plan = make_plan(SyncConfig(), source=tmp_path, host="alice@head", dest="/scratch/alice/proj/")
    assert plan.remote.login == "alice@head" and plan.dest == "/scratch/alice/proj"
    assert normalize_dest("~/") == "." and normalize_dest("~/a/b/") == "a/b" and normalize_dest("//") == "/"


@pytest.mark.parametrize("dest", ["/", "//", "/tmp/..", "~", "~/", ".", "", "~bob", "$HOME", "/root", "/home/alice/", "x/.."])
def test_guard_refuses_root_and_home_whatever_force_says(dest):
    with pytest.raises(Refused, match="refusing to sync with --delete"):
        check_dest_text(dest)


@pytest.mark.parametrize("dest", ["proj", "~/proj", "/home/alice/proj", "/scratch/x"])
def test_guard_accepts_project_folders(dest):
    check_dest_text(dest)


def test_guard_on_probe_answers():
    home = "/home/a"

    def probe(real, state):
        return rs.DestProbe(home, real, state, cwd=home)

    check_dest_probe("p", probe("", "absent"), force=False)
    check_dest_probe("p", probe("/home/a/p", "empty"), force=False)
    check_dest_probe("p", probe("/home/a/p", "marker"), force=False)
    check_dest_probe("p", probe("/home/a/p", "nonempty"), force=True)
    check_dest_probe("../b/p", probe("/home/b/p", "nonempty"), force=True)  # a sibling of the home: not its parent
    check_dest_probe("p", probe("/home/ab", "marker"), force=False)  # '/home/a' is not inside '/home/ab'
    with pytest.raises(Refused, match="not empty and has no .nexa-sync marker.*--force"):
        check_dest_probe("p", probe("/home/a/p", "nonempty"), force=False)
    with pytest.raises(Refused, match="remote home"):
        check_dest_probe("link", probe(home, "nonempty"), force=True)
    with pytest.raises(Refused, match="remote home"):
        check_dest_probe("link", probe(home, "marker"), force=True)  # a marker in the home changes nothing
    with pytest.raises(Refused, match="resolves to '/'"):
        check_dest_probe("link", probe("/", "nonempty"), force=True)
    for parent in ("/home", "/home/"):
        with pytest.raises(Refused, match=r"the remote home directory \(/home/a\) is inside it"):
            check_dest_probe("..", probe(parent, "marker"), force=True)
    starts_elsewhere = rs.DestProbe(home, "/scratch/a", "nonempty", cwd="/scratch/a")
    with pytest.raises(Refused, match="it is the folder remote commands start in"):
        check_dest_probe("/scratch/a", starts_elsewhere, force=True)
    above_start = rs.DestProbe(home, "/scratch", "nonempty", cwd="/scratch/a")
    with pytest.raises(Refused, match=r"the folder remote commands start in \(/scratch/a\) is inside it"):
        check_dest_probe("/scratch", above_start, force=True)


@pytest.mark.parametrize(
    "found, message",
    [
        (rs.DestProbe("", "", "unknown", problem="no answer line"), "could not check the destination exactly \\(no answer line\\)"),
        (rs.DestProbe("/home/a", "/home/a/p", "bye"), "could not check the destination exactly"),
        (rs.DestProbe("", "/home/a/p", "nonempty", cwd="/home/a"), "did not say where its home directory is"),
        (rs.DestProbe("/home/a", "/home/a/p", "nonempty", cwd=""), "did not say where its home directory is"),
        (rs.DestProbe("/home/a", "", "nonempty", cwd="/home/a"), "could not resolve the folder's real path"),
        (rs.DestProbe("/home/a", "", "empty", cwd="/home/a"), "could not resolve the folder's real path"),
        (rs.DestProbe("/home/a", "/home/a", "absent", cwd="/home/a"), "says it is absent but resolves it"),
        (rs.DestProbe("/home/a", "/home/a/p", "unreadable", cwd="/home/a"), "cannot be listed"),
        (rs.DestProbe("/home/a", "", "notdir", cwd="/home/a"), "not a folder"),
    ],
)
def test_guard_refuses_every_answer_that_is_not_exact(found, message):
    with pytest.raises(Refused, match=message):
        check_dest_probe("p", found, force=True)


@pytest.mark.parametrize("dest", ["..", "../..", "~/..", "../.", "x/../..", "./../"])
def test_guard_refuses_parents_of_the_home_by_name(dest):
    with pytest.raises(Refused, match="above the remote home"):
        check_dest_text(dest)


def _record(nonce, state="nonempty", home="/home/a", cwd="/home/a", real="/home/a/p"):
    fields = [p.encode().hex() if p else "-" for p in (home, cwd, real)]
    return f"NEXA-{nonce} {state} {' '.join(fields)}"


def test_probe_answer_is_the_one_framed_record_whatever_surrounds_it():
    nonce = "0123456789abcdef0123456789abcdef"
    noisy = f"Welcome to the cluster\n/home/a\n\n{_record(nonce)}\nbye\n/home/a\nmarker\n"
    assert rs.parse_probe(noisy, nonce) == rs.DestProbe("/home/a", "/home/a/p", "nonempty", cwd="/home/a")
    odd = _record(nonce, real="/home/a/with space\nand a line break\n")
    assert rs.parse_probe(odd, nonce).realpath == "/home/a/with space\nand a line break\n"
    assert rs.parse_probe(_record(nonce, state="absent", real=""), nonce).realpath == ""
    for bad in (
        "",  # nothing: a login that swallows stdout
        "/home/a\n/home/a/p\nempty\n",  # the old unframed answer
        _record("f" * 32),  # another nonce: an echo of some other probe
        _record(nonce) + "\n" + _record(nonce, real="/tmp"),  # two answers
        _record(nonce, state="bye"),
        _record(nonce) + " extra",
        _record(nonce) + "\r",
        "[log] " + _record(nonce),  # a wrapper prefixing every line
        f"NEXA-{nonce} nonempty 2f686f6d652f61 2f686f6d652f61 2f686f6d652f6",  # odd hex
        f"NEXA-{nonce} nonempty 2F686F6D652F61 - -",  # upper case: not what the probe prints
    ):
        found = rs.parse_probe(bad, nonce)
        assert found.state == "unknown" and found.problem, bad
        with pytest.raises(Refused, match="could not check the destination exactly"):
            check_dest_probe("p", found, force=True)


def test_probe_never_names_its_frame_in_the_command():
    """Only the running script can print ``NEXA-<nonce>``: an echo of the command cannot."""
    remote = rs.Remote("h", "u")
    nonce = "a" * 32
    argv = rs.probe_argv(remote, "-rf x", MARKER, nonce)
    assert f"NEXA-{nonce}" not in " ".join(argv)
    assert argv[-1].endswith(f"nexa-probe './-rf x' {nonce}")  # a relative dest cannot pass for an option


@pytest.mark.parametrize(
    "host, login, ssh_login",
    [
        ("head", "head", "head"),
        ("me@head.cluster.example.org", "me@head.cluster.example.org", "me@head.cluster.example.org"),
        ("gpu_head-2", "gpu_head-2", "gpu_head-2"),  # an ssh config alias
        ("10.0.0.1", "10.0.0.1", "10.0.0.1"),
        ("a.b@[::1]", "a.b@[::1]", "a.b@::1"),
        ("head.", "head.", "head."),
    ],
)
def test_good_hosts(tmp_path, host, login, ssh_login):
    plan = make_plan(SyncConfig(), source=tmp_path, host=host)
    assert (plan.remote.login, plan.remote.ssh_login) == (login, ssh_login)


@pytest.mark.parametrize(
    "host, message",
    [
        ("/tmp/x", HOST_WORDS),
        ("./x", HOST_WORDS),
        ("me@/srv/backup", HOST_WORDS),
        ("host:22", HOST_WORDS),
        ("::1", "expected an IPv6 address in brackets, like [::1]"),
        ("[::g]", HOST_WORDS),
        ("[10.0.0.1]", HOST_WORDS),
        ("10.0.0.256", "expected an IPv4 address like 10.0.0.1"),
        ("-h", HOST_WORDS),
        ("h-", HOST_WORDS),
        ("a..b", HOST_WORDS),
        ("a" * 64, HOST_WORDS),
        ("h;id", HOST_WORDS),
        ("h$(id)", HOST_WORDS),
        ("h\u00e9", HOST_WORDS),
        ("-l@h", "expected a user name before '@'"),
        (".x@h", "expected a user name before '@'"),
        ("a b@h", "expected a user name before '@'"),
        ("u:x@h", "expected a user name before '@'"),
    ],
)
def test_bad_hosts_are_one_line_errors_naming_option_or_key(tmp_path, host, message):
    with pytest.raises(ConfigError) as info:
        make_plan(SyncConfig(), source=tmp_path, host=host)
    assert str(info.value).startswith(f"--host: {message}") and "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        make_plan(SyncConfig(host=host), source=tmp_path, where="/p/nexa.toml")
    assert str(info.value).startswith(f"/p/nexa.toml: sync.host: {message}")


def test_parse_itemized_output_and_stats():
    out = (
        "Created 1 directory for /x\n"
        "<f+++++++++ a b.txt\n"
        "cd+++++++++ sub dir/\n"
        "<f.st...... sub dir/c\n"
        "*deleting   old file\n"
        ".d..t...... ./\n"
        "\nNumber of files: 2,010 (reg: 2,000, dir: 10)\n"
        "Number of regular files transferred: 1,234\n"
        "Total bytes sent: 56,789\n"
    )
    parsed = rs.parse_output(out)
    assert parsed.sent == ["a b.txt", "sub dir/c"]
    assert parsed.created == ["sub dir/"]
    assert parsed.deleted == ["old file"]
    assert len(parsed.lines) == 5
    assert parsed.stats["number_of_files"] == 2010
    assert parsed.stats["number_of_regular_files_transferred"] == 1234
    assert parsed.stats["total_bytes_sent"] == 56789


def test_exit_codes_are_explained():
    refused = "ssh: connect to host 127.0.0.1 port 1: Connection refused\nrsync: connection unexpectedly closed"
    assert rs.explain_rsync(255, refused) == "ssh could not connect or authenticate: nothing listens on that host and port"
    assert "refused the key" in rs.explain_rsync(255, "root@h: Permission denied (publickey).")
    assert "host key" in rs.explain_rsync(255, "Host key verification failed.")
    assert "I/O error on the remote" in rs.explain_rsync(11, "")
    assert "data stream" in rs.explain_rsync(12, "")
    assert "partial transfer" in rs.explain_rsync(23, "") and "vanished" in rs.explain_rsync(24, "")


def test_ssh_failure_reported_as_12_is_recognised():
    raced = (
        "ssh: connect to host 127.0.0.1 port 41079: Connection refused\n"
        "rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n"
        "rsync error: error in rsync protocol data stream (code 12) at io.c(285) [sender=3.5.0]\n"
    )
    assert rs.ssh_failed(raced)
    died = "rsync: connection unexpectedly closed (0 bytes received so far) [sender]\nrsync error: ... (code 12)\n"
    assert not rs.ssh_failed(died)  # the remote rsync died: a real 12


# --- real rsync over a real sshd -------------------------------------------------------------


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def project(tmp_path):
    """A project tree: thousands of small files, a big runs/, caches, .git, ignored files,
    and names with spaces (the project folder's own name has one too)."""
    root = tmp_path / "my project"
    for i in range(SMALL_FILES):
        _write(root / "src" / f"pkg{i % 20}" / f"mod_{i}.py", f"# module {i}\n")
    for i in range(3):
        big = root / "runs" / f"run{i}" / "checkpoint.pt"
        big.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as fh:  # 200 MB each, sparse: costs no disk, but rsync would read it all
            fh.truncate(200 * 1024 * 1024)
    for pkg in ("src/pkg0", "src/pkg1", "."):
        _write(root / pkg / "__pycache__" / "mod.cpython-311.pyc", "bytecode")
    _write(root / "src" / "stray.pyc", "bytecode")
    _write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    _write(root / ".gitignore", "*.ckpt\nwandb/\n")
    _write(root / "src" / ".gitignore", "scratch.txt\n")
    _write(root / "model.ckpt", "weights")
    _write(root / "wandb" / "run-1" / "log.txt", "log")
    _write(root / "src" / "scratch.txt", "mine")
    _write(root / ".nexaignore", "/data/raw/\n")
    _write(root / "data" / "raw" / "huge.bin", "raw")
    _write(root / "data" / "small.csv", "a,b\n")
    _write(root / "my data" / "file one.txt", "spaces")
    _write(root / "src" / "runs" / "keep.py", "# a package named runs is code, not the runs folder\n")
    _write(root / "train.py", "print('train')\n")
    return root


def _config(project: Path, sshd, dest: Path, **extra):
    (project / "nexa.toml").write_text(sshd.toml(str(dest), **extra))
    return load_config(project / "nexa.toml")


def _tree(root: Path):
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_sync_excludes_and_resync_sends_nothing(project, sshd, tmp_path):
    dest = tmp_path / "remote dir" / "proj"
    cfg = _config(project, sshd, dest)
    first = sync_repository(cfg)
    got = _tree(dest)
    assert len([p for p in got if p.startswith("src/pkg")]) == SMALL_FILES
    assert {"train.py", "my data/file one.txt", "data/small.csv", "src/runs/keep.py", MARKER, ".gitignore"} <= got
    assert not [p for p in got if p.startswith(("runs/", ".git/", "wandb/", "data/raw/"))]
    for gone in ("__pycache__", ".pyc", "model.ckpt", "scratch.txt"):
        assert not [p for p in got if gone in p], gone
    assert first.files_transferred == len(got)
    assert first.bytes_sent < 50 * 1024 * 1024  # the 600 MB runs/ never went over the wire

    again = sync_repository(cfg)
    assert again.itemized == [] and again.sent == [] and again.files_transferred == 0
    assert _tree(dest) == got


def test_dry_run_lists_changes_and_changes_nothing(project, sshd, tmp_path):
    dest = tmp_path / "remote"
    cfg = _config(project, sshd, dest)
    sync_repository(cfg)
    before = {p: (dest / p).read_text() for p in _tree(dest)}
    _write(project / "train.py", "print('changed')\n")
    _write(project / "new file.py", "new")
    (project / "data" / "small.csv").unlink()
    preview = sync_repository(cfg, dry_run=True, delete=True)
    assert "--dry-run" in preview.argv
    assert sorted(preview.sent) == ["new file.py", "train.py"]
    assert preview.deleted == ["data/small.csv"]
    assert any(line.startswith("*deleting") for line in preview.itemized)
    assert {p: (dest / p).read_text() for p in _tree(dest)} == before


def test_deletions_follow_delete_and_spare_excluded_remote_files(project, sshd, tmp_path):
    dest = tmp_path / "remote"
    cfg = _config(project, sshd, dest)
    sync_repository(cfg)
    _write(dest / "runs" / "remote-run" / "log.txt", "made on the cluster")
    (project / "train.py").unlink()
    kept = sync_repository(cfg)  # deletion off by default
    assert (dest / "train.py").exists() and kept.deleted == []
    pruned = sync_repository(cfg, delete=True)
    assert pruned.deleted == ["train.py"] and not (dest / "train.py").exists()
    assert (dest / "runs" / "remote-run" / "log.txt").exists()  # excluded: never deleted
    assert (dest / MARKER).exists()
    cfg_on = _config(project, sshd, dest, delete="true")
    _write(dest / "stray.txt", "remote only")
    assert sync_repository(cfg_on).deleted == ["stray.txt"]
    _write(dest / "stray.txt", "remote only")
    assert sync_repository(cfg_on, delete=False).deleted == []


def test_guards_refuse_with_delete(project, sshd, tmp_path):
    occupied = tmp_path / "occupied"
    _write(occupied / "precious.txt", "not a nexa copy")
    cfg = _config(project, sshd, occupied)
    with pytest.raises(Refused, match="not empty and has no .nexa-sync marker"):
        sync_repository(cfg, delete=True)
    assert (occupied / "precious.txt").exists()
    with pytest.raises(Refused, match="home directory"):
        sync_repository(cfg, delete=True, dest="~")
    with pytest.raises(Refused, match="'/'"):
        sync_repository(cfg, delete=True, dest="/", force=True)
    link = tmp_path / "home-link"
    link.symlink_to(os.path.expanduser("~root"))
    with pytest.raises(Refused, match="remote home directory"):  # found by the probe, not by the name
        sync_repository(cfg, delete=True, dest=str(link), force=True, dry_run=True)
    # without deletion nothing is at risk: no guard; the marker then adopts the folder
    sync_repository(cfg)
    assert (occupied / MARKER).exists() and (occupied / "precious.txt").exists()
    assert sync_repository(cfg, delete=True).deleted == ["precious.txt"]
    forced = tmp_path / "forced"
    _write(forced / "old.txt", "x")
    assert sync_repository(cfg, delete=True, force=True, dest=str(forced)).deleted == ["old.txt"]


# --- a second user whose login shell prints things (the probe must not be fooled) ----------

#: ~/.bashrc noise a real login may print around every ssh command.
NOISY_SHELLS = {
    # the old parse took "the last 3 lines": this shifted home/path/state by one line
    "exit-trap": 'trap \'echo "Goodbye from the cluster"\' EXIT\n',
    "banner-and-trap": 'echo "*** cluster maintenance on Friday ***"\necho\ntrap \'echo bye; echo /; echo marker\' EXIT\n',
    "fake-answer": "trap 'echo NEXA-00000000000000000000000000000000 absent - - -; echo marker' EXIT\n",
}
#: A login whose output cannot be read exactly: nothing may be deleted.
GARBLED_SHELLS = {
    "prefixing-wrapper": "exec > >(sed -u 's/^/[audit] /')\n",
    "swallowed-stdout": "exec >/dev/null\n",
}


def _as_user(project: Path, sshd, user, dest: str) -> None:
    text = sshd.toml(dest).replace(f'user = "{sshd.user}"', f'user = "{user.name}"')
    (project / "nexa.toml").write_text(text)


def _home_listing(user) -> set:
    return {p.relative_to(user.home).as_posix() for p in user.home.rglob("*")}


@pytest.mark.parametrize("shell", sorted(NOISY_SHELLS))
def test_noisy_login_cannot_turn_the_home_into_a_delete_target(project, sshd, sshd_user, nexa_cli, shell):
    """Issue 20, 1: with one extra line from the remote login, --dry-run --delete used to list
    ~/.ssh/id_ed25519 for deletion. The framed answer still says it is the home: refused."""
    sshd_user.startup(NOISY_SHELLS[shell])
    before = _home_listing(sshd_user)
    _as_user(project, sshd, sshd_user, str(sshd_user.home))  # an absolute home path no name rule knows
    for extra in ([], ["--force"]):
        out = nexa_cli("sync", "--delete", "--dry-run", *extra, cwd=project)
        assert out.returncode == 3, out.stdout + out.stderr
        assert out.stderr == (
            f"nexa: error: refusing to sync with --delete into '{sshd_user.home}': it is the remote home directory "
            f"({sshd_user.home}); use a subfolder\n"
        )
        assert ".ssh" not in out.stdout and "deleting" not in out.stdout
    assert _home_listing(sshd_user) == before and (sshd_user.home / ".ssh" / "id_ed25519").exists()


def test_noisy_login_still_syncs_and_prunes_a_project_folder(project, sshd, sshd_user):
    """The guard is exact, not a blanket refusal: the same noisy login syncs into a subfolder."""
    sshd_user.startup(NOISY_SHELLS["exit-trap"])
    _as_user(project, sshd, sshd_user, "projects/mine")
    cfg = load_config(project / "nexa.toml")
    first = sync_repository(cfg, delete=True)
    assert first.probe.state == "absent" and first.probe.home == str(sshd_user.home)
    dest = sshd_user.home / "projects" / "mine"
    assert (dest / "train.py").exists() and (dest / MARKER).exists()
    (project / "train.py").unlink()
    again = sync_repository(cfg, delete=True)
    assert again.probe.state == "marker" and again.probe.realpath == str(dest)
    assert again.deleted == ["train.py"] and not (dest / "train.py").exists()


@pytest.mark.parametrize("shell", sorted(GARBLED_SHELLS))
def test_an_answer_that_cannot_be_read_exactly_is_refused(project, sshd, sshd_user, nexa_cli, shell):
    sshd_user.startup(GARBLED_SHELLS[shell])
    _as_user(project, sshd, sshd_user, "projects/garbled")
    out = nexa_cli("sync", "--delete", "--dry-run", "--force", cwd=project)
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stderr.startswith(
        "nexa: error: refusing to sync with --delete into 'projects/garbled': could not check the destination exactly ("
    )
    assert out.stderr.endswith("; nothing was deleted\n") and out.stderr.count("\n") == 1
    assert out.stdout == ""


@pytest.mark.parametrize("how", ["..", "../", "parent-absolute", "parent-link", "/", "grandparent-absolute"])
def test_force_never_allows_the_home_or_a_folder_above_it(project, sshd, sshd_user, nexa_cli, how):
    """Issue 20, 2: `--dest ..` from the home, with --force, would delete the home inside it."""
    sshd_user.startup("")
    link = sshd_user.home / "up"
    if how == "parent-link":
        link.symlink_to(sshd_user.home.parent)
    dest = {
        "parent-absolute": str(sshd_user.home.parent),
        "grandparent-absolute": str(sshd_user.home.parent.parent),
        "parent-link": "up",
    }.get(how, how)
    before = _home_listing(sshd_user)
    _as_user(project, sshd, sshd_user, dest)
    try:
        for extra in (["--dry-run"], []):
            out = nexa_cli("sync", "--delete", "--force", *extra, cwd=project)
            assert out.returncode == 3, out.stdout + out.stderr
            assert out.stderr.startswith(f"nexa: error: refusing to sync with --delete into {normalize_dest(dest)!r}: ")
            assert any(words in out.stderr for words in ("above the remote home", "is inside it", "'/'")), out.stderr
            assert out.stdout == ""
        assert _home_listing(sshd_user) == before
    finally:
        if link.is_symlink():
            link.unlink()


def test_host_with_a_slash_never_becomes_a_local_copy(project, tmp_path, nexa_cli):
    """Issue 20, 12: `--host /path` made rsync copy into the local folder '/path:dest/'."""
    target = tmp_path / "local"
    (project / "nexa.toml").write_text('[sync]\ndest = "proj"\n')
    out = nexa_cli("sync", "--host", str(target), cwd=project)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"nexa: error: --host: {HOST_WORDS}, got {str(target)!r}\n"
    (project / "nexa.toml").write_text(f'[sync]\nhost = "me@{target}"\ndest = "proj"\n')
    out = nexa_cli("sync", "--delete", cwd=project)
    assert out.returncode == 2
    assert out.stderr == f"nexa: error: {project / 'nexa.toml'}: sync.host: {HOST_WORDS}, got {str(target)!r}\n"
    assert not list(tmp_path.glob("local*"))  # no '/.../local:proj/' folder was made


def test_unreachable_port_is_explained(project, sshd, tmp_path):
    cfg = _config(project, sshd, tmp_path / "d")
    for _ in range(6):  # rsync itself says 12 or 255 at random here: nexa must always say 255
        with pytest.raises(ToolError) as info:
            sync_repository(cfg, port=free_port())
        err = info.value
        assert err.returncode == 255 and err.exit_code == 255
        assert "ssh could not connect or authenticate: nothing listens on that host and port" in str(err)
        assert "Connection refused" in str(err)  # rsync's/ssh's own words are kept


def test_wrong_key_is_explained(project, sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    cfg = _config(project, sshd, tmp_path / "d")
    with pytest.raises(ToolError, match="server refused the key") as info:
        sync_repository(cfg, identity=str(other))
    assert "Permission denied" in str(info.value)


def test_remote_io_error_11(project, sshd, tmp_path):
    _write(tmp_path / "a-file", "not a folder")
    cfg = _config(project, sshd, tmp_path / "a-file" / "proj")
    with pytest.raises(ToolError) as info:
        sync_repository(cfg)
    assert info.value.returncode == 11
    assert "file I/O error on the remote" in str(info.value) and "Not a directory" in str(info.value)


def test_broken_stream_12(project, sshd, tmp_path):
    cfg = _config(project, sshd, tmp_path / "d", rsync_path='"exit 3;"')  # the remote rsync dies at once
    with pytest.raises(ToolError) as info:
        sync_repository(cfg)
    assert info.value.returncode == 12
    assert "data stream to the remote rsync broke" in str(info.value) and "code 12" in str(info.value)


def test_partial_transfer_23(project, sshd, tmp_path):
    dest = tmp_path / "d"
    _write(dest / "train.py" / "inner.txt", "a folder where the project has a file")
    cfg = _config(project, sshd, dest)
    with pytest.raises(ToolError) as info:
        sync_repository(cfg)
    assert info.value.returncode == 23
    assert "partial transfer" in str(info.value) and "train.py" in str(info.value)
    assert (dest / "src" / "pkg0" / "mod_0.py").exists()  # the rest did arrive


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_sync_dry_run_and_errors(project, sshd, tmp_path, nexa_cli):
    dest = tmp_path / "cli dest"
    _config(project, sshd, dest)
    dry = nexa_cli("sync", "--dry-run", cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert "<f+++++++++ train.py" in dry.stdout and "would send" in dry.stdout
    assert not dest.exists()
    real = nexa_cli("sync", cwd=project)
    assert real.returncode == 0, real.stderr
    assert (dest / "my data" / "file one.txt").exists() and "sent" in real.stdout
    again = nexa_cli("sync", "--delete", cwd=project)
    assert again.returncode == 0 and "sent 0 file(s), deleted 0" in again.stdout
    both = nexa_cli("sync", "--delete", "--no-delete", cwd=project)
    assert both.returncode == 2 and both.stderr.strip() == "nexa: error: choose one of --delete and --no-delete"
    guard = nexa_cli("sync", "--delete", "--dest", "~", cwd=project)
    assert guard.returncode == 3 and "home directory" in guard.stderr and "Traceback" not in guard.stderr
    down = nexa_cli("sync", "--port", str(free_port()), cwd=project)
    assert down.returncode == 255
    assert down.stderr.startswith("nexa: error: rsync exited with 255: ssh could not connect")
    assert "Connection refused" in down.stderr and "Traceback" not in down.stderr
    bad = nexa_cli("sync", "--port", "abc", cwd=project)
    assert bad.returncode == 2 and "--port" in bad.stderr


def test_cli_no_delete_overrides_config(project, sshd, tmp_path, nexa_cli):
    dest = tmp_path / "d"
    _config(project, sshd, dest, delete="true")
    assert nexa_cli("sync", cwd=project).returncode == 0
    _write(dest / "remote-only.txt", "x")
    out = nexa_cli("sync", "--no-delete", cwd=project)
    assert out.returncode == 0 and (dest / "remote-only.txt").exists()
    out = nexa_cli("sync", cwd=project)
    assert out.returncode == 0 and not (dest / "remote-only.txt").exists()


def test_missing_rsync_is_tool_missing(project, sshd, tmp_path, monkeypatch):
    cfg = _config(project, sshd, tmp_path / "d")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    ssh = shutil.which("ssh")
    os.symlink(ssh, empty / "ssh")
    monkeypatch.setenv("PATH", str(empty))
    from nexa_ops.errors import ToolMissing

    with pytest.raises(ToolMissing, match="rsync: not found"):
        sync_repository(cfg)
