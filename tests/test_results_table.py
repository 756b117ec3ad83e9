"""Ranking and rendering results (pure: statuses and metrics built in the test)."""

import csv
import io
import json
from pathlib import Path

import pytest

from nexa_ops.errors import ConfigError
from nexa_ops.results import load, table
from nexa_ops.results.metrics import TaskMetrics
from nexa_ops.track import RunStatus, TaskRow


def status(run_id="run-1", params=None, states=None):
    params = params or [{"lr": 0.1, "bs": 16}, {"lr": 0.01, "bs": 16}, {"lr": 0.001, "bs": 16}, {"lr": 0.0001, "bs": 16}]
    states = states or ["COMPLETED", "COMPLETED", "FAILED", "RUNNING"]
    tasks = [TaskRow(index=i, state=s, params=p, elapsed=61.5 * (i + 1)) for i, (p, s) in enumerate(zip(params, states))]
    return RunStatus(run_id, Path("/runs") / run_id, "sweep", "local", [], ["lr"], tasks)


def task(last, low=None, high=None, steps=3, skipped=0, text=None):
    return TaskMetrics(dict(last), dict(low or last), dict(high or last), steps, dict(text or {}), steps, skipped)


METRICS = {
    0: task({"val_loss": 0.5, "acc": 0.8}, low={"val_loss": 0.3, "acc": 0.7}, high={"val_loss": 0.9, "acc": 0.8}),
    1: task({"val_loss": 0.4, "acc": 0.9}, skipped=2),
    2: task({"acc": 0.1}, steps=1),  # failed before its first validation
    # 3: running, nothing reported yet
}


def results(**options):
    return load.combine([load.RunData(status(), dict(METRICS))], **options)


def test_ranked_by_the_first_metric_seen_smallest_first_missing_last():
    r = results()
    assert r.metric == "val_loss" and r.metric_names == ["val_loss", "acc"]
    assert [(row.index, row.value) for row in r.rows] == [(1, 0.4), (0, 0.5), (2, None), (3, None)]
    assert [row.best for row in r.rows] == [True, False, False, False]
    assert r.best == table.BestConfig(1, {"lr": 0.01, "bs": 16}, 0.4, "COMPLETED", "", "val_loss")
    assert r.skipped_lines == 2 and r.keys == ["lr"]
    assert r.rows[2].metrics == {"acc": 0.1} and r.rows[3].metrics == {} and r.rows[3].steps == 0


def test_max_mode_and_best_over_steps():
    r = results(metric="acc", mode="max")
    assert [row.index for row in r.rows] == [1, 0, 2, 3]
    r = results(metric="val_loss", reduce="best")
    assert [(row.index, row.value) for row in r.rows][:2] == [(0, 0.3), (1, 0.4)]
    assert r.rows[0].metrics == {"val_loss": 0.3, "acc": 0.8}  # the chosen metric reduced, the others last
    r = results(metric="val_loss", mode="max", reduce="best")
    assert [(row.index, row.value) for row in r.rows][:2] == [(0, 0.9), (1, 0.4)]


def test_state_filter_and_top():
    r = results(states=load.parse_states("failed,running"))
    assert [row.index for row in r.rows] == [2, 3] and r.best is None
    r = results(states=load.parse_states(["completed"]), top=1)
    assert [row.index for row in r.rows] == [1]
    assert load.parse_states("DONE,Timeout") == frozenset({"done", "TIMEOUT"})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"metric": "loss"}, "--metric: no task reported 'loss' (metrics seen: val_loss, acc)"),
        ({"mode": "lowest"}, "--mode: expected min or max, got 'lowest'"),
        ({"reduce": "mean"}, "--reduce: expected last or best, got 'mean'"),
        ({"top": 0}, "--top: expected a whole number >= 1, got 0"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        results(**options)
    assert str(info.value) == message and info.value.exit_code == 2


def test_bad_state_is_a_config_error():
    with pytest.raises(ConfigError, match="--state: expected a task state .* got 'finished'"):
        load.parse_states("completed,finished")


def test_no_metrics_at_all():
    r = load.combine([load.RunData(status(), {})])
    assert r.metric is None and r.best is None and [row.index for row in r.rows] == [0, 1, 2, 3]
    assert "no metrics reported yet" in table.render_table(r)
    with pytest.raises(ConfigError, match=r"metrics seen: none yet"):
        load.combine([load.RunData(status(), {})], metric="loss")


def test_table_rounds_marks_the_best_and_says_who_won():
    text = table.render_table(results())
    lines = text.splitlines()
    assert lines[0].split() == ["task", "state", "lr", "val_loss", "(last,", "min)", "acc", "steps", "elapsed"]
    assert lines[2].split() == ["*", "1", "COMPLETED", "0.01", "0.4", "0.9", "3", "2:03"]
    assert lines[5].split() == ["3", "RUNNING", "0.0001", "4:06"]
    assert lines[-2] == "best: task 1 (lr=0.01): val_loss = 0.4 (COMPLETED)"
    assert lines[-1].startswith("2 line(s) of the metrics files skipped")
    rounded = load.combine([load.RunData(status(), {0: task({"loss": 0.123456789})})])
    assert "0.1235" in table.render_table(rounded) and "0.123456789" in table.render(rounded, "json")


def test_json_shape_is_exactly_the_documented_one():
    doc = json.loads(table.render(results(), "json"))
    assert list(doc) == ["run", "metric", "mode", "reduce", "rows", "best", "skipped_lines"]
    assert (doc["run"], doc["metric"], doc["mode"], doc["reduce"], doc["skipped_lines"]) == ("run-1", "val_loss", "min", "last", 2)
    assert doc["rows"][0] == {
        "index": 1,
        "state": "COMPLETED",
        "params": {"lr": 0.01, "bs": 16},
        "metrics": {"val_loss": 0.4, "acc": 0.9},
        "steps": 3,
        "elapsed": 123.0,
    }
    assert doc["rows"][3] == {
        "index": 3,
        "state": "RUNNING",
        "params": {"lr": 0.0001, "bs": 16},
        "metrics": {},
        "steps": 0,
        "elapsed": 246.0,
    }
    assert doc["best"] == {"index": 1, "params": {"lr": 0.01, "bs": 16}, "value": 0.4}
    assert json.loads(table.render(load.combine([load.RunData(status(), {})]), "json"))["best"] is None


def test_csv_has_a_column_per_parameter_and_metric_with_exact_numbers():
    exact = load.combine([load.RunData(status(), {0: task({"loss": 0.1 + 0.2})})])
    rows = list(csv.reader(io.StringIO(table.render(exact, "csv"))))
    assert rows[0] == ["index", "state", "lr", "bs", "loss", "steps", "elapsed"]
    assert rows[1] == ["0", "COMPLETED", "0.1", "16", "0.30000000000000004", "3", "61.5"]
    assert rows[2] == ["1", "COMPLETED", "0.01", "16", "", "0", "123.0"]


def test_markdown_escapes_and_marks():
    params = [{"name": "a|b"}, {"name": "c"}]
    st = status(params=params, states=["COMPLETED", "COMPLETED"])
    st.tasks = st.tasks[:2]
    md = table.render(load.combine([load.RunData(st, {1: task({"loss": 1.0})})]), "markdown")
    lines = md.splitlines()
    assert lines[0] == "| best | task | state | name | loss (last, min) | steps | elapsed |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[2] == "| \\* | 1 | COMPLETED | c | 1 | 3 | 2:03 |"
    assert lines[3] == "|  | 0 | COMPLETED | a\\|b |  |  | 1:01 |"


def test_a_campaign_has_a_run_column_and_ranks_across_runs():
    first = load.RunData(status("a-1"), {0: task({"loss": 0.5}), 1: task({"loss": 0.2})})
    second = load.RunData(status("b-2", params=[{"lr": 1.0, "bs": 32}] * 4), {0: task({"loss": 0.1})})
    r = load.combine([first, second], campaign="c")
    assert [(row.run, row.index) for row in r.rows[:3]] == [("b-2", 0), ("a-1", 1), ("a-1", 0)]
    assert r.keys == ["lr", "bs"] and r.run is None
    doc = table.to_json(r)
    assert doc["run"] is None and doc["campaign"] == "c" and doc["rows"][0]["run"] == "b-2"
    assert doc["best"] == {"run": "b-2", "index": 0, "params": {"lr": 1.0, "bs": 32}, "value": 0.1}
    assert table.render_table(r).splitlines()[0].split()[:2] == ["run", "task"]
    assert "best: run b-2 task 0 (lr=1, bs=32)" in table.render_table(r)
    assert next(csv.reader(io.StringIO(table.render_csv(r))))[:2] == ["run", "index"]


def test_ties_keep_the_task_order():
    r = load.combine([load.RunData(status(), {i: task({"loss": 1.0}) for i in range(4)})])
    assert [row.index for row in r.rows] == [0, 1, 2, 3] and r.rows[0].best


def test_unknown_format():
    with pytest.raises(ConfigError, match="--format: expected one of table, csv, json, markdown, got 'xml'"):
        table.render(results(), "xml")
