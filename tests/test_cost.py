"""Cost manifests, reconcile from the worker's records, reports, and concurrent writers."""

import csv
import io
import json
import multiprocessing
import os
import time

import pytest

from nexa_ops.config import CostConfig, Resources
from nexa_ops.cost import actual, book, pricing, report
from nexa_ops.cost import estimate as estimate_mod
from nexa_ops.cost import reconcile as reconcile_mod
from nexa_ops.errors import ConfigError, Refused
from nexa_ops.tools import slurm

TABLE = estimate_mod.shipped_prices()


def estimate(tasks=4, gpus=2, hours=1.0, gpu="H100", provider="aws"):
    res = Resources(gpus_per_node=gpus, gpu_type=gpu, estimated_hours=hours)
    return pricing.estimate(res, tasks, TABLE, CostConfig(provider=provider))


def make_run(
    runs_dir,
    run_id,
    *,
    campaign="c1",
    tasks=4,
    gpus=2,
    hours=1.0,
    provider="aws",
    records=None,
    user=None,
    when=None,
    backend="local",
    job_ids=(),
):
    """A run folder with task records and its cost manifest, as a submission writes them."""
    run_dir = runs_dir / run_id
    (run_dir / "tasks").mkdir(parents=True)
    for index, rec in (records or {}).items():
        if "start" in rec:
            (run_dir / "tasks" / f"{index}.start.json").write_text(json.dumps({"index": index, "start": rec["start"]}))
        if "end" in rec:
            (run_dir / "tasks" / f"{index}.end.json").write_text(
                json.dumps({"index": index, "end": rec["end"], "exit_code": rec["exit_code"]})
            )
    doc = book.manifest_document(
        estimate(tasks, gpus, hours, provider=provider),
        run_id=run_id,
        name=run_id.split("-")[0],
        kind="sweep",
        campaign=campaign,
        run_dir=run_dir,
        backend=backend,
        job_ids=job_ids,
    )
    if user:
        doc["user"] = user
    if when:
        doc["submitted_at"] = when
    return book.write_cost_manifest(runs_dir, doc)


def done(n, seconds=1800.0, code=0, t0=1_000_000.0):
    return {i: {"start": t0, "end": t0 + seconds, "exit_code": code} for i in range(n)}


# --- manifests ---------------------------------------------------------------------------


def test_manifest_has_the_documented_fields(tmp_path):
    path = make_run(tmp_path, "s-1", job_ids=["12", "13"])
    assert path == tmp_path / "manifests" / "cost_s-1.json"
    doc = json.loads(path.read_text())
    for key in (
        "run_id",
        "campaign",
        "name",
        "kind",
        "user",
        "submitted_at",
        "gpu_type",
        "provider",
        "rate_usd_per_gpu_hour",
        "tasks",
        "nodes",
        "gpus_per_node",
        "estimated_hours",
        "estimated_usd",
        "currency",
        "job_ids",
        "status",
        "price_source",
        "price_fetched",
        "sku",
        "region",
    ):
        assert key in doc, key
    assert doc["estimated_usd"] == pytest.approx(4 * 2 * 1.0 * 6.88)
    assert (doc["currency"], doc["status"], doc["job_ids"], doc["gpu_type"]) == ("USD", "submitted", ["12", "13"], "H100-80GB")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_resubmitting_a_chunk_keeps_time_and_reconciled_figures(tmp_path):
    path = make_run(tmp_path, "s-1", job_ids=["12"], when="2025-01-01T00:00:00Z")
    book.update_manifest(path, lambda d: dict(d, actual_usd=5.0, status="running"))
    doc = book.manifest_document(estimate(), run_id="s-1", name="s", kind="sweep", campaign="c1", run_dir=None, job_ids=["12", "13"])
    book.write_cost_manifest(tmp_path, doc)
    new = json.loads(path.read_text())
    assert (new["job_ids"], new["submitted_at"], new["actual_usd"], new["status"]) == (["12", "13"], "2025-01-01T00:00:00Z", 5.0, "running")


def test_check_max_cost():
    e = estimate(tasks=10, gpus=8, hours=2.0)  # 160 GPU-hours x 6.88 = 1100.80
    estimate_mod.check_max_cost(e, None)
    estimate_mod.check_max_cost(e, 1100.80)
    with pytest.raises(Refused, match=r"estimated cost \$1,100.80 is above --max-cost \$1,000.00 .*nothing submitted"):
        estimate_mod.check_max_cost(e, 1000)
    unpriced = pricing.estimate(Resources(gpus_per_node=1, time="60"), 1, TABLE, CostConfig())
    with pytest.raises(Refused, match="cannot check --max-cost .*no GPU type"):
        estimate_mod.check_max_cost(unpriced, 1000)


def test_estimate_cost_from_files(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'name = "s"\ncommand = ["x"]\n[grid]\na = [1, 2, 3]\n[resources]\ngpus_per_node = 2\ngpu_type = "4090"\ntime = "02:00:00"\n'
    )
    launch = tmp_path / "l.toml"
    launch.write_text('[resources]\nnodes = 2\ngpus_per_node = 8\ngpu_type = "h100"\nestimated_hours = 3\n')
    project = tmp_path / "nexa.toml"
    project.write_text("")
    assert estimate_mod.estimate_cost(sweep, project).total_usd == pytest.approx(3 * 2 * 2 * 0.74)
    project.write_text('[cost]\nprovider = "lambda"\n')
    assert estimate_mod.estimate_cost(launch, project).total_usd == pytest.approx(2 * 8 * 3 * 3.99)
    with pytest.raises(ConfigError, match="no cost estimate: no price for RTX4090 from provider 'lambda'"):
        estimate_mod.estimate_cost(sweep, project, strict=True)
    (tmp_path / "mine.toml").write_text('[[price]]\ngpu_type = "RTX4090"\nprovider = "lambda"\nusd_per_gpu_hour = 0.5\n')
    project.write_text('[cost]\nprovider = "lambda"\nprices = "mine.toml"\n')
    assert estimate_mod.estimate_cost(sweep, project).total_usd == pytest.approx(3 * 2 * 2 * 0.5)


# --- reconcile ---------------------------------------------------------------------------


class Accounting(reconcile_mod.SlurmAnswers):
    """Slurm with accounting, answering with ``sacct`` lines in its real format."""

    def __init__(self, text):
        super().__init__(None)
        self.text = text

    def sacct(self, job_ids):
        return slurm.parse_sacct(self.text)

    def gone(self, job_ids):
        return True


def test_reconcile_bills_from_accounting_unless_it_lags_behind_the_records(tmp_path):
    path = make_run(tmp_path, "s-1", tasks=2, gpus=2, records=done(2, seconds=600.0), backend="slurm", job_ids=["7"])
    both = "7_0|COMPLETED|900|0:0|cpu=1,gres/gpu=2,node=1\n7_1|TIMEOUT|1200|0:15|cpu=1,gres/gpu=2,node=1\n"
    doc, _ = reconcile_mod.reconcile_manifest(path, tmp_path, Accounting(both))
    assert (doc["actual_source"], doc["tasks_ok"], doc["tasks_failed"], doc["status"]) == ("sacct", 1, 1, "failed")
    assert doc["actual_gpu_hours"] == pytest.approx((900 + 1200) * 2 / 3600)
    # slurmdbd has not caught up yet (one element, listed under the bare array id): the
    # run's own records know more, so they are used, and the run is not called incomplete
    doc, _ = reconcile_mod.reconcile_manifest(path, tmp_path, Accounting("7|COMPLETED|900|0:0|cpu=1,gres/gpu=2,node=1\n"))
    assert (doc["actual_source"], doc["tasks_ok"], doc["status"]) == ("worker", 2, "finished")
    assert doc["actual_gpu_hours"] == pytest.approx(2 * 600 * 2 / 3600)


class Queued(reconcile_mod.SlurmAnswers):
    """Slurm without accounting whose jobs are still in the queue (or, ``queued=False``,
    have all left it)."""

    def __init__(self, queued=True):
        super().__init__(False)
        self.queued = queued

    def gone(self, job_ids):
        return not self.queued


def test_resubmitted_tasks_are_billed_for_every_attempt(tmp_path):
    t0 = 1_000_000.0
    records = {0: {"start": t0, "end": t0 + 600, "exit_code": 0}, 1: {"start": t0, "end": t0 + 300, "exit_code": 1}}
    path = make_run(tmp_path, "s-1", tasks=2, gpus=2, records=records, backend="slurm", job_ids=["7"])
    doc, _ = reconcile_mod.reconcile_manifest(path, tmp_path, Queued(False))
    assert (doc["status"], doc["actual_gpu_hours"]) == ("failed", pytest.approx(900 * 2 / 3600))

    # `nexa resubmit --failed` sends task 1 again as job 9 and hands over its first attempt
    chunk = {"offset": 0, "count": 1, "job_id": "9", "array": "1", "submitted_at": t0 + 1000, "resubmit": 1}
    book.record_resubmission(tmp_path, "s-1", [chunk], {1: records[1]})
    doc = json.loads(path.read_text())
    assert (doc["status"], doc["job_ids"], doc["chunks"][-1]) == ("submitted", ["7", "9"], {k: chunk[k] for k in chunk if k != "resubmit"})
    assert doc["earlier_attempts_gpu_hours"] == pytest.approx(300 * 2 / 3600)

    # before the new attempt starts, task 1's old end record is still there: not billed twice
    doc, summary = reconcile_mod.reconcile_manifest(path, tmp_path, Queued())
    assert (doc["status"], summary.done, doc["actual_gpu_hours"]) == ("running", 1, pytest.approx(900 * 2 / 3600))

    # the new attempt ran 400 s and succeeded (the array script replaced the records)
    (tmp_path / "s-1" / "tasks" / "1.start.json").write_text(json.dumps({"index": 1, "start": t0 + 1100}))
    (tmp_path / "s-1" / "tasks" / "1.end.json").write_text(json.dumps({"index": 1, "end": t0 + 1500, "exit_code": 0}))
    doc, _ = reconcile_mod.reconcile_manifest(path, tmp_path, Queued(False))
    assert (doc["status"], doc["tasks_ok"], doc["tasks_failed"]) == ("finished", 2, 0)
    assert doc["actual_gpu_hours"] == pytest.approx((600 + 300 + 400) * 2 / 3600)
    assert doc["actual_usd"] == pytest.approx(doc["actual_gpu_hours"] * doc["rate_usd_per_gpu_hour"])


def test_requeued_attempts_are_billed_and_a_queued_run_is_not_over(tmp_path):
    """Slurm requeued task 0 once: the array script kept that attempt's records under
    tasks/attempts/; the end record in tasks/ (say, TERM from an external requeue) is not
    the task's end while its job is still in the queue."""
    t0 = 1_000_000.0
    path = make_run(tmp_path, "s-1", tasks=1, gpus=2, records={0: {"start": t0 + 1000, "end": t0 + 1400, "exit_code": 143}},
                    backend="slurm", job_ids=["7"])
    attempts = tmp_path / "s-1" / "tasks" / "attempts"
    attempts.mkdir()
    (attempts / "0.7.0.start.json").write_text(json.dumps({"index": 0, "start": t0, "restart_count": 0}))
    (attempts / "0.7.0.end.json").write_text(json.dumps({"index": 0, "end": t0 + 600, "exit_code": 143, "restart_count": 0}))
    (attempts / ".0.end.tmp").write_text("{half")  # being written: ignored
    doc, _ = reconcile_mod.reconcile_manifest(path, tmp_path, Queued())
    assert doc["status"] == "running" and doc["actual_gpu_hours"] == pytest.approx((600 + 400) * 2 / 3600)
    doc, _ = reconcile_mod.reconcile_manifest(path, tmp_path, Queued(False))
    assert (doc["status"], doc["tasks_failed"]) == ("failed", 1)


def test_sacct_duplicates_bill_every_requeued_attempt():
    """What `sacct -D` prints for an array whose element 0 was requeued once (seen on the
    real slurmdbd): the REQUEUED attempt first, then the last one."""
    text = "1_0|REQUEUED|2|0:0|gres/gpu=2\n1_1|COMPLETED|4|0:0|gres/gpu=2\n1_0|COMPLETED|4|0:0|gres/gpu=2\n"
    a, states = actual.actual_from_sacct(slurm.parse_sacct(text), {"1": 0}, gpus_per_task=2, rate=1.0)
    assert (a.ok, a.failed, a.running, states) == (2, 0, 0, {0: "COMPLETED", 1: "COMPLETED"})
    assert a.gpu_hours == pytest.approx((2 + 4 + 4) * 2 / 3600)


def test_reconcile_from_worker_records(tmp_path):
    path = make_run(tmp_path, "s-1", records={**done(3), 3: {"start": 1_000_000.0, "end": 1_000_900.0, "exit_code": 1}})
    (result,) = reconcile_mod.reconcile(tmp_path)
    assert (result.status, result.done, result.tasks, result.source) == ("failed", 4, 4, "worker")
    gpu_hours = (3 * 0.5 + 0.25) * 2
    assert result.actual_gpu_hours == pytest.approx(gpu_hours)
    assert result.actual_usd == pytest.approx(gpu_hours * 6.88)
    doc = json.loads(path.read_text())
    assert (doc["status"], doc["tasks_ok"], doc["tasks_failed"], doc["actual_source"]) == ("failed", 3, 1, "worker")
    assert doc["reconciled_at"] and doc["estimated_usd"] == pytest.approx(4 * 2 * 6.88)


def test_reconcile_running_then_finished(tmp_path):
    records = {0: {"start": 1.0, "end": 3601.0, "exit_code": 0}, 1: {"start": 1.0}}
    path = make_run(tmp_path, "s-1", tasks=2, records=records)
    assert reconcile_mod.reconcile(tmp_path)[0].status == "running"
    (tmp_path / "s-1" / "tasks" / "1.end.json").write_text(json.dumps({"index": 1, "end": 1801.0, "exit_code": 0}))
    (result,) = reconcile_mod.reconcile(tmp_path)
    assert result.status == "finished" and result.actual_gpu_hours == pytest.approx(1.5 * 2)
    # finished runs are not reconciled again unless asked
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    reconcile_mod.reconcile(tmp_path)
    assert path.stat().st_mtime_ns == mtime
    reconcile_mod.reconcile(tmp_path, ["s-1"])
    assert path.stat().st_mtime_ns != mtime


def test_reconcile_finds_a_moved_runs_folder(tmp_path):
    make_run(tmp_path / "old", "s-1", tasks=1, records=done(1))
    os.rename(tmp_path / "old", tmp_path / "new")
    assert reconcile_mod.reconcile(tmp_path / "new")[0].status == "finished"


def test_reconcile_unknown_run(tmp_path):
    with pytest.raises(ConfigError, match="no cost manifest for run 'nope'"):
        reconcile_mod.reconcile(tmp_path, ["nope"])


def test_reconcile_dry_run_writes_nothing(tmp_path):
    path = make_run(tmp_path, "s-1", tasks=1, records=done(1))
    before = path.read_text()
    (result,) = reconcile_mod.reconcile(tmp_path, dry_run=True)
    assert result.status == "finished" and path.read_text() == before


# --- reports -----------------------------------------------------------------------------


@pytest.fixture
def books(tmp_path):
    """Three campaigns, two users, two GPU types, one run still without records."""
    make_run(tmp_path, "a-1", campaign="alpha", records=done(4), user="ann", when="2025-11-02T10:00:00Z")
    make_run(
        tmp_path,
        "a-2",
        campaign="alpha",
        tasks=2,
        gpus=1,
        provider="lambda",
        records=done(2, 3600),
        user="bob",
        when="2025-11-20T10:00:00Z",
    )
    make_run(tmp_path, "b-1", campaign="beta", records={}, user="ann", when="2025-12-01T00:00:00Z")
    make_run(tmp_path, "n-1", campaign=None, tasks=1, records=done(1, 360), user="bob", when="2025-12-31T23:00:00Z")
    return tmp_path


def test_report_by_campaign_sums_estimated_and_actual(books):
    rep = report.cost_report(books)
    rows = {r["campaign"]: r for r in rep.rows}
    assert list(rows) == ["-", "alpha", "beta"]
    alpha = rows["alpha"]
    assert (alpha["runs"], alpha["tasks"], alpha["tasks_done"]) == (2, 6, 6)
    assert alpha["estimated_usd"] == pytest.approx(8 * 6.88 + 2 * 3.29)
    assert alpha["actual_usd"] == pytest.approx(4 * 0.5 * 2 * 6.88 + 2 * 1.0 * 3.29)
    assert rows["beta"]["actual_usd"] == 0 and rows["beta"]["estimated_usd"] == pytest.approx(8 * 6.88)
    assert rep.totals["runs"] == 4
    assert rep.totals["actual_usd"] == pytest.approx(sum(r["actual_usd"] for r in rep.rows))


@pytest.mark.parametrize("by, keys", [("user", ["ann", "bob"]), ("gpu", ["H100-80GB"]), ("run", ["a-1", "a-2", "b-1", "n-1"])])
def test_report_groupings(books, by, keys):
    rep = report.cost_report(books, by=by)
    assert [r[report.BY[by]] for r in rep.rows] == keys


def test_report_filters(books):
    assert [r["run_id"] for r in report.cost_report(books, by="run", campaign="alpha").rows] == ["a-1", "a-2"]
    assert [r["run_id"] for r in report.cost_report(books, by="run", since="2025-11-20").rows] == ["a-2", "b-1", "n-1"]
    assert [r["run_id"] for r in report.cost_report(books, by="run", until="2025-12-01").rows] == ["a-1", "a-2", "b-1"]
    assert [r["run_id"] for r in report.cost_report(books, by="run", since="2025-11-03", until="2025-12-31").rows] == ["a-2", "b-1", "n-1"]
    assert [r["run_id"] for r in report.cost_report(books, by="run", since="2025-12-31T22:00").rows] == ["n-1"]


def test_parse_when():
    assert report.parse_when("2025-12-31", "--until", end=True) == "2025-12-31T23:59:59Z"
    assert report.parse_when("2025-12-31T08:30", "--since") == "2025-12-31T08:30:00Z"
    assert report.parse_when("7d", "--since", now=7 * 86400) == "1970-01-01T00:00:00Z"
    for bad in ("yesterday", "2025-13-01", "31/12/2025"):
        with pytest.raises(ConfigError, match="--since"):
            report.parse_when(bad, "--since")


def test_report_formats(books):
    rep = report.cost_report(books)
    table = rep.render("table")
    assert table.splitlines()[0] == "Cost by campaign (USD)"
    assert table.splitlines()[1].split() == [
        "campaign",
        "runs",
        "tasks",
        "done",
        "est",
        "gpu-h",
        "est",
        "$",
        "actual",
        "gpu-h",
        "actual",
        "$",
    ]
    assert table.splitlines()[-1].split()[0] == "TOTAL"
    doc = json.loads(rep.render("json"))
    assert doc["by"] == "campaign" and doc["currency"] == "USD" and len(doc["rows"]) == 3
    assert {"estimated_usd", "actual_usd"} <= set(doc["rows"][0]) and doc["totals"]["runs"] == 4
    rows = list(csv.DictReader(io.StringIO(rep.render("csv"))))
    assert [r["campaign"] for r in rows] == ["-", "alpha", "beta", "TOTAL"]
    assert float(rows[1]["actual_usd"]) == pytest.approx(doc["rows"][1]["actual_usd"])
    md = rep.render("markdown")
    assert md.startswith("### Cost by campaign (USD)") and "|--" in md and "| TOTAL" in md
    with pytest.raises(ConfigError, match="--format: expected one of table, csv, json, markdown"):
        rep.render("xml")


def test_corrupt_and_foreign_files_are_reported_and_skipped(books):
    folder = books / "manifests"
    (folder / "cost_broken.json").write_text('{"schema": "nexa.cost/1", "run_id": ')
    (folder / "notes.json").write_text('{"hello": "world"}')
    (folder / "cost_list.json").write_text("[1, 2]")
    (folder / "cost_bin.json").write_bytes(b"\xff\xfe\x00garbage")
    (folder / "README.txt").write_text("not json, ignored")
    (folder / "teardown_alpha_20251201T000000Z.json").write_text('{"campaign": "alpha"}')  # nexa's own, not a cost manifest
    err = io.StringIO()
    rep = report.cost_report(books, err=err)
    assert rep.totals["runs"] == 4
    lines = err.getvalue().splitlines()
    assert len(lines) == 4 and all(line.startswith("nexa: warning: ") and "skipped" in line for line in lines)
    assert any("cost_broken.json: skipped: corrupt JSON" in line for line in lines)
    assert any("notes.json: skipped: not a nexa cost manifest" in line for line in lines)
    assert {os.path.basename(p) for p, _ in rep.skipped} == {"cost_broken.json", "notes.json", "cost_list.json", "cost_bin.json"}


WRONG_TYPES = {
    "est": ({"estimated_usd": "x"}, 'estimated_usd must be a number, got "x"'),
    "tasks": ({"tasks": "2"}, 'tasks must be an integer, got "2"'),
    "bool": ({"tasks_ok": True}, "tasks_ok must be an integer, got true"),
    "when": ({"submitted_at": 5}, "submitted_at must be a string, got 5"),
    "jobs": ({"job_ids": "12"}, 'job_ids must be a list, got "12"'),
    "chunk": ({"chunks": [{"offset": "a", "count": 1, "job_id": "7"}]}, 'chunks[0].offset must be an integer, got "a"'),
    "array": ({"chunks": [{"offset": 0, "job_id": "7", "array": "1-x"}]}, "chunks[0].array must be an array index spec"),
    "dir": ({"run_dir": ["x"]}, 'run_dir must be a string, got ["x"]'),
}


def test_wrong_typed_manifests_are_reported_and_skipped(books):
    """Fuzzed manifests with the nexa schema but fields of the wrong type: skipped with a
    warning by the report (also with --since) and by reconcile, never a TypeError."""
    for name, (change, _) in WRONG_TYPES.items():
        path = make_run(books, f"w-{name}", campaign="alpha", when="2025-12-01T00:00:00Z")
        doc = json.loads(path.read_text())
        doc.update(change)
        path.write_text(json.dumps(doc))
    for kwargs in ({}, {"since": "2025-11-03"}, {"reconcile_first": False, "by": "run"}):
        err = io.StringIO()
        rep = report.cost_report(books, err=err, **kwargs)
        assert rep.totals["runs"] == (4 if not kwargs.get("since") else 3)
        lines = err.getvalue().splitlines()
        assert len(lines) == len(WRONG_TYPES) == len(rep.skipped)
        for name, (_, reason) in WRONG_TYPES.items():
            path = books / "manifests" / f"cost_w-{name}.json"
            expected = f"nexa: warning: {path}: skipped: not a nexa cost manifest: {reason}"
            assert sum(line.startswith(expected) for line in lines) == 1, (name, lines)
    err = io.StringIO()
    done_ids = [r.run_id for r in reconcile_mod.reconcile(books, force=True, err=err)]
    assert sorted(done_ids) == ["a-1", "a-2", "b-1", "n-1"]
    assert len(err.getvalue().splitlines()) == len(WRONG_TYPES)
    err = io.StringIO()
    assert reconcile_mod.reconcile(books, ["w-tasks"], err=err) == [] and "tasks must be an integer" in err.getvalue()
    with pytest.raises(ConfigError, match=r"cost_w-est.json: not a nexa cost manifest: estimated_usd must be a number"):
        reconcile_mod.reconcile_manifest(books / "manifests" / "cost_w-est.json", books, dry_run=True)
    assert book.manifest_problem([]) == "not a nexa cost manifest"


def test_damaged_task_records_are_ignored_when_reconciling(tmp_path):
    path = make_run(tmp_path, "s-1", tasks=3, records=done(1))
    tasks = tmp_path / "s-1" / "tasks"
    (tasks / "1.end.json").write_text("[1]")
    (tasks / "2.start.json").write_text('{"start": "x"}')
    (tasks / "2.end.json").write_text('{"end": 5, "exit_code": "0"}')
    (tasks / "attempts").mkdir()
    (tasks / "attempts" / "2.7.0.end.json").write_text('"junk"')
    doc, summary = reconcile_mod.reconcile_manifest(path, tmp_path)
    assert (summary.done, doc["tasks_ok"], doc["status"]) == (1, 1, "running")
    assert doc["actual_gpu_hours"] == pytest.approx(0.5 * 2)


def test_resubmission_leaves_a_damaged_cost_manifest_alone(tmp_path):
    path = make_run(tmp_path, "s-1", tasks=2)
    path.write_text(path.read_text().replace('"nodes": 1', '"nodes": "one"'))
    before = path.read_text()
    err = io.StringIO()
    chunk = {"offset": 0, "count": 1, "job_id": "9", "array": "1", "submitted_at": 1.0}
    assert book.record_resubmission(tmp_path, "s-1", [chunk], {}, err=err) == path
    assert path.read_text() == before
    assert err.getvalue() == f'nexa: warning: {path}: not updated: not a nexa cost manifest: nodes must be an integer, got "one"\n'


def test_empty_or_missing_folder(tmp_path):
    rep = report.cost_report(tmp_path / "nothing")
    assert rep.rows == [] and rep.totals["runs"] == 0
    assert "TOTAL" in rep.render("table")


def test_write_report_is_atomic_and_reports_unwritable(tmp_path, books):
    out = tmp_path / "reports" / "weekly.csv"
    report.write_report(report.cost_report(books), "csv", out)
    assert out.read_text().startswith("campaign,runs,")
    assert [p.name for p in out.parent.iterdir()] == ["weekly.csv"]
    with pytest.raises(Exception, match="cannot write"):
        report.write_report(report.cost_report(books), "csv", "/proc/nope/x.csv")


def test_campaign_spend(books):
    spend = report.campaign_spend(books, "alpha")
    assert (spend.campaign, spend.runs) == ("alpha", 2)
    assert spend.estimated_usd == pytest.approx(8 * 6.88 + 2 * 3.29)
    assert spend.actual_usd == pytest.approx(4 * 0.5 * 2 * 6.88 + 2 * 3.29)
    assert report.campaign_spend(books, "nope") == report.CampaignSpend("nope", 0, 0.0, 0.0)


# --- concurrent writers ------------------------------------------------------------------


def _append_job_ids(path, worker, count):
    for i in range(count):
        book.update_manifest(path, lambda d, i=i: dict(d, job_ids=d.get("job_ids", []) + [f"{worker}-{i}"]))


def _reconcile_loop(runs_dir, count):
    for _ in range(count):
        reconcile_mod.reconcile(runs_dir, ["s-1"])


def test_concurrent_writers_never_corrupt_or_lose_an_update(tmp_path):
    path = make_run(tmp_path, "s-1", records=done(4))
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_append_job_ids, args=(path, w, 40)) for w in range(6)]
    writers.append(ctx.Process(target=_reconcile_loop, args=(tmp_path, 20)))
    for p in writers:
        p.start()
    reads = 0
    while any(p.is_alive() for p in writers):
        doc = json.loads(path.read_text())  # a reader never sees half a file
        assert doc["schema"] == book.SCHEMA
        reads += 1
    for p in writers:
        p.join()
        assert p.exitcode == 0
    doc = json.loads(path.read_text())
    assert sorted(doc["job_ids"]) == sorted(f"{w}-{i}" for w in range(6) for i in range(40))
    assert doc["status"] == "finished" and doc["actual_usd"] > 0
    assert reads > 0
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


# --- CLI ---------------------------------------------------------------------------------


def test_cli_estimate(tmp_path, nexa_cli):
    (tmp_path / "s.toml").write_text(
        'name = "s"\ncommand = ["x"]\n[grid]\na = [1, 2]\n[resources]\nnodes = 2\ngpus_per_node = 8\ngpu_type = "h100"\ntime = "04:00:00"\n'
        "estimated_hours = 1.5\n"
    )
    out = nexa_cli("cost", "--config", "s.toml")
    assert out.returncode == 0, out.stderr
    assert "2 task(s) x 2 node(s) x 8 GPU(s) x 1.5 h (estimated_hours) = 48.00 GPU-hours" in out.stdout
    assert "Estimated cost: $191.52 (lambda gpu_8x_h100_sxm5" in out.stdout
    out = nexa_cli("cost.estimate", "--config", "s.toml", "--provider", "aws", "--json")
    doc = json.loads(out.stdout)
    assert (doc["provider"], doc["rate_usd_per_gpu_hour"], doc["tasks"], doc["gpu_hours"], doc["total_usd"]) == (
        "aws",
        6.88,
        2,
        48.0,
        330.24,
    )
    assert not list(tmp_path.glob("runs"))  # nothing planned
    out = nexa_cli("cost.estimate", "--config", "s.toml", "--provider", "gcp")
    assert out.returncode == 2 and out.stderr.startswith("nexa: error: no cost estimate: no price for H100-80GB from provider 'gcp'")
    assert "Traceback" not in out.stderr and out.stdout == ""
    out = nexa_cli("cost.estimate")
    assert out.returncode == 2 and "--config FILE is required" in out.stderr


def test_check_budget(books):
    rep = report.cost_report(books)
    report.check_budget(rep, None)
    report.check_budget(rep, rep.totals["actual_usd"])  # at the limit is within it
    with pytest.raises(Refused, match="above --budget \\$1.00"):
        report.check_budget(rep, 1.0)


def test_cli_report_for_cron(books, nexa_cli):
    (books / "manifests" / "cost_junk.json").write_text("{nope")
    out = nexa_cli("cost.report", "--runs-dir", str(books), "--format", "csv", "--output", "r/cost.csv", env={"TERM": "dumb"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and "cost_junk.json: skipped" in out.stderr
    assert (books / "r" / "cost.csv").read_text().splitlines()[-1].startswith("TOTAL,4,")
    out = nexa_cli("cost.report", "--runs-dir", str(books), "--by", "run", "--format", "json", "--campaign", "alpha")
    assert [r["run_id"] for r in json.loads(out.stdout)["rows"]] == ["a-1", "a-2"]
    out = nexa_cli("cost.report", "--runs-dir", str(books), "--budget", "1")
    assert out.returncode == 3 and "above --budget $1.00" in out.stderr and "TOTAL" in out.stdout
    for args in (("--by", "team"), ("--since", "last week"), ("--format", "xml"), ("--budget", "lots")):
        out = nexa_cli("cost.report", "--runs-dir", str(books), *args)
        assert out.returncode == 2 and out.stderr.startswith("nexa: error: --") and "Traceback" not in out.stderr, args
        assert out.stdout == ""
    out = nexa_cli("cost.reconcile", "--runs-dir", str(books), "--run", "a-1", "--run", "n-1", "--dry-run")
    assert out.returncode == 0 and "a-1" in out.stdout and "n-1" in out.stdout and "b-1" not in out.stdout
    (books / "manifests" / "cost_junk.json").write_text(json.dumps({"schema": book.SCHEMA, "estimated_usd": "x", "submitted_at": 5}))
    warning = (
        f"nexa: warning: {books / 'manifests' / 'cost_junk.json'}: skipped: "
        "not a nexa cost manifest: submitted_at must be a string, got 5\n"
    )
    for args in (("cost.report", "--since", "7d"), ("cost.reconcile", "--all", "--dry-run")):
        out = nexa_cli(*args, "--runs-dir", str(books))
        assert (out.returncode, out.stderr) == (0, warning), args


BAD_AMOUNTS = [
    ("actual_usd", "NaN", "actual_usd must be a finite number >= 0, got NaN"),
    ("actual_usd", "Infinity", "actual_usd must be a finite number >= 0, got Infinity"),
    ("actual_usd", "-5000.0", "actual_usd must be a finite number >= 0, got -5000.0"),
    ("actual_gpu_hours", "-1e400", "actual_gpu_hours must be a finite number >= 0, got -Infinity"),
    ("estimated_usd", "NaN", "estimated_usd must be a finite number >= 0, got NaN"),
    ("rate_usd_per_gpu_hour", "-2.5", "rate_usd_per_gpu_hour must be a finite number >= 0, got -2.5"),
    ("tasks_ok", "-3", "tasks_ok must be a finite number >= 0, got -3"),
]


def overspent_book(runs_dir, key, literal):
    """Runs that spent about $5,000, and one more manifest whose ``key`` is ``literal``
    written into the JSON as it is (Python's json reads NaN and Infinity)."""
    for n in range(3):
        make_run(runs_dir, f"big-{n}", campaign="alpha", tasks=10, gpus=8, records=done(10, 3.1 * 3600.0))
    path = make_run(runs_dir, "bad-1", campaign="alpha", records=done(4))
    report.cost_report(runs_dir)  # reconciles every run: actual figures written
    doc = json.loads(path.read_text())
    doc[key] = 0.0
    path.write_text(json.dumps(doc).replace(f'"{key}": 0.0', f'"{key}": {literal}'))
    return path


@pytest.mark.parametrize("key, literal, reason", BAD_AMOUNTS)
def test_a_bad_figure_is_skipped_and_never_passes_a_budget(tmp_path, nexa_cli, key, literal, reason):
    """The report: one NaN or negative actual_usd made `cost.report --budget` pass a $5,000
    overspend. Values are checked, not only types; a skipped file fails the budget check."""
    path = overspent_book(tmp_path, key, literal)
    err = io.StringIO()
    rep = report.cost_report(tmp_path, err=err)
    assert err.getvalue() == f"nexa: warning: {path}: skipped: not a nexa cost manifest: {reason}\n"
    assert rep.totals["runs"] == 3 and 5000 < rep.totals["actual_usd"] < 6000
    out = nexa_cli("cost.report", "--runs-dir", str(tmp_path), "--budget", "1000")
    assert out.returncode == 3 and "is above --budget $1,000.00" in out.stderr and "TOTAL" in out.stdout
    out = nexa_cli("cost.report", "--runs-dir", str(tmp_path), "--budget", "100000")  # within it, but on bad data
    assert out.returncode == 3 and "TOTAL" in out.stdout, out.stderr
    assert "--budget $100,000.00 not checked: 1 file(s) of the cost book were skipped (see the warnings)" in out.stderr
    assert out.stderr.count("\n") == 2 and "Traceback" not in out.stderr  # the warning, the refusal
    assert nexa_cli("cost.report", "--runs-dir", str(tmp_path)).returncode == 0  # no --budget: a warning only


def test_a_budget_on_a_clean_book_passes(books, nexa_cli):
    out = nexa_cli("cost.report", "--runs-dir", str(books), "--budget", "100000")
    assert (out.returncode, out.stderr) == (0, "")


def test_task_records_with_nan_or_infinite_times_are_ignored(tmp_path):
    path = make_run(tmp_path, "s-1", tasks=3, records=done(1))
    (tmp_path / "s-1" / "tasks" / "1.start.json").write_text('{"index": 1, "start": 1000000.0}')
    (tmp_path / "s-1" / "tasks" / "1.end.json").write_text('{"index": 1, "end": Infinity, "exit_code": 0}')
    (tmp_path / "s-1" / "tasks" / "2.start.json").write_text('{"index": 2, "start": NaN}')
    (tmp_path / "s-1" / "tasks" / "2.end.json").write_text('{"index": 2, "end": 1000360.0, "exit_code": 0}')
    doc, _ = reconcile_mod.reconcile_manifest(path, tmp_path)
    assert doc["actual_gpu_hours"] == pytest.approx(1.0) and book.manifest_problem(doc) is None


def test_the_user_is_the_real_uid_never_logname(tmp_path, nexa_cli, monkeypatch):
    """`LOGNAME=alice` must not bill alice: the manifests name the real uid's user."""
    import pwd

    from nexa_ops import runs

    me = pwd.getpwuid(os.getuid()).pw_name
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(var, "alice")
    assert runs.user() == me
    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "u"\ncommand = ["true"]\n[grid]\nx = [1]\n')
    out = nexa_cli("sweep", "--config", str(sweep), "--local", "--out", str(tmp_path / "run"), env={"LOGNAME": "alice", "USER": "alice"})
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["user"] == me
    (cost,) = (tmp_path / "runs" / "manifests").glob("cost_*.json")
    assert json.loads(cost.read_text())["user"] == me


def test_max_cost_from_the_api_must_be_finite():
    est = estimate()
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ConfigError, match="--max-cost: expected a finite number >= 0"):
            estimate_mod.check_max_cost(est, bad)


def test_report_idle_column_where_utilisation_is_known(books):
    """Issue 18: cost.report gains idle_usd where a run's GPU utilisation is known; the figure
    of a finished run is kept in its manifest and asked for once; unknown stays unknown."""
    asked = []

    def idle(doc):
        asked.append(doc["run_id"])
        return {"a-1": 1.25, "a-2": 0.5}.get(doc["run_id"])  # n-1: utilisation unknown

    plain = report.cost_report(books, by="run")
    assert "idle_usd" not in plain.columns() and all(r["idle_usd"] is None for r in plain.rows)
    dry = report.cost_report(books, by="run", idle=idle, dry_run=True)
    assert {r["run_id"]: r["idle_usd"] for r in dry.rows}["a-1"] == 1.25
    assert "idle_usd" not in json.loads((books / "manifests" / "cost_a-1.json").read_text())  # a dry run writes nothing
    rep = report.cost_report(books, by="campaign", idle=idle)
    alpha = next(r for r in rep.rows if r["campaign"] == "alpha")
    assert alpha["idle_usd"] == 1.75 and rep.totals["idle_usd"] == 1.75
    assert next(r for r in rep.rows if r["campaign"] == "-")["idle_usd"] is None  # n-1: unknown, not 0
    assert "idle $" in rep.render("table") and "idle_usd" in rep.render("csv").splitlines()[0]
    assert json.loads((books / "manifests" / "cost_a-1.json").read_text())["idle_usd"] == 1.25
    asked.clear()
    report.cost_report(books, by="run", idle=idle)
    assert "a-1" not in asked and "a-2" not in asked  # kept: asked once


def test_a_report_of_a_folder_without_manifests_fails_unless_allowed(tmp_path, nexa_cli):
    out = nexa_cli("cost.report", "--runs-dir", str(tmp_path / "wrong"), "--output", "r.csv")
    assert out.returncode == 2 and out.stdout == "" and not (tmp_path / "r.csv").exists()
    assert out.stderr.startswith(f"nexa: error: no cost manifests under {tmp_path / 'wrong' / 'manifests'}") and out.stderr.count("\n") == 1
    out = nexa_cli("cost.report", "--runs-dir", str(tmp_path / "wrong"), "--allow-empty")
    assert out.returncode == 0 and "TOTAL" in out.stdout
    (tmp_path / "wrong" / "manifests").mkdir(parents=True)
    (tmp_path / "wrong" / "manifests" / "cost_x.json").write_text("{nope")  # only a damaged file: nothing to report either
    out = nexa_cli("cost.report", "--runs-dir", str(tmp_path / "wrong"))
    assert out.returncode == 2 and "skipped" in out.stderr and "no cost manifests under" in out.stderr


def test_a_local_run_whose_runner_is_gone_is_incomplete(tmp_path):
    from nexa_ops import runs

    path = make_run(tmp_path, "s-1", tasks=2, records={0: {"start": 1.0, "end": 3601.0, "exit_code": 0}, 1: {"start": 1.0}})
    manifest = {"run_id": "s-1", "backend": "local", "runner": runs.new_runner()}
    (tmp_path / "s-1" / "manifest.json").write_text(json.dumps(manifest))
    assert reconcile_mod.reconcile(tmp_path)[0].status == "running"  # its runner (this process) is alive
    manifest["runner"]["pid_start"] = -1  # another process now: the runner is gone
    (tmp_path / "s-1" / "manifest.json").write_text(json.dumps(manifest))
    assert reconcile_mod.reconcile(tmp_path)[0].status == "incomplete"
    assert json.loads(path.read_text())["status"] == "incomplete"
