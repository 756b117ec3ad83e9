"""Pipelines without a scheduler: --after parsing, what a dependency names, how the
downstream run is cut into submissions, the checks, the variables, and how status explains
a waiting or cancelled task. The real Slurm side is tests/test_pipeline_slurm.py."""

import json
from pathlib import Path

import pytest

from nexa_ops import pipeline, runs, track
from nexa_ops.commands.track import render_status
from nexa_ops.config import load_config
from nexa_ops.errors import ConfigError, Refused
from nexa_ops.pipeline import After, Submission, Upstream, UpTask
from nexa_ops.tools import slurm

# --- --after -------------------------------------------------------------------------------


def test_after_forms():
    assert pipeline.parse_after("train-2026") == After("train-2026", "ok")
    assert pipeline.parse_after("train-2026:any") == After("train-2026", "any")
    assert pipeline.parse_after("runs/train:corr") == After("runs/train", "corr")
    assert pipeline.parse_after("/data/a:b/run") == After("/data/a:b/run", "ok")  # a ':' inside a path
    assert pipeline.parse_afters(None) == [] and pipeline.parse_afters("x:ok") == [After("x")]


@pytest.mark.parametrize("text, message", [("x:okay", "kind 'okay'"), (":ok", "no run"), ("", "RUN[:ok|any|corr]"), ("a\nb", "RUN")])
def test_bad_after_names_the_option(text, message):
    with pytest.raises(ConfigError, match=r"^--after: expected RUN\[:ok\|any\|corr\]") as exc:
        pipeline.parse_after(text)
    assert message in str(exc.value)


# --- the Slurm text ------------------------------------------------------------------------


def test_dependency_text():
    assert slurm.dependency_part("ok", ["12", "13_4"]) == "afterok:12:13_4"
    assert slurm.dependency_part("any", ["12"]) == "afterany:12"
    assert slurm.dependency_part("corr", ["12"]) == "aftercorr:12"
    assert slurm.dependency_options([]) == []
    assert slurm.dependency_options(["afterok:1", "aftercorr:2"]) == ["--dependency=afterok:1,aftercorr:2", "--kill-on-invalid-dep=yes"]


# --- what to wait for ----------------------------------------------------------------------


def up(kind="ok", states=("RUNNING",), jobs=None, elements=None, whole=None, live=True, run_id="A"):
    """An upstream of tasks in ``states``, one array job "10" with element = index unless told."""
    jobs = jobs or ["10"] * len(states)
    elements = elements if elements is not None else list(range(len(states)))
    rows = enumerate(zip(states, jobs, elements))
    tasks = [UpTask(i, s, live and runs.bucket(s) in ("pending", "running"), j, e) for i, (s, j, e) in rows]
    return Upstream(After(run_id, kind), Path(f"/r/{run_id}"), run_id, tasks, whole if whole is not None else dict.fromkeys(jobs, True))


def test_targets_name_whole_jobs_and_only_what_is_not_over():
    assert pipeline.targets(up(states=("RUNNING", "PENDING", "COMPLETED"))) == ["10"]
    assert pipeline.targets(up(states=("COMPLETED", "COMPLETED"))) == []
    # task 1 resubmitted as job 20: job 10 is named element by element (its element 1 failed)
    resubmitted = up(states=("RUNNING", "PENDING", "RUNNING"), jobs=["10", "20", "10"], elements=[0, 0, 2], whole={"10": False, "20": True})
    assert pipeline.targets(resubmitted) == ["10_0", "20", "10_2"]


def test_whole_jobs_from_a_manifest_with_a_resubmission():
    manifest = {
        "job_ids": ["10", "11", "20"],
        "chunks": [
            {"offset": 0, "count": 25, "job_id": "10"},
            {"offset": 25, "count": 5, "job_id": "11"},
            {"offset": 3, "count": 1, "job_id": "20", "array": "0", "submitted_at": 1.0},
        ],
    }
    assert pipeline.whole_jobs(manifest) == {"10": False, "11": True, "20": True}


def test_check_refuses_what_could_never_start():
    pipeline.check([up("any", ("COMPLETED", "FAILED"))], 5)  # any: a failure is fine
    pipeline.check([up("ok", ("COMPLETED", "RUNNING"))], 5)
    for kind in ("ok", "corr"):
        with pytest.raises(Refused) as exc:
            pipeline.check([up(kind, ("COMPLETED", "FAILED", "TIMEOUT"))], 3, "this sweep")
        assert f"refusing --after A:{kind}: A task(s) 1, 2 failed, so this sweep could never start" in str(exc.value)
        assert "nexa resubmit A --failed" in str(exc.value) and "A:any" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        pipeline.check([up("corr", ("RUNNING",) * 4)], 3, "this sweep")
    assert str(exc.value) == "--after A:corr: A has 4 task(s) and this sweep 3: corr pairs task i with task i, so the counts must be equal"
    with pytest.raises(Refused, match="task\\(s\\) 0 are not over and not in Slurm's queue"):
        pipeline.check([up("ok", ("RUNNING",), live=False)], 1)


# --- cutting the downstream run --------------------------------------------------------------


def subs(*items):
    return [Submission(o, list(i), list(p)) for o, i, p in items]


def test_without_corr_the_usual_chunks_each_wait_on_everything():
    ups = [up("ok", ("RUNNING",)), up("any", ("PENDING",), jobs=["30"], run_id="B")]
    assert pipeline.plan(30, ups, 25) == subs((0, range(25), ["afterok:10", "afterany:30"]), (25, range(5), ["afterok:10", "afterany:30"]))
    assert pipeline.plan(3, [], 25) == subs((0, range(3), []))
    assert pipeline.plan(3, [up("ok", ("COMPLETED",))], 25) == subs((0, range(3), []))  # over: no dependency


def fresh_chunks(count, limit, first_job=10):
    """An upstream submitted as chunks of ``limit`` (jobs 10, 11, ...), every task running."""
    jobs = [str(first_job + i // limit) for i in range(count)]
    return up("corr", ("RUNNING",) * count, jobs=jobs, elements=[i % limit for i in range(count)])


def test_corr_cuts_where_the_upstream_chunks_are():
    plan = pipeline.plan(57, [fresh_chunks(57, 25)], 25)
    assert [(s.offset, len(s.indices), s.parts) for s in plan] == [
        (0, 25, ["aftercorr:10"]),
        (25, 25, ["aftercorr:11"]),
        (50, 7, ["aftercorr:12"]),
    ]
    assert all(s.regular for s in plan)
    # a smaller MaxArraySize here changes nothing: the upstream's cut is the one that pairs
    assert pipeline.plan(57, [fresh_chunks(57, 25)], 10) == plan


def test_corr_with_done_and_resubmitted_upstream_tasks():
    # task 1 was resubmitted (job 20, array index 0, offset 1); task 3 is already done
    upstream = up(
        "corr",
        ("RUNNING", "PENDING", "RUNNING", "COMPLETED"),
        jobs=["10", "20", "10", "10"],
        elements=[0, 0, 2, 3],
        whole={"10": False, "20": True},
    )
    plan = pipeline.plan(4, [upstream, up("ok", ("RUNNING",), jobs=["40"], run_id="B")], 25)
    assert [(s.offset, s.indices, s.parts) for s in plan] == [
        (0, [0, 2], ["afterok:40", "aftercorr:10"]),  # tasks 0 and 2: array indices 0 and 2 of job 10
        (1, [0], ["afterok:40", "aftercorr:20"]),  # task 1 at offset 1, as its resubmission
        (3, [0], ["afterok:40"]),  # task 3: its upstream task is done, only the ok dependency
    ]
    assert not plan[0].regular and plan[1].regular


def test_two_corr_upstreams_must_agree():
    a, b = fresh_chunks(30, 25), fresh_chunks(30, 25, first_job=50)
    b.after, b.run_id = After("B", "corr"), "B"
    assert [s.parts for s in pipeline.plan(30, [a, b], 25)] == [["aftercorr:10", "aftercorr:50"], ["aftercorr:11", "aftercorr:51"]]
    odd = fresh_chunks(30, 10, first_job=50)
    odd.after, odd.run_id = After("B", "corr"), "B"
    with pytest.raises(ConfigError, match="task 10 is array index 0 of B's job 51 but index 10 of the other"):
        pipeline.plan(30, [a, odd], 25)


def test_a_plain_job_waits_on_the_element():
    """A launch downstream is no array: corr becomes afterok on the one upstream element;
    a launch upstream is a plain job id."""
    assert pipeline.plan(1, [up("corr", ("RUNNING",), jobs=["10"], elements=[0])], 1, array=False) == subs((0, [0], ["afterok:10_0"]))
    launch = up("corr", ("PENDING",), jobs=["77"], elements=[None])
    assert pipeline.plan(1, [launch], 25) == subs((0, [0], ["afterok:77"]))
    assert pipeline.plan(1, [up("ok", ("PENDING",), jobs=["77"], elements=[None])], 1, array=False) == subs((0, [0], ["afterok:77"]))


def test_record_says_what_was_decided_from_what():
    entries = pipeline.record([up("ok", ("COMPLETED", "RUNNING")), up("any", ("COMPLETED", "FAILED"), run_id="B")])
    assert entries[0] == {
        "run_id": "A",
        "run_dir": "/r/A",
        "kind": "ok",
        "tasks": 2,
        "decided_by": "slurm",
        "waiting": 1,
        "done": 1,
        "failed": [],
        "targets": ["10"],
    }
    assert (entries[1]["decided_by"], entries[1]["failed"], entries[1]["targets"]) == ("records", [1], [])


def test_env_lines_are_quoted():
    assert pipeline.env_lines([], '"$index"') == "# no upstream run (--after)"
    a, b = up("ok"), up("corr", run_id="my run")
    text = pipeline.env_lines([a, b], '"$index"')
    assert text == (
        "export NEXA_UPSTREAM_RUN_DIR=/r/A NEXA_UPSTREAM_RUN_DIRS='/r/A:/r/my run'\n"
        "export NEXA_UPSTREAM_TASK_DIR='/r/my run/out'/\"$index\""
    )


# --- status -------------------------------------------------------------------------------


AFTER = [{"run_id": "A", "kind": "ok", "decided_by": "slurm"}, {"run_id": "B", "kind": "corr", "decided_by": "slurm"}]


def test_status_reason_names_the_upstream_runs():
    row = track.TaskRow(3, "PENDING", reason="Dependency", source="squeue", job_id="9_3")
    never = lambda: pytest.fail("the upstream runs are read only for a cancelled task")  # noqa: E731
    assert track.dependency_reason(row, AFTER, never) == "waiting for A (ok), B task 3"
    row = track.TaskRow(3, "CANCELLED", reason="DependencyNeverSatisfied", source="scontrol", job_id="9_3")
    assert track.dependency_reason(row, AFTER, lambda: {"A": [0, 5], "B": [3]}) == (
        "cancelled by Slurm: dependency never satisfied (A task(s) 0, 5 failed; B task 3 failed)"
    )
    assert track.dependency_reason(row, AFTER, lambda: {}) == "cancelled by Slurm: dependency never satisfied"
    gone = track.TaskRow(1, "UNKNOWN", reason="never started: cancelled while pending?", source="none", job_id="9_1")
    assert track.dependency_reason(gone, AFTER, lambda: {"A": [2], "B": [3]}) == (
        "never started: Slurm cancelled it as A task(s) 2 failed (dependency never satisfied)"
    )
    assert track.dependency_reason(gone, AFTER, lambda: {}) == "never started: cancelled while pending?"


def test_status_header_shows_the_commit_and_the_upstream_runs():
    st = track.RunStatus("b-1", Path("/r/b-1"), "b", "slurm", ["12"], [], [], after=AFTER[:1], commit="4667b7793f1d022b", dirty=True)
    head = render_status(st).splitlines()[:2]
    assert head == ["Run b-1 (slurm, jobs 12, commit 4667b7793f (dirty))", "After A (ok): waited on by Slurm"]
    doc = st.to_json()
    assert (doc["commit"], doc["dirty"], doc["after"]) == ("4667b7793f1d022b", True, AFTER[:1])
    clean = track.RunStatus("b-1", Path("/r/b-1"), "b", "local", [], [], [], commit="abc")
    assert render_status(clean).splitlines()[0] == "Run b-1 (local, commit abc)"


# --- RUN: a run id, a folder or the start of a run id ------------------------------------------


def test_run_prefixes(tmp_path):
    for name in ("train-20261201-1", "train-20261201-2", "eval-20261201-1"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "manifest.json").write_text(json.dumps({"backend": "local"}))
    cfg = load_config(cwd=tmp_path)
    assert runs.resolve_run("eval", cfg) == (tmp_path / "runs" / "eval-20261201-1").resolve()
    assert runs.resolve_run("train-20261201-2", cfg).name == "train-20261201-2"
    with pytest.raises(ConfigError, match="train: ambiguous run prefix, 2 runs in .* start with it: train-20261201-1, train-20261201-2"):
        runs.resolve_run("train", cfg)
    with pytest.raises(ConfigError, match="nope: not a run folder or a run id in"):
        runs.resolve_run("nope", cfg)
    with pytest.raises(ConfigError, match="not a run folder"):
        runs.resolve_run("../runs", cfg)
