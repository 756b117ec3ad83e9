"""The compute-node worker: index resolution, dry-run, errors, exec."""

import json
import subprocess
import sys

import pytest

from nexa_ops import worker
from nexa_ops.resources import package_root
from nexa_ops.sweep.script import BATCH_STUB, WORKER_STUB
from tests.services.pyz import require_python


@pytest.fixture
def spec(tmp_path):
    tasks = [
        {
            "index": i,
            "params": {"i": i},
            "argv": [sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(int(sys.argv[1]))", str(i), "a b"],
        }
        for i in range(3)
    ]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"schema": 1, "name": "t", "workdir": str(tmp_path), "run_dir": str(tmp_path), "tasks": tasks}))
    return path


def run_worker(*args, env=None):
    """The worker exactly as the sbatch script starts it: python -S -c STUB <pkg> ..."""
    return subprocess.run([sys.executable, "-S", "-c", WORKER_STUB, str(package_root()), *args], capture_output=True, text=True, env=env)


def test_dry_run_prints_argv_as_json(spec):
    out = run_worker("--spec", str(spec), "--task-id", "1", "--dry-run")
    assert out.returncode == 0
    assert json.loads(out.stdout)[-2:] == ["1", "a b"]


def test_slurm_array_id_plus_offset(spec):
    env = {"SLURM_ARRAY_TASK_ID": "0", "PATH": "/usr/bin:/bin"}
    out = run_worker("--spec", str(spec), "--offset", "2", "--dry-run", env=env)
    assert json.loads(out.stdout)[-2] == "2"


def test_exec_passes_exit_code_and_records_start(spec, tmp_path):
    out = run_worker("--spec", str(spec), "--task-id", "2")
    assert out.returncode == 2
    assert "['2', 'a b']" in out.stdout
    record = json.loads((tmp_path / "tasks" / "2.start.json").read_text())
    assert record["index"] == 2 and record["start"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--spec", "/nonexistent/spec.json", "--task-id", "0"], "/nonexistent/spec.json: spec file not found"),
        (["--task-id", "0"], "--spec FILE is required"),
        (["--spec", "{spec}", "--task-id", "3"], "task index 3 out of range (0..2)"),
        (["--spec", "{spec}"], "no task id: pass --task-id N"),
        (["--spec", "{spec}", "--task-id", "x"], "--task-id must be an integer"),
    ],
)
def test_errors_are_one_line_exit_2(spec, args, message):
    args = [a.replace("{spec}", str(spec)) for a in args]
    out = run_worker(*args, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_worker_imports_only_the_standard_library():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules); import nexa_ops.worker; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('nexa_ops')))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code, str(package_root())], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['nexa_ops', 'nexa_ops.worker']"


def run_batch_stub(cache, *args, env=None):
    """The worker as the array script starts it: BATCH_STUB <pkg> <cache prefix> ...;
    PYTHONVERBOSE shows which modules were imported, and from where."""
    env = dict(env or {"PATH": "/usr/bin:/bin"}, PYTHONVERBOSE="1")
    return subprocess.run([sys.executable, "-S", "-c", BATCH_STUB, str(package_root()), str(cache), *args],
                          capture_output=True, text=True, env=env)


def test_batch_stub_keeps_the_compiled_worker_in_the_run_folder(spec, tmp_path):
    cache = tmp_path / ".nexa-worker"
    first = run_batch_stub(cache, "--spec", str(spec), "--task-id", "1")
    assert first.returncode == 1 and "['1', 'a b']" in first.stdout
    assert "import 'nexa_ops.worker'" in first.stderr  # no cache yet: imported, then saved
    (saved,) = tmp_path.glob(".nexa-worker.*.pyc")
    assert saved.name == f".nexa-worker.{sys.implementation.cache_tag}.pyc"
    second = run_batch_stub(cache, "--spec", str(spec), "--task-id", "2")
    assert second.returncode == 2 and "['2', 'a b']" in second.stdout
    assert "import 'nexa_ops" not in second.stderr  # loaded from the cache: the package is never imported
    assert json.loads((tmp_path / "tasks" / "2.start.json").read_text())["index"] == 2


def test_batch_stub_replaces_a_damaged_cache(spec, tmp_path):
    saved = tmp_path / f".nexa-worker.{sys.implementation.cache_tag}.pyc"
    saved.write_bytes(b"\xe3 not marshal data")
    out = run_batch_stub(tmp_path / ".nexa-worker", "--spec", str(spec), "--task-id", "0")
    assert out.returncode == 0 and "['0', 'a b']" in out.stdout
    assert "import 'nexa_ops" not in run_batch_stub(tmp_path / ".nexa-worker", "--spec", str(spec), "--task-id", "0").stderr
    assert [p.name for p in tmp_path.glob(".nexa-worker*")] == [saved.name]  # no temp file left


def test_batch_stub_runs_where_the_cache_cannot_be_written(spec, tmp_path):
    out = run_batch_stub(tmp_path / "missing" / ".nexa-worker", "--spec", str(spec), "--task-id", "0")
    assert out.returncode == 0 and "['0', 'a b']" in out.stdout
    assert "Traceback" not in out.stderr and not (tmp_path / "missing").exists()


def test_program_is_found_on_path_as_execvp_would(tmp_path):
    """The worker's own PATH search: a name without a slash, the first executable match,
    a non-executable match skipped but remembered as the error."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "prog").write_text("#!/bin/sh\necho never\n")  # not executable
    (second / "prog").write_text("#!/bin/sh\necho found \"$@\"\n")
    (second / "prog").chmod(0o755)
    path = tmp_path / "spec.json"
    tasks = [{"index": 0, "argv": ["prog", "x y"]}, {"index": 1, "argv": ["no-such-prog"]}]
    path.write_text(json.dumps({"workdir": str(tmp_path), "run_dir": "", "tasks": tasks}))
    env = {"PATH": f"{first}:{second}"}
    out = run_worker("--spec", str(path), "--task-id", "0", env=env)
    assert (out.returncode, out.stdout) == (0, "found x y\n")
    out = run_worker("--spec", str(path), "--task-id", "0", env={"PATH": str(first)})
    assert out.returncode == 127 and out.stderr == "nexa worker: error: cannot run 'prog': Permission denied\n"
    out = run_worker("--spec", str(path), "--task-id", "1", env=env)
    assert out.returncode == 127 and out.stderr == "nexa worker: error: cannot run 'no-such-prog': No such file or directory\n"


def test_parse_args_equals_form():
    assert worker.parse_args(["--spec=x", "--task-id=4"])["task_id"] == "4"


def test_index_beside_the_spec_is_used_and_matches_it(tmp_path):
    """`nexa sweep` writes spec.argv; the worker reads one task from it without json."""
    from nexa_ops.config import NexaConfig, parse_sweep
    from nexa_ops.sweep.plan import plan_sweep

    values = ["a b", "new\nline", "ünï ✓", "$(x)", "", "--d", "nul-free \t tab"]
    defn = parse_sweep({"name": "i", "command": ["prog", "x"], "grid": {"v": values, "n": [1, 2]}}, "s.toml")
    art = plan_sweep(defn, NexaConfig(root=tmp_path), tmp_path / "run")
    assert (tmp_path / "run" / "spec.argv").exists()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from nexa_ops import worker; import json as _j\n"
        "del sys.modules['json']\n"
        "for i in range(int(sys.argv[3])):\n"
        "    w, r, argv = worker.load_indexed(sys.argv[2], i)\n"
        "    print(_j.dumps([a.decode() for a in argv]))\n"
        "print('json' in sys.modules, w.decode() == sys.argv[4])"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code, str(package_root()), str(art.spec_path), str(art.job_count), str(tmp_path)],
                         capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert [json.loads(line) for line in lines[:-1]] == [t.argv for t in art.tasks]
    assert lines[-1] == "False True"


def planned(tmp_path, count=6):
    """A sweep planned the real way: spec.json and spec.argv in tmp_path/run; task i runs
    ``python -c ... i`` and exits with i."""
    from nexa_ops.config import NexaConfig, parse_sweep
    from nexa_ops.sweep.plan import plan_sweep

    command = [sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(int(sys.argv[1][4:]))"]
    defn = parse_sweep({"name": "i", "command": command, "grid": {"n": list(range(count))}}, "s.toml")
    return plan_sweep(defn, NexaConfig(root=tmp_path), tmp_path / "run")


def dry(art, index):
    out = run_worker("--spec", str(art.spec_path), "--task-id", str(index), "--dry-run")
    return out.returncode, (json.loads(out.stdout) if out.returncode == 0 else None), out.stderr


def one_line_refusal(out, *words):
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


def test_intact_index_is_used_and_verifies(tmp_path):
    art = planned(tmp_path)
    assert worker.verify_index(str(art.spec_path)) is None
    assert dry(art, 5) == (0, art.tasks[5].argv, "")


def test_index_cut_by_40_bytes_never_runs_a_bare_program(tmp_path):
    """The report: a cut index made task 5 run bare `python3` and exit 0. Now the cut is
    seen (the header carries the length); the spec is intact, so it is read instead."""
    art = planned(tmp_path)
    index = art.run_dir / "spec.argv"
    index.write_bytes(index.read_bytes()[:-40])
    assert "damaged" in worker.verify_index(str(art.spec_path))
    out = run_worker("--spec", str(art.spec_path), "--task-id", "5")
    assert out.returncode == 5 and "['--n=5']" in out.stdout  # the planned argv, from spec.json
    assert "spec.argv: damaged (" in out.stderr and "reading the spec, which is intact" in out.stderr
    assert dry(art, 0)[:2] == (0, art.tasks[0].argv)


def test_cut_index_and_edited_spec_are_refused(tmp_path):
    art = planned(tmp_path)
    index = art.run_dir / "spec.argv"
    index.write_bytes(index.read_bytes()[:-40])
    art.spec_path.write_text(art.spec_path.read_text().replace("--n=5", "--n=0"))
    out = run_worker("--spec", str(art.spec_path), "--task-id", "5")
    one_line_refusal(out, "spec.argv: damaged (", "cannot be checked against it")


@pytest.mark.parametrize("where", ["record", "table", "header", "digest"])
def test_a_flipped_byte_is_seen(tmp_path, where):
    art = planned(tmp_path)
    index = art.run_dir / "spec.argv"
    data = bytearray(index.read_bytes())
    count = len(art.tasks)
    at = {
        "record": len(data) - 3,  # inside the last task's argv
        "table": worker.HEADER + worker.ENTRY * count + 3,  # the last record's offset
        "header": data.index(b" ", 12) + 1,  # the task count
        "digest": bytes(data).index(bytes(data[: worker.HEADER]).split()[6]) + 5,  # the spec's SHA-256
    }[where]
    data[at] ^= 0x01
    index.write_bytes(bytes(data))
    out = run_worker("--spec", str(art.spec_path), "--task-id", str(count - 1))
    if where in ("header", "digest"):  # the header vouches for nothing any more: refused
        one_line_refusal(out, "spec.argv: damaged (its header is damaged)")
    else:  # the header is intact and the spec matches its digest: the spec is read
        assert out.returncode == count - 1 and f"['--n={count - 1}']" in out.stdout, out
        assert "does not match its checksum" in out.stderr or "out of bounds" in out.stderr


def test_spec_edited_after_planning_is_refused(tmp_path):
    """A queued array must run what was planned: an edited spec is not silently used."""
    art = planned(tmp_path)
    art.spec_path.write_text(art.spec_path.read_text().replace("--n=1", "--n=9"))
    out = run_worker("--spec", str(art.spec_path), "--task-id", "1")
    one_line_refusal(out, "changed after planning", "plan the sweep again")


def test_spec_copied_with_a_new_mtime_still_uses_the_index(tmp_path):
    import os

    art = planned(tmp_path)
    os.utime(art.spec_path, (1, 1))  # same bytes, other mtime: the digest decides
    assert dry(art, 3) == (0, art.tasks[3].argv, "")


def test_legacy_index_is_ignored_for_the_spec(spec, tmp_path):
    (tmp_path / "spec.argv").write_bytes(b"NEXA-ARGV 1 3 1 1".ljust(63) + b"\n")
    assert json.loads(run_worker("--spec", str(spec), "--task-id", "1", "--dry-run").stdout)[-2] == "1"


@pytest.mark.parametrize(
    "doc, message",
    [
        ("[1, 2]", "not a nexa spec (no 'tasks' list)"),
        ('{"tasks": 5}', "not a nexa spec (no 'tasks' list)"),
        ('{"tasks": ["x"]}', 'tasks[0] must be an object with "index": 0'),
        ('{"tasks": [{"index": true, "argv": ["a"]}], "x": 0}', 'tasks[0] must be an object with "index": 0'),
        ('{"tasks": [{"index": 0, "argv": "python3 x.py"}]}', 'tasks[0].argv must be a non-empty list of strings, got "python3 x.py"'),
        ('{"tasks": [{"index": 0, "argv": []}]}', "tasks[0].argv must be a non-empty list of strings, got []"),
        ('{"tasks": [{"index": 0, "argv": ["a", 3]}]}', "tasks[0].argv must be a non-empty list of strings"),
        ('{"tasks": [{"index": 0, "argv": ["a\\u0000b"]}]}', "tasks[0].argv must be a non-empty list of strings"),
        ('{"tasks": [{"index": 0}]}', "tasks[0].argv must be a non-empty list of strings, got null"),
        ('{"workdir": 3, "tasks": [{"index": 0, "argv": ["a"]}]}', "workdir must be a string"),
        ('{"tasks": [', "not valid JSON"),
        ("[" * 100000, "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_spec_is_one_line_exit_2(tmp_path, doc, message):
    """Never a traceback, never an argv split into characters."""
    path = tmp_path / "spec.json"
    path.write_bytes(doc if isinstance(doc, bytes) else doc.encode())
    out = run_worker("--spec", str(path), "--task-id", "0")
    one_line_refusal(out, f"{path}: {message}")


def test_index_out_of_range_is_the_same_error(spec, tmp_path):
    from nexa_ops.worker import index_bytes

    (tmp_path / "spec.argv").write_bytes(index_bytes(str(spec), "/", "/", [["a"]] * 3))
    out = run_worker("--spec", str(spec), "--task-id", "5")
    assert out.returncode == 2 and "task index 5 out of range (0..2)" in out.stderr


def test_worker_and_batch_stub_on_the_oldest_python(spec, tmp_path):
    """Compute nodes may have only RHEL 8's python3 (3.6): the stub, the worker, its bytecode
    cache and its errors work there as on the Python that planned the run."""
    python = require_python("3.6")
    env = {"PATH": "/usr/bin:/bin"}
    cache = tmp_path / ".nexa-worker"
    for index in ("1", "2"):  # the first task imports and saves the worker, the second loads it
        out = subprocess.run([python, "-S", "-c", BATCH_STUB, str(package_root()), str(cache), "--spec", str(spec), "--task-id", index],
                             capture_output=True, text=True, env=env)
        assert out.returncode == int(index) and f"['{index}', 'a b']" in out.stdout, out.stderr
    assert [p.name for p in tmp_path.glob(".nexa-worker.*")] == [".nexa-worker.cpython-36.pyc"]
    dry = subprocess.run([python, "-S", "-c", WORKER_STUB, str(package_root()), "--spec", str(spec), "--task-id", "0", "--dry-run"],
                         capture_output=True, text=True, env=env)
    assert dry.returncode == 0 and json.loads(dry.stdout)[-2:] == ["0", "a b"]
    bad = subprocess.run([python, "-S", "-c", WORKER_STUB, str(package_root()), "--spec", str(spec), "--task-id", "9"],
                         capture_output=True, text=True, env=env)
    assert (bad.returncode, bad.stderr) == (2, f"nexa worker: error: {spec}: task index 9 out of range (0..2)\n")


def test_the_task_gets_its_metrics_file(tmp_path):
    """$NEXA_METRICS_FILE = <run>/metrics/<index>.jsonl; the worker makes no folder for it
    (the plan did, once), so its start-up stays as it was."""
    code = "import os; print(os.environ['NEXA_METRICS_FILE'])"
    task = {"index": 0, "params": {}, "argv": [sys.executable, "-c", code]}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"schema": 1, "name": "t", "workdir": str(tmp_path), "run_dir": str(tmp_path / "run"), "tasks": [task]}))
    out = run_worker("--spec", str(spec), "--task-id", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{tmp_path}/run/metrics/0.jsonl"
    assert not (tmp_path / "run" / "metrics").exists()


def test_batch_stub_ignores_a_cache_others_may_write(spec, tmp_path):
    """Only a plain file that this user owns and no one else may write is loaded."""
    import os

    first = run_batch_stub(tmp_path / ".nexa-worker", "--spec", str(spec), "--task-id", "0")
    assert first.returncode == 0
    (saved,) = tmp_path.glob(".nexa-worker.*.pyc")
    assert saved.stat().st_mode & 0o777 == 0o644
    saved.chmod(0o664)
    out = run_batch_stub(tmp_path / ".nexa-worker", "--spec", str(spec), "--task-id", "0")
    assert out.returncode == 0 and "import 'nexa_ops" in out.stderr  # not loaded: imported, and saved afresh
    assert saved.stat().st_mode & 0o777 == 0o644
    saved.unlink()
    os.mkfifo(str(saved))  # a FIFO would block a plain open() forever
    out = subprocess.run([sys.executable, "-S", "-c", BATCH_STUB, str(package_root()), str(tmp_path / ".nexa-worker"),
                          "--spec", str(spec), "--task-id", "0"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "['0', 'a b']" in out.stdout


def test_records_are_never_written_through_a_planted_link(tmp_path, monkeypatch):
    """The worker's temp names are random and created with O_EXCL|O_NOFOLLOW: a link planted
    at the very name it draws is not written through (it draws another)."""
    import os

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "tasks").mkdir()
    draws = iter([b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws))
    planted = tmp_path / "tasks" / f".3.start.{os.getpid()}.{'00' * 6}.tmp"
    planted.symlink_to(victim)
    worker.record_start(str(tmp_path), 3)
    assert victim.read_text() == "keep me" and planted.is_symlink()
    record = tmp_path / "tasks" / "3.start.json"
    assert not record.is_symlink() and json.loads(record.read_text())["index"] == 3
    assert record.stat().st_mode & 0o777 == 0o644


def test_spec_nul_layout():
    """spec.nul: header, one `<first> <argc>` entry per task, each argv followed by `.<i>`;
    every item NUL-terminated, bytes as planned (surrogate escapes back to their bytes)."""
    argvs = [["python", "t.py", "--x=a b"], ["p", "", "a\nb", "\udcff"]]
    items = worker.nul_bytes("ab" * 32, argvs).split(b"\0")
    assert items[-1] == b"" and items[0] == b"NEXA-NUL 1 2 " + b"ab" * 32
    for i, argv in enumerate(argvs):
        first, argc = (int(x) for x in items[1 + i].split())
        assert argc == len(argv)
        assert items[first : first + argc] == [a.encode("utf-8", "surrogateescape") for a in argv]
        assert items[first + argc] == b".%d" % i
