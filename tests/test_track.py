"""Tracking without a scheduler: merging Slurm's views with the run folder's records, array
specs for resubmission, and the array script's signal handling (run by bash itself)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from nexa_ops import control, runs, track
from nexa_ops.config import ClusterConfig, Resources
from nexa_ops.errors import Refused
from nexa_ops.sweep.script import render_array_script
from nexa_ops.tools import slurm
from nexa_ops.tools.slurm import parse_record, signal_directives, warn_seconds
from tests.conftest import require_tool

NOW = 1_800_000_000.0


def slot(job="100", task=0, since=None):
    return runs.Slot(job, task, since)


# --- manifests -> slots ----------------------------------------------------------------------


def test_slots_follow_chunks_and_resubmissions():
    manifest = {
        "job_ids": ["100", "101", "200"],
        "chunks": [
            {"offset": 0, "count": 25, "job_id": "100"},
            {"offset": 25, "count": 5, "job_id": "101"},
            {"offset": 3, "count": 3, "job_id": "200", "array": "0,4,24", "submitted_at": NOW},
        ],
    }
    where = runs.slots(manifest)
    assert len(where) == 30
    assert where[0] == runs.Slot("100", 0)
    assert where[26] == runs.Slot("101", 1)
    assert where[3] == runs.Slot("200", 0, NOW) and where[7] == runs.Slot("200", 4, NOW)
    assert where[27] == runs.Slot("200", 24, NOW)
    assert where[4].element == "100_4"


def test_expand_array_forms():
    assert slurm.expand_array("0-3,7,9-13:2%4") == [0, 1, 2, 3, 7, 9, 11, 13]
    assert slurm.expand_array("5") == [5]
    with pytest.raises(ValueError):
        slurm.expand_array("a-b")


def test_dependency_and_job_log_options():
    assert slurm.afterany(["12", 13]) == "--dependency=afterany:12:13"
    assert slurm.job_log("/runs/x/logs", "promote-2") == "--output=/runs/x/logs/promote-2-%j.out"


def test_resubmission_groups_respect_max_array_size():
    assert slurm.group_below_limit([3, 7, 9], 25) == [(3, [0, 4, 6])]
    # indices above the limit: a second submission with its own offset, never index >= 25
    groups = slurm.group_below_limit([52, 3, 30, 7, 27], 25)
    assert groups == [(3, [0, 4, 24]), (30, [0, 22])]
    for _offset, elements in groups:
        assert all(0 <= e < 25 for e in elements)
    assert sorted(o + e for o, es in groups for e in es) == [3, 7, 27, 30, 52]
    assert slurm.list_spec([0, 4, 6]) == "0,4,6"
    assert slurm.list_spec([0, 1, 2, 3, 9, 10], 2) == "0-3,9,10%2"


# --- Slurm output parsing --------------------------------------------------------------------


SCONTROL = (
    "JobId=185 ArrayJobId=184 ArrayTaskId=0 JobName=t x JobState=TIMEOUT Reason=TimeLimit Requeue=1 Restarts=1 "
    "ExitCode=0:0 RunTime=00:01:21 NodeList=n1 StdOut=/tmp/my runs/184_0.out Power=\n"
)

# `squeue -h -r -t all -j 184,190 -O ArrayJobID:|,ArrayTaskID:|,State:|,...` as Slurm 22.05
# prints it: exit_code is the raw wait status (768: exit 3; 9: killed by signal 9).
SQUEUE = (
    "184|0|TIMEOUT|TimeLimit|n1|1:21|0|1|\n"
    "184|1|FAILED|NonZeroExitCode|n2|0:02|768|0|\n"
    "184|2|PENDING|JobArrayTaskLimit||0:00|0|0|\n"
    "184|5|FAILED|JobLaunchFailure|n1|0:00|9|0|\n"
    "190|0|RUNNING|None|n2|1-02:03:04|0|2|\n"
    "191|N/A|RUNNING|None|n1|0:05|0|0|\n"
)


def test_scontrol_records_keep_values_with_spaces():
    (record,) = [parse_record(line) for line in SCONTROL.splitlines()]
    assert record["StdOut"] == "/tmp/my runs/184_0.out" and record["JobName"] == "t x" and record["Power"] == ""
    assert slurm.outcome([record]) == ("TIMEOUT", 0)


def test_squeue_rows():
    info = slurm.from_squeue([line.split("|") for line in SQUEUE.splitlines()])
    assert set(info) == {"184_0", "184_1", "184_2", "184_5", "190_0"}  # plain job 191 left out
    assert (info["184_0"].state, info["184_0"].restarts, info["184_0"].elapsed, info["184_0"].reason) == ("TIMEOUT", 1, 81, "TimeLimit")
    assert info["184_1"].exit_code == 3 and info["184_1"].node == "n2"
    assert info["184_2"].node is None and info["184_2"].reason == "JobArrayTaskLimit"
    assert info["184_5"].exit_code == 137
    assert info["190_0"].reason == "" and info["190_0"].elapsed == 93784 and info["190_0"].restarts == 2
    # squeue says exit_code 0 for an element that has not ended: a row shows no exit code then
    row = track.merge_task(2, slot("184", 2), info["184_2"], None, None, {}, now=NOW)
    assert row.state == "PENDING" and row.exit_code is None


def test_wait_status_codes():
    assert [slurm.parse_wait_status(t) for t in ("0", "256", "768", "9", "15", "", "N/A")] == [0, 1, 3, 137, 143, None, None]


def test_sacct_rows():
    rows = slurm.parse_sacct("184_0|TIMEOUT|81|0:15|cpu=1\n184_1|CANCELLED by 0|5|0:0|cpu=1\n184_[2-4]|PENDING|0|0:0|\n")
    info = slurm.from_sacct(rows)
    assert info["184_0"].state == "TIMEOUT" and info["184_0"].exit_code == 143
    assert info["184_1"].state == "CANCELLED"
    assert "184_[2-4]" not in info


def test_exit_and_duration_formats():
    assert slurm.parse_exit("0:0") == 0 and slurm.parse_exit("3:0") == 3 and slurm.parse_exit("0:9") == 137
    assert slurm.parse_duration("1-02:03:04") == 93784 and slurm.parse_duration("5:07") == 307
    assert slurm.parse_duration("INVALID") is None


# --- merging -------------------------------------------------------------------------------


def info(state, source="squeue", **kw):
    return slurm.SlurmInfo(state, source, **kw)


def test_live_state_wins_over_a_stale_end_record():
    record = {"start": NOW - 100, "exit_code": 1, "end": NOW - 90}
    row = track.merge_task(3, slot(), info("PENDING", "squeue", reason="BeginTime"), info("PENDING", restarts=1), None, record, now=NOW)
    assert row.state == "PENDING" and row.restarts == 1 and row.reason == "BeginTime"


def test_slurm_verdict_with_the_programs_own_exit_code():
    record = {"start": NOW - 10, "host": "h", "exit_code": 3, "end": NOW - 2, "node": "n1", "signals": ""}
    row = track.merge_task(1, slot(), None, info("FAILED", exit_code=3, node="n1"), None, record, now=NOW)
    assert (row.state, row.exit_code, row.node, row.elapsed, row.source) == ("FAILED", 3, "n1", 8, "squeue")


def test_program_stopped_by_the_warning_is_a_timeout():
    record = {"start": NOW - 40, "exit_code": 138, "end": NOW, "signals": "USR1"}
    row = track.merge_task(0, slot(), None, info("FAILED", exit_code=138), None, record, now=NOW)
    assert row.state == "TIMEOUT" and row.exit_code == 138 and "USR1" in row.reason


def test_records_alone_after_slurm_forgot():
    def state(**end):
        return track.merge_task(0, slot(), None, None, None, dict(start=NOW - 5, end=NOW, **end), now=NOW).state

    assert state(exit_code=0) == "COMPLETED"
    assert state(exit_code=2) == "FAILED"
    assert state(exit_code=143, signals="USR1 TERM") == "TIMEOUT"
    assert state(exit_code=143, signals="TERM") == "CANCELLED"
    assert state(exit_code=138, signals="USR1") == "TIMEOUT"
    assert state(exit_code=140, signals="USR2") == "FAILED"  # the warning is USR1 here
    started_only = track.merge_task(0, slot(), None, None, None, {"start": NOW - 5}, now=NOW)
    assert started_only.state == "UNKNOWN" and started_only.bucket == "failed"
    assert started_only.reason == "started, never ended: killed hard (SIGKILL, node lost)?"
    nothing = track.merge_task(0, slot(), None, None, None, {}, now=NOW)
    assert nothing.state == "UNKNOWN" and nothing.source == "none"
    assert nothing.reason == "never started: cancelled while pending?"  # Slurm keeps no trace of that


def test_accounting_fills_in_when_slurmctld_forgot():
    row = track.merge_task(0, slot(), None, None, info("OUT_OF_MEMORY", "sacct", exit_code=137, elapsed=12.0), {}, now=NOW)
    assert (row.state, row.exit_code, row.elapsed, row.source) == ("OUT_OF_MEMORY", 137, 12.0, "sacct")


def test_resubmitted_task_ignores_the_old_attempts_records():
    old = {"start": NOW - 100, "host": "h", "exit_code": 1, "end": NOW - 90}
    row = track.merge_task(7, slot("200", 4, since=NOW - 10), None, None, None, old, now=NOW)
    assert row.state == "UNKNOWN" and row.exit_code is None  # neither the old FAILED nor its code
    new = dict(old, start=NOW - 5, restart_count=0)  # the new attempt started: old end is stale
    row = track.merge_task(7, slot("200", 4, since=NOW - 10), info("RUNNING", "squeue"), None, None, new, now=NOW)
    assert row.state == "RUNNING" and row.elapsed == 5


def test_restart_count_from_records_and_squeue():
    record = {"start": NOW - 3, "restart_count": 2}
    row = track.merge_task(0, slot(), info("RUNNING", "squeue"), info("RUNNING", restarts=1), None, record, now=NOW)
    assert row.restarts == 2 and row.elapsed == 3


def test_local_and_planned_runs():
    assert track.merge_task(0, None, None, None, None, {}, backend="local").state == "PENDING"
    assert track.merge_task(0, None, None, None, None, {"start": NOW}, backend="local", now=NOW).state == "RUNNING"
    assert track.merge_task(0, None, None, None, None, {}, backend="planned").state == "PLANNED"


def test_a_local_task_whose_runner_is_gone_is_interrupted():
    gone = "its runner pid 7 on host h is gone"
    row = track.merge_task(0, None, None, None, None, {"start": NOW - 5}, backend="local", now=NOW, runner_gone=gone)
    assert (row.state, row.bucket, row.reason) == ("INTERRUPTED", "failed", gone)
    row = track.merge_task(1, None, None, None, None, {}, backend="local", now=NOW, runner_gone=gone)
    assert (row.state, row.reason) == ("INTERRUPTED", gone + "; never started")
    ended = {"start": NOW - 5, "end": NOW, "exit_code": 0}
    assert track.merge_task(2, None, None, None, None, ended, backend="local", runner_gone=gone).state == "COMPLETED"
    stopped = {"start": NOW - 5, "end": NOW, "exit_code": 130, "signals": "INT", "state": "INTERRUPTED"}
    row = track.merge_task(3, None, None, None, None, stopped, backend="local")
    assert (row.state, row.exit_code, row.reason) == ("INTERRUPTED", 130, "interrupted by SIGINT")
    row = track.merge_task(4, None, None, None, None, {"end": NOW, "exit_code": None, "state": "CANCELLED"}, backend="local")
    assert (row.state, row.reason) == ("CANCELLED", "cancelled by nexa cancel; never started")


def test_buckets_and_counts():
    rows = [
        track.TaskRow(i, s) for i, s in enumerate(["PENDING", "RUNNING", "COMPLETING", "COMPLETED", "TIMEOUT", "CANCELLED", "REQUEUED"])
    ]
    st = track.RunStatus("r", None, "n", "slurm", ["1"], [], rows)
    assert st.buckets == {"pending": 2, "running": 2, "done": 1, "failed": 2}
    assert st.failed == [4, 5] and not st.finished
    assert st.counts["PENDING"] == 1
    doc = st.to_json()
    assert doc["tasks"][4]["state"] == "TIMEOUT" and "exit_code" in doc["tasks"][4] and doc["tasks"][4]["index"] == 4


def test_varying_keys_and_log_paths():
    tasks = [{"params": {"lr": 0.1, "seed": 1}}, {"params": {"lr": 0.2, "seed": 1}}]
    assert track.varying_keys(tasks) == ["lr"]
    assert track.varying_keys(tasks[:1]) == ["lr", "seed"]
    assert slurm.log_path("/r/logs/%A_%a.out", "55", 3) == "/r/logs/55_3.out"
    text = '#SBATCH --output="/my runs/%A_%a.out"\n#SBATCH --signal=B:USR2@60\n'
    assert slurm.script_directive(text, "output") == "/my runs/%A_%a.out"


# --- run folders -----------------------------------------------------------------------------


def make_run(tmp_path, backend="slurm", count=3):
    run = tmp_path / "runs" / "demo-1"
    (run / "tasks").mkdir(parents=True)
    spec = {"name": "demo", "count": count, "tasks": [{"index": i, "params": {"i": i}, "argv": ["x"]} for i in range(count)]}
    (run / "spec.json").write_text(json.dumps(spec))
    if backend:
        (run / "manifest.json").write_text(json.dumps({"run_id": "demo-1", "name": "demo", "backend": backend, "tasks": count}))
    return run


def test_a_status_parses_the_script_once_not_once_per_task(tmp_path, monkeypatch):
    """10,000 tasks: the warning signal each task's row needs is read from the script once."""
    run = make_run(tmp_path, backend="local", count=50)
    (run / "demo.sbatch").write_text("#!/bin/bash\n#SBATCH --signal=B:USR1@120\n")
    parsed = []
    real = runs.warn_signal_of
    monkeypatch.setattr(runs, "warn_signal_of", lambda text: parsed.append(1) or real(text))
    assert len(track.status(str(run)).tasks) == 50 and len(parsed) == 1


def test_status_of_a_local_run_from_records(tmp_path):
    from nexa_ops.config import load_config

    run = make_run(tmp_path, backend="local")
    (run / "tasks" / "0.start.json").write_text(json.dumps({"start": NOW - 2, "host": "h"}))
    (run / "tasks" / "0.end.json").write_text(json.dumps({"exit_code": 0, "end": NOW}))
    (run / "tasks" / "1.end.json").write_text(json.dumps({"exit_code": 4, "end": NOW}))
    cfg = load_config(cwd=tmp_path)
    st = track.status("demo-1", config=cfg)  # a run id under the runs directory
    assert [t.state for t in st.tasks] == ["COMPLETED", "FAILED", "PENDING"]
    assert st.tasks[1].exit_code == 4 and st.tasks[0].elapsed == 2
    assert st.tasks[0].log.endswith("logs/local_0.out")
    assert track.status(None, config=cfg).run_dir == run.resolve()  # the latest run
    with pytest.raises(Refused):
        control.cancel(str(run), config=cfg)


def test_unknown_run_and_planned_run(tmp_path):
    from nexa_ops.config import load_config
    from nexa_ops.errors import ConfigError

    cfg = load_config(cwd=tmp_path)
    with pytest.raises(ConfigError, match="no runs in"):
        track.status(None, config=cfg)
    run = make_run(tmp_path, backend=None)
    with pytest.raises(ConfigError, match="not a run folder"):
        track.status("nope", config=cfg)
    assert {t.state for t in track.status(str(run), config=cfg).tasks} == {"PLANNED"}
    with pytest.raises(ConfigError, match="not submitted"):
        track.wait(str(run), config=cfg)


DAMAGE = [
    ("manifest.json", [], "manifest.json: not a nexa run manifest: expected a JSON object, got []"),
    (
        "manifest.json",
        {"backend": "slurm", "job_ids": ["7"], "chunks": [{"offset": "a", "count": 3, "job_id": "7"}]},
        'manifest.json: not a nexa run manifest: chunks[0].offset must be an integer, got "a"',
    ),
    (
        "manifest.json",
        {"backend": "slurm", "job_ids": ["7"], "chunks": [{"offset": 0, "job_id": "7", "array": "1-"}]},
        'manifest.json: not a nexa run manifest: chunks[0].array must be an array index spec like 0,4,7-9, got "1-"',
    ),
    ("manifest.json", {"backend": "slurm", "tasks": "3"}, 'manifest.json: not a nexa run manifest: tasks must be an integer, got "3"'),
    ("manifest.json", {"backend": "slurm", "resubmits": {}}, "manifest.json: not a nexa run manifest: resubmits must be a list, got {}"),
    ("spec.json", {"tasks": 5}, "spec.json: not a nexa run spec: tasks must be a list, got 5"),
    ("spec.json", {"tasks": [{"index": "0"}]}, 'spec.json: not a nexa run spec: tasks[0].index must be an integer, got "0"'),
    ("spec.json", {"tasks": [{"index": 0, "params": []}]}, "spec.json: not a nexa run spec: tasks[0].params must be an object, got []"),
]


@pytest.mark.parametrize("name, content, message", DAMAGE)
def test_a_damaged_run_folder_is_a_config_error_naming_the_file(tmp_path, name, content, message):
    from nexa_ops.config import load_config
    from nexa_ops.errors import ConfigError

    run = make_run(tmp_path)
    (run / name).write_text(json.dumps(content))
    cfg = load_config(cwd=tmp_path)
    expected = f"{run.resolve()}/{message}"
    for act in (
        track.status,
        lambda r, config: control.cancel(r, dry_run=True, config=config),
        lambda r, config: control.resubmit_failed(r, dry_run=True, config=config),
    ):
        with pytest.raises(ConfigError) as exc:
            act("demo-1", config=cfg)
        assert str(exc.value) == expected


def test_damaged_task_records_are_ignored(tmp_path):
    run = make_run(tmp_path, backend="local", count=4)
    (run / "tasks" / "0.start.json").write_text(json.dumps({"start": NOW - 2, "host": "h"}))
    (run / "tasks" / "0.end.json").write_text(json.dumps({"exit_code": 0, "end": NOW}))
    (run / "tasks" / "1.end.json").write_text("[1]")
    (run / "tasks" / "2.end.json").write_text(json.dumps({"exit_code": "1", "end": NOW}))
    (run / "tasks" / "3.start.json").write_text(json.dumps({"start": "yesterday"}))
    (run / "tasks" / "3.end.json").write_text('"done"')
    (run / "tasks" / "notes.json").write_text("{}")
    assert list(runs.task_records(run)) == [0]
    st = track._status(run, track._Sources())
    assert [t.state for t in st.tasks] == ["COMPLETED", "PENDING", "PENDING", "PENDING"]


def calls_per_file(log_text, under):
    """``{path: [syscall names]}`` for the files under ``under``, from an ``strace -f`` log
    (file descriptors followed from openat to close, per process)."""
    fds, out = {}, {}
    for line in log_text.splitlines():
        match = re.match(r"(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)", line)
        if not match:
            continue
        pid, name, args, result = match.groups()
        if name in ("openat", "open"):
            path = re.search(r'"([^"]*)"', args).group(1)
            if path.startswith(under) and int(result) >= 0:
                fds[(pid, int(result))] = path
                out.setdefault(path, []).append(name)
            continue
        fd = re.match(r"(\d+)", args)
        path = fds.get((pid, int(fd.group(1)))) if fd else None
        if path:
            out[path].append(name)
            if name == "close":
                del fds[(pid, int(fd.group(1)))]
    return out


def test_status_reads_each_record_once_with_three_calls(tmp_path):
    """On a network file system every call is a round trip: status scans tasks/ once and
    reads each record with one open, one read and one close; nothing is opened twice."""
    require_tool("strace")
    run = make_run(tmp_path, backend="local", count=200)
    for i in range(200):
        (run / "tasks" / f"{i}.start.json").write_text(json.dumps({"start": NOW - 2, "host": "h"}))
        (run / "tasks" / f"{i}.end.json").write_text(json.dumps({"exit_code": i % 2, "end": NOW}))
    log = tmp_path / "strace.log"
    traced = "trace=openat,open,read,close,getdents64,newfstatat,fstat,statx,lseek,ioctl,pread64"
    argv = ["strace", "-f", "-e", traced, "-o", str(log), sys.executable, "-m", "nexa_ops", "status", str(run)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0 and "100 COMPLETED, 100 FAILED" in out.stdout, out.stderr
    files = calls_per_file(log.read_text(), str(run.resolve()))
    records = {p: c for p, c in files.items() if p.endswith(".json") and "/tasks/" in p}
    assert len(records) == 400 and all(c == ["openat", "read", "close"] for c in records.values()), records
    assert files[str(run.resolve() / "tasks")].count("openat") == 1  # one scan of tasks/
    assert all(c.count("openat") + c.count("open") == 1 for c in files.values()), files  # nothing read twice


def test_cli_damaged_run_is_one_line(tmp_path, nexa_cli):
    run = make_run(tmp_path)
    (run / "manifest.json").write_text(json.dumps({"backend": "slurm", "chunks": [{"offset": "a"}]}))
    for args in (("status",), ("cancel", "--dry-run"), ("resubmit", "--failed", "--dry-run")):
        out = nexa_cli(*args, "demo-1")
        assert (out.returncode, out.stderr) == (
            2,
            f'nexa: error: {run.resolve()}/manifest.json: not a nexa run manifest: chunks[0].offset must be an integer, got "a"\n',
        ), args
    (run / "manifest.json").write_text(json.dumps({"run_id": "demo-1", "backend": "local", "tasks": 3}))
    (run / "tasks" / "0.end.json").write_text("[1]")
    out = nexa_cli("status", "demo-1", "--json")
    assert out.returncode == 0, out.stderr
    assert [t["state"] for t in json.loads(out.stdout)["tasks"]] == ["PENDING"] * 3


# --- following a run: polls that back off, the run folder watched in between -----------------


def test_polls_back_off_from_2_s_to_the_ceiling_and_start_again_on_news():
    pauses, pause = [], None
    for news in [False] * 8 + [True] + [False] * 2:
        pause = track.next_pause(pause, news, ceiling=60)
        pauses.append(pause)
    assert pauses == [2, 4, 8, 16, 32, 60, 60, 60, 2, 4, 8]
    pause, pauses = None, []
    for _ in range(10):
        pause = track.next_pause(pause, False)
        pauses.append(pause)
    assert pauses == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]  # the default ceiling, --poll 300
    assert track.next_pause(8, False, ceiling=10) == 10
    assert track.next_pause(None, False, ceiling=1) == 1 and track.next_pause(1, False, ceiling=1) == 1  # --poll 1
    assert track.next_pause(None, False, ceiling=0) == 0.1  # never a busy loop


def statuses(*rows):
    tasks = [track.TaskRow(index=i, state=state, restarts=restarts) for i, (state, restarts) in enumerate(rows)]
    return track.RunStatus("r", None, "n", "slurm", ["1"], [], tasks)


def test_news_is_what_the_run_folder_did_not_show():
    before = statuses(("RUNNING", 0), ("PENDING", 0))
    assert not track.slurm_news(before, statuses(("COMPLETED", 0), ("RUNNING", 0)))  # the records show these
    assert not track.slurm_news(before, statuses(("COMPLETING", 0), ("PENDING", 0)))
    assert track.slurm_news(before, statuses(("CANCELLED", 0), ("PENDING", 0)))  # ended badly, no end record
    assert track.slurm_news(before, statuses(("RUNNING", 0), ("UNKNOWN", 0)))  # gone while pending
    assert track.slurm_news(before, statuses(("PENDING", 1), ("PENDING", 0)))  # requeued
    over = statuses(("COMPLETED", 0), ("FAILED", 0))
    assert track.slurm_news(over, statuses(("COMPLETING", 0), ("FAILED", 0)))  # over by the records, not yet by Slurm
    assert not track.slurm_news(over, over)


def test_records_written_after_a_poll_say_what_a_task_is_now(tmp_path):
    run_dir = make_run(tmp_path, count=3)
    chunks = [{"offset": 0, "count": 3, "job_id": "100"}]
    manifest = {"run_id": "demo-1", "backend": "slurm", "tasks": 3, "job_ids": ["100"], "chunks": chunks}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    run = runs.load_run(run_dir)
    answer = track._Answer(live={"100_0": info("RUNNING"), "100_1": info("RUNNING"), "100_2": info("PENDING")})
    records = {0: {"start": NOW - 5, "exit_code": 0, "end": NOW}, 2: {"start": NOW - 1, "host": "n1"}}

    def look(fresh=()):
        return track._status(run_dir, track._Sources(), run=run, records=records, answer=answer, fresh=fresh)

    assert [t.state for t in look().tasks] == ["RUNNING", "RUNNING", "PENDING"]  # Slurm's word
    assert [(t.state, t.source) for t in look({0, 2}).tasks] == [("COMPLETED", "record"), ("RUNNING", "squeue"), ("RUNNING", "record")]


def test_the_follower_reads_only_what_changed_in_the_run_folder(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, backend="local", count=3)
    tasks = run_dir / "tasks"
    (tasks / "0.start.json").write_text(json.dumps({"start": NOW - 2, "host": "h"}))
    follower = track._Follower(run_dir)
    assert [t.state for t in follower.poll().tasks] == ["RUNNING", "PENDING", "PENDING"]
    assert follower.confirmed and follower.pause == track.FOLDER_EVERY  # a local run: no scheduler to spare
    read, scans = [], []
    real, real_names = runs.read_small, runs.task_names
    monkeypatch.setattr(runs, "read_small", lambda path: read.append(os.path.basename(path)) or real(path))
    monkeypatch.setattr(runs, "task_names", lambda run: scans.append(run) or real_names(run))
    follower.look()
    assert not scans and not read  # nothing changed: one stat, no scan, nothing read
    (tasks / "0.end.json").write_text(json.dumps({"exit_code": 0, "end": NOW}))
    (tasks / "1.start.json").write_text(json.dumps({"start": NOW - 1, "host": "h"}))
    os.utime(tasks, ns=(time.time_ns(), time.time_ns() + 10**9))  # a coarse-clock file system: the folder did change
    st = follower.look()
    assert sorted(read) == ["0.end.json", "0.start.json", "1.start.json"] and len(scans) == 1  # task 2's files are not read
    assert [t.state for t in st.tasks] == ["COMPLETED", "RUNNING", "PENDING"] and not follower.confirmed
    (tasks / "0.end.json").unlink()  # a new attempt starts: the script removes the old end record
    os.utime(tasks, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert follower.look().tasks[0].state == "RUNNING" and follower.records[0] == {"start": NOW - 2, "host": "h"}


def test_the_follower_asks_slurm_at_once_when_every_task_has_ended(tmp_path, monkeypatch):
    """Between polls only the folder is looked at; when it shows every task over, the next
    step polls at once (Slurm confirms), and wait returns that confirmed status."""
    run_dir = make_run(tmp_path, count=2)
    chunks = [{"offset": 0, "count": 2, "job_id": "100"}]
    manifest = {"run_id": "demo-1", "backend": "slurm", "tasks": 2, "job_ids": ["100"], "chunks": chunks}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    asked = []
    states = {"100_0": "RUNNING", "100_1": "RUNNING"}

    def queue_rows(job_ids):
        asked.append(list(job_ids))
        return [[*e.split("_"), s, "None", "n1", "0:01", "0", "0"] for e, s in states.items()]

    monkeypatch.setattr(slurm, "queue_rows", queue_rows)
    monkeypatch.setattr(slurm, "sacct", lambda ids: pytest.fail("sacct while following"))
    follower = track._Follower(run_dir)
    assert follower.poll().buckets["running"] == 2 and follower.pause == 2 and asked == [["100"]]
    for i in (0, 1):
        (run_dir / "tasks" / f"{i}.start.json").write_text(json.dumps({"start": NOW - 2, "host": "n1"}))
        (run_dir / "tasks" / f"{i}.end.json").write_text(json.dumps({"exit_code": 0, "end": NOW}))
    os.utime(run_dir / "tasks", ns=(time.time_ns(), time.time_ns() + 10**9))
    st = follower.look()
    assert st.finished and not follower.confirmed and len(asked) == 1 and follower.next_poll == 0
    states.update({"100_0": "COMPLETED", "100_1": "COMPLETED"})
    st = follower.step()
    assert st.finished and follower.confirmed and len(asked) == 2
    # A new manifest (a resubmission, a new rung) names jobs the last answer does not know:
    # the next look that sees the run folder change asks Slurm at once.
    os.utime(run_dir / "manifest.json", ns=(time.time_ns(), time.time_ns() + 3 * 10**9))
    (run_dir / "tasks" / "1.start.json").write_text(json.dumps({"start": NOW - 1, "host": "n1"}))
    os.utime(run_dir / "tasks", ns=(time.time_ns(), time.time_ns() + 4 * 10**9))
    follower.look()
    assert len(asked) == 3 and follower.confirmed


def test_follow_prints_everything_then_stops(tmp_path):
    out, err = tmp_path / "a.out", tmp_path / "a.err"
    out.write_text("one\n")
    chunks = list(track.follow([out, err, None], done=lambda: True, poll=0.01))
    assert chunks == [(0, "one\n")]


# --- the array script's signals, run by bash (no Slurm: the requeue is off) -----------------


def test_signal_directives():
    assert signal_directives(Resources()) == ["#SBATCH --signal=B:USR1@120"]
    assert warn_seconds(Resources(time="1")) == 30  # never more than half a short limit
    assert warn_seconds(Resources(time="04:00:00", signal_seconds=300)) == 300
    lines = signal_directives(Resources(requeue=True, signal="USR2", signal_seconds=90))
    assert lines == ["#SBATCH --signal=B:USR2@90", "#SBATCH --requeue", "#SBATCH --open-mode=append"]


PROGRAM = """
import os, signal, sys, time
def warned(sig, frame):
    print("warned", flush=True)
    if os.environ.get("EXIT_ON_WARN"):
        sys.exit(0)
if os.environ.get("HANDLE"):
    signal.signal(signal.SIGUSR1, warned)
print("started", flush=True)
time.sleep(float(os.environ.get("SLEEP", "30")))
"""


@pytest.fixture
def script(tmp_path):
    require_tool("bash")
    (tmp_path / "prog.py").write_text(PROGRAM)
    run = tmp_path / "run"
    (run / "tasks").mkdir(parents=True)
    spec = {
        "name": "s",
        "workdir": str(tmp_path),
        "run_dir": str(run),
        "count": 1,
        "tasks": [{"index": 0, "params": {}, "argv": [sys.executable, str(tmp_path / "prog.py")]}],
    }
    (run / "spec.json").write_text(json.dumps(spec))
    from nexa_ops.resources import package_root

    text = render_array_script(
        name="s",
        res=Resources(time="10"),
        cluster=ClusterConfig(),
        count=1,
        spec_path=str(run / "spec.json"),
        run_dir=str(run),
        log_dir=str(run / "logs"),
        workdir=str(tmp_path),
        worker_path=str(package_root()),
        python=sys.executable,
    )
    path = run / "s.sbatch"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    return path


def test_script_is_shellcheck_clean(script):
    require_tool("shellcheck")
    out = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def start(path, **env):
    full = dict(os.environ, SLURM_ARRAY_TASK_ID="0", SLURMD_NODENAME="nodeA", **env)
    full.pop("SLURM_RESTART_COUNT", None)
    proc = subprocess.Popen(["bash", str(path)], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = proc.stdout.readline()
    assert started.strip() == "started"
    return proc


def end_record(path):
    return json.loads((path.parent / "tasks" / "0.end.json").read_text())


def test_warning_is_forwarded_and_the_program_exits_cleanly(script):
    proc = start(script, HANDLE="1", EXIT_ON_WARN="1")
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(10) == 0
    end = end_record(script)
    assert end["exit_code"] == 0 and end["signals"] == "USR1" and end["node"] == "nodeA"


def test_program_without_a_handler_dies_of_the_warning(script):
    proc = start(script)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(10) == 128 + signal.SIGUSR1
    end = end_record(script)
    assert end["exit_code"] == 138 and runs.record_state(end) == "TIMEOUT"


def test_warning_then_term_is_a_time_limit(script):
    proc = start(script, HANDLE="1")
    proc.send_signal(signal.SIGUSR1)
    assert proc.stdout.readline().strip() == "warned"  # still running: checkpointed
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 143
    end = end_record(script)
    assert end["signals"] == "USR1 TERM" and runs.record_state(end) == "TIMEOUT"


def test_interrupt_reaches_the_background_program(script):
    """bash starts background jobs with SIGINT ignored; the stub restores it."""
    proc = start(script)
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(out) == 1
    os.kill(int(out[0]), signal.SIGINT)
    assert proc.wait(10) == 130
    assert end_record(script)["exit_code"] == 130


def test_stale_end_record_is_removed_when_a_new_attempt_starts(script):
    (script.parent / "tasks" / "0.end.json").write_text('{"exit_code": 1}')
    proc = start(script, SLEEP="0.5")
    assert not (script.parent / "tasks" / "0.end.json").exists()
    assert proc.wait(10) == 0 and end_record(script)["exit_code"] == 0


def test_run_is_positional_only_when_a_word_is_given():
    from invoke import Task

    import nexa_ops.cli  # noqa: F401 - loading the program sets the one commands ask (common.PROGRAM)
    from nexa_ops.commands.common import run_word_given
    from nexa_ops.commands.track import logs

    args = Task.get_arguments(logs)
    assert not run_word_given(["logs"], "logs", args)
    assert run_word_given(["logs", "my-run"], "logs", args)
    assert run_word_given(["logs", "--task", "3", "--follow", "my-run"], "logs", args)
    assert not run_word_given(["logs", "--task", "3", "--follow"], "logs", args)
    assert not run_word_given(["logs", "--task=3", "--project", "p.toml"], "logs", args)
    assert not run_word_given(["logs", "status"], "logs", args)  # another task, not a run
    assert not run_word_given(["status", "x"], "logs", args)


def test_cli_run_word_is_optional(tmp_path, nexa_cli):
    out = nexa_cli("status", "--json")
    assert out.returncode == 2 and "no runs in" in out.stderr
    out = nexa_cli("status", "nope", "--json")
    assert out.returncode == 2 and "nope: not a run folder" in out.stderr
    run = make_run(tmp_path, backend="local", count=2)
    (run / "tasks" / "1.end.json").write_text(json.dumps({"exit_code": 0, "end": NOW}))
    out = nexa_cli("status", "--json")
    assert out.returncode == 0, out.stderr
    assert [(t["index"], t["state"], t["exit_code"]) for t in json.loads(out.stdout)["tasks"]] == [
        (0, "PENDING", None),
        (1, "COMPLETED", 0),
    ]
    out = nexa_cli("resubmit", "demo-1", "--failed")
    assert out.returncode == 3 and "ran locally" in out.stderr


def test_a_job_slurm_gave_up_before_it_started_has_no_exit_code_or_run_time():
    """Cancelled for a dependency that can never be met: `squeue -t all` still prints exit
    status 0 and a run time of 0:00, but no node ever held it (rows as Slurm 22.05 prints them)."""
    rows = [
        "321|0|CANCELLED|DependencyNeverSatisfied||0:00|0|0|",
        "321|1|CANCELLED|DependencyNeverSatisfied||0:00|0|0|",
        "322|0|FAILED|NonZeroExitCode|n1|0:01|768|0|",
        "322|1|FAILED|NonZeroExitCode|n1|0:01|9|1|",
        "320|N/A|FAILED|NonZeroExitCode|n1|0:00|768|0|",
    ]
    info = slurm.from_squeue([line.split("|") for line in rows])
    assert set(info) == {"321_0", "321_1", "322_0", "322_1"}  # a plain job is not an element
    got = info["321_0"]
    assert (got.state, got.reason, got.exit_code, got.elapsed) == ("CANCELLED", "DependencyNeverSatisfied", None, None)
    assert (info["322_0"].exit_code, info["322_0"].elapsed, info["322_0"].node) == (3, 1.0, "n1")
    assert (info["322_1"].exit_code, info["322_1"].restarts) == (128 + 9, 1)  # killed by SIGKILL, requeued once
