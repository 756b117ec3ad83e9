"""`nexa results` and its API over real local runs: a sweep whose tasks write metrics computed
from their parameters (tests/data/metrics_program.py), so the winner is known; a failing
task, a silent one, garbage lines; campaigns, launch runs, bad options."""

import csv
import dataclasses
import inspect
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nexa_ops
from nexa_ops.config import load_config
from nexa_ops.errors import ConfigError
from nexa_ops.results import load_results
from tests.conftest import ROOT

PROGRAM = ROOT / "tests" / "data" / "metrics_program.py"
# tasks: 0 lr 1e-4/2, 1 lr 1e-4/4, 2 lr 1e-3/2, 3 lr 1e-3/4 (the winner), 4 lr 1e-2/2 (garbage,
# dip), 5 lr 1e-2/4, 6 lr 0.1/2 (no metrics), 7 lr 0.1/4 (fails)
LAST = {0: 1.2 + 1 / 3, 1: 1 + 1 / 3, 2: 0.2 + 1 / 3, 3: 1 / 3, 4: 3.0, 5: 1 + 1 / 3}
RANKED = [3, 2, 1, 5, 0, 4, 6, 7]  # 1 and 5 tie at 1.333: by index


def write_sweep(folder: Path, name: str = "lrs", campaign: str = "") -> Path:
    marks = folder / "marks"
    marks.mkdir(exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n'
        + (f'campaign = "{campaign}"\n' if campaign else "")
        + f"command = [{json.dumps(sys.executable)}, {json.dumps(str(PROGRAM))}]\n"
        + "[grid]\nlr = [1e-4, 1e-3, 1e-2, 0.1]\nlayers = [2, 4]\n"
        + f'[fixed]\nmarks = {json.dumps(str(marks))}\n[resources]\nmax_parallel = 4\ntime = "00:05:00"\n'
    )
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One local sweep for the module, run through the CLI as a user would."""
    folder = tmp_path_factory.mktemp("local")
    out = subprocess.run(
        [sys.executable, "-m", "nexa_ops", "sweep", "--config", str(write_sweep(folder)), "--local", "--out", str(folder / "run")],
        cwd=str(folder),
        capture_output=True,
        text=True,
    )
    return folder, out


def results_cli(nexa_cli, folder, *args):
    return nexa_cli("results", str(folder / "run"), *args, cwd=folder)


def test_sweep_local_ends_with_the_top_5(local_run):
    folder, out = local_run
    assert out.returncode == 1, out.stderr  # task 7 failed
    assert "1 of 8 task(s) failed" in out.stderr
    assert f"Top 5 by loss (last, min)  (all: nexa results {folder / 'run'})" in out.stdout
    table = out.stdout.split("Top 5 by loss", 1)[1].splitlines()
    assert [line.lstrip("* ").split()[0] for line in table[3:8]] == ["3", "2", "1", "5", "0"]
    assert table[3].startswith("*") and "best: task 3 (lr=0.001, layers=4): loss = 0.3333 (COMPLETED)" in out.stdout


def test_planning_makes_the_metrics_folder(nexa_cli, tmp_path):
    out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path)), "--out", str(tmp_path / "planned"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "planned" / "metrics").is_dir() and not list((tmp_path / "planned" / "metrics").iterdir())


def test_every_task_got_its_metrics_file(local_run):
    folder, _ = local_run
    written = sorted(p.name for p in (folder / "run" / "metrics").iterdir())
    assert written == [f"{i}.jsonl" for i in (0, 1, 2, 3, 4, 5)]  # 6 wrote nothing, 7 failed first


def test_json_ranking_states_and_skipped_lines(local_run, nexa_cli):
    folder, _ = local_run
    out = results_cli(nexa_cli, folder, "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["run"], doc["metric"], doc["mode"], doc["reduce"]) == ("run", "loss", "min", "last")
    assert [r["index"] for r in doc["rows"]] == RANKED
    for row in doc["rows"]:
        if row["index"] in LAST:
            assert row["metrics"]["loss"] == pytest.approx(LAST[row["index"]])
            assert row["metrics"]["acc"] == pytest.approx(1 / (1 + LAST[row["index"]]))
            assert row["steps"] == 3 and row["state"] == "COMPLETED" and row["elapsed"] >= 0
    rows = {r["index"]: r for r in doc["rows"]}
    assert (rows[6]["state"], rows[6]["metrics"], rows[6]["steps"]) == ("COMPLETED", {}, 0)
    assert (rows[7]["state"], rows[7]["metrics"]) == ("FAILED", {})
    assert rows[3]["params"] == {"lr": 0.001, "layers": 4, "marks": str(folder / "marks")}
    assert doc["best"] == {"index": 3, "params": rows[3]["params"], "value": pytest.approx(1 / 3)}
    assert doc["skipped_lines"] == 4


def test_table_while_and_after_running(local_run, nexa_cli):
    folder, _ = local_run
    out = results_cli(nexa_cli, folder)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["task", "state", "lr", "layers", "loss", "(last,", "min)", "acc", "steps", "elapsed"]
    assert lines[2].split()[:6] == ["*", "3", "COMPLETED", "0.001", "4", "0.3333"]
    assert lines[-2] == "best: task 3 (lr=0.001, layers=4): loss = 0.3333 (COMPLETED)"
    assert lines[-1].startswith("4 line(s) of the metrics files skipped")


def test_other_metric_mode_reduce_state_top(local_run, nexa_cli):
    folder, _ = local_run
    doc = json.loads(results_cli(nexa_cli, folder, "--metric", "acc", "--mode", "max", "--format", "json").stdout)
    assert [r["index"] for r in doc["rows"]] == RANKED and doc["best"]["index"] == 3
    doc = json.loads(results_cli(nexa_cli, folder, "--reduce", "best", "--format", "json").stdout)
    assert [r["index"] for r in doc["rows"]][:3] == [4, 3, 2]  # task 4 dipped to 0.05 at step 2
    assert doc["rows"][0]["metrics"] == {"loss": 0.05, "acc": 0.25}
    doc = json.loads(results_cli(nexa_cli, folder, "--state", "failed", "--format", "json").stdout)
    assert [r["index"] for r in doc["rows"]] == [7] and doc["best"] is None
    doc = json.loads(results_cli(nexa_cli, folder, "--top", "2", "--state", "COMPLETED,failed", "--format", "json").stdout)
    assert [r["index"] for r in doc["rows"]] == [3, 2]


def test_csv_and_markdown_to_files_atomically(local_run, nexa_cli):
    folder, _ = local_run
    out = results_cli(nexa_cli, folder, "--format", "csv", "--output", str(folder / "out" / "results.csv"))
    assert out.returncode == 0 and out.stdout == "" and "wrote" in out.stderr, out.stderr
    rows = list(csv.DictReader(io.StringIO((folder / "out" / "results.csv").read_text())))
    assert list(rows[0]) == ["index", "state", "lr", "layers", "marks", "loss", "acc", "steps", "elapsed"]
    assert [int(r["index"]) for r in rows] == RANKED
    assert float(rows[0]["loss"]) == 1 / 3 and rows[0]["loss"] == repr(1 / 3)  # exact
    assert rows[-1]["loss"] == "" and rows[-1]["state"] == "FAILED"
    assert [p.name for p in (folder / "out").iterdir()] == ["results.csv"]  # no temp file left
    out = results_cli(nexa_cli, folder, "--format", "markdown")
    assert out.stdout.startswith("| best | task | state | lr | layers | loss (last, min) |") and "| \\* | 3 |" in out.stdout


def test_plot_svg_and_html_in_a_real_browser(local_run, nexa_cli, chromium):
    import xml.etree.ElementTree as ET

    from tests.services.chromium import pixel_counts

    folder, _ = local_run
    out = results_cli(nexa_cli, folder, "--plot", str(folder / "results.svg"), "--top", "3")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2 + 3 + 2  # the table shows the top 3 only
    svg = (folder / "results.svg").read_text()
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    panels = [g for g in root.iter(ns + "g") if "param" in g.get("class", "").split()]
    assert [(p.get("data-param"), p.get("data-scale")) for p in panels] == [("lr", "log"), ("layers", "linear")]
    for panel in panels:  # every task with the metric (all, not only the top 3), the best marked
        points = {c.get("data-index"): c.get("class") for c in panel.iter(ns + "circle")}
        assert sorted(points) == ["0", "1", "2", "3", "4", "5"] and points["3"] == "point best"
    curves = [p for p in root.iter(ns + "polyline") if p.get("class") == "curve"]
    assert sorted(c.get("data-index") for c in curves) == ["1", "2", "3"]
    pixels, ink, red = pixel_counts(chromium(folder / "results.svg", folder / "svg.png", 1000, 900))
    assert ink > pixels * 0.02 and red > 100, (ink, red)
    out = results_cli(nexa_cli, folder, "--plot", str(folder / "results.html"))
    assert out.returncode == 0, out.stderr
    assert "<table>" in (folder / "results.html").read_text()
    pixels, ink, red = pixel_counts(chromium(folder / "results.html", folder / "html.png", 1000, 1400))
    assert ink > pixels * 0.02 and red > 100, (ink, red)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "val_loss"], "nexa: error: --metric: no task reported 'val_loss' (metrics seen: loss, acc)\n"),
        (["--mode", "least"], "nexa: error: --mode: expected min or max, got 'least'\n"),
        (["--reduce", "mean"], "nexa: error: --reduce: expected last or best, got 'mean'\n"),
        (["--top", "0"], "nexa: error: --top: expected an integer >= 1, got 0\n"),
        (["--top", "x"], "nexa: error: --top: expected an integer, got 'x'\n"),
        (["--format", "xml"], "nexa: error: --format: expected one of table, csv, json, markdown, got 'xml'\n"),
        (
            ["--state", "done,later"],
            "nexa: error: --state: expected a task state (COMPLETED, FAILED, RUNNING...) or pending, running, done, failed; got 'later'\n",
        ),
        (["--plot", "r.png"], "nexa: error: --plot: expected a file name ending in .svg or .html, got 'r.png'\n"),
        (["--plot", "same.svg", "--output", "same.svg"], "nexa: error: --plot and --output name the same file\n"),
        (["--output", ""], "nexa: error: --output: expected a value, got ''\n"),
        (["--campaign", "c"], "nexa: error: give RUN or --campaign, not both\n"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(local_run, nexa_cli, args, message):
    folder, _ = local_run
    before = sorted(p.name for p in folder.iterdir())
    extra = [] if "--output" in args else ["--output", str(folder / "never.txt")]
    out = results_cli(nexa_cli, folder, *args, *extra)
    assert (out.returncode, out.stderr) == (2, message)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_unknown_run_and_empty_runs_dir(nexa_cli, tmp_path):
    out = nexa_cli("results", "nope")
    assert out.returncode == 2 and "nope: not a run folder or a run id" in out.stderr and out.stderr.count("\n") == 1
    out = nexa_cli("results")
    assert out.returncode == 2 and "no runs in" in out.stderr
    out = nexa_cli("results", "--campaign", "ghost")
    assert out.returncode == 2 and "--campaign: no run of campaign 'ghost' in" in out.stderr


def test_the_latest_run_by_default_and_run_ids(local_run, nexa_cli, tmp_path):
    folder, _ = local_run
    (tmp_path / "runs").mkdir()
    os.symlink(folder / "run", tmp_path / "runs" / "the-run")
    by_id = nexa_cli("results", "the-run", "--format", "json")
    latest = nexa_cli("results", "--format", "json")
    assert by_id.returncode == latest.returncode == 0, by_id.stderr + latest.stderr
    assert json.loads(by_id.stdout)["best"]["index"] == json.loads(latest.stdout)["best"]["index"] == 3
    helped = nexa_cli("results", "--help")
    for option in ("--metric", "--mode", "--reduce", "--top", "--state", "--format", "--output", "--plot", "--campaign", "--project"):
        assert option in helped.stdout


def test_python_api(local_run):
    folder, _ = local_run
    cfg = load_config(cwd=folder)
    results = nexa_ops.load_results(folder / "run", config=cfg)
    assert dataclasses.is_dataclass(results) and [r.index for r in results.rows] == RANKED
    row = results.rows[0]
    assert (row.index, row.state, row.best, row.steps) == (3, "COMPLETED", True, 3)
    assert row.value == pytest.approx(1 / 3) and row.text == {"phase": "attempt 1"}
    best = nexa_ops.best_config(folder / "run", "acc", "max", config=cfg)
    assert (best.index, best.params["lr"], best.params["layers"], best.metric) == (3, 0.001, 4, "acc")
    assert nexa_ops.best_config(folder / "run", "loss", "min", reduce="best", config=cfg).index == 4
    with pytest.raises(ConfigError, match="metrics seen: loss, acc"):
        load_results(folder / "run", metric="nope", config=cfg)
    top = load_results(str(folder / "run"), state=["done"], top=2, config=cfg)
    assert [r.index for r in top.rows] == [3, 2]


@pytest.mark.parametrize("name", ["load_results", "best_config"])
def test_api_is_documented_and_lazy(name):
    func = getattr(nexa_ops, name)
    assert name in nexa_ops.__all__
    doc = inspect.getdoc(func)
    for param in inspect.signature(func).parameters:
        assert param in doc, f"{name}: {param} undocumented"
    assert "Returns:" in doc and "Raises:" in doc
    code = f"import sys, nexa_ops; nexa_ops.{name}; print(sorted(m for m in sys.modules if m.startswith(('invoke', 'tabulate'))))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_a_campaign_in_one_table(nexa_cli, tmp_path):
    """Two sweeps of one campaign (and one of another) in the project's runs folder."""
    for name, campaign in (("first", "cmp"), ("second", "cmp"), ("other", "else")):
        (tmp_path / name).mkdir()
        out = nexa_cli("sweep", "--config", str(write_sweep(tmp_path / name, name, campaign)), "--local")
        assert out.returncode == 1, out.stderr
    out = nexa_cli("results", "--campaign", "cmp", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["run"] is None and doc["campaign"] == "cmp" and len(doc["rows"]) == 16
    assert {r["run"].split("-")[0] for r in doc["rows"]} == {"first", "second"}
    assert [r["index"] for r in doc["rows"][:2]] == [3, 3] and doc["best"]["index"] == 3
    assert doc["best"]["run"] == doc["rows"][0]["run"] and doc["rows"][0]["run"].startswith("first")  # the tie: the older run
    text = nexa_cli("results", "--campaign", "cmp").stdout
    assert text.splitlines()[0].split()[:2] == ["run", "task"] and "best: run first-" in text


def test_a_launch_run_is_task_0(nexa_cli, tmp_path):
    program = (
        "import sys; sys.path.insert(0, sys.argv[1]); from nexa_ops.metrics import log\n"
        "for step in range(1, 4): log(step=step, loss=1.0 / step, note='x')\n"
    )
    out = nexa_cli("launch", "--", sys.executable, "-c", program, str(ROOT))
    assert out.returncode == 0, out.stderr
    doc = json.loads(nexa_cli("results", "--format", "json").stdout)
    assert doc["rows"] == [
        {
            "index": 0,
            "state": "COMPLETED",
            "params": {},
            "metrics": {"loss": pytest.approx(1 / 3)},
            "steps": 3,
            "elapsed": doc["rows"][0]["elapsed"],
        }
    ]
    assert doc["rows"][0]["elapsed"] >= 0 and doc["best"]["index"] == 0


def test_a_run_without_metrics_says_so(nexa_cli, tmp_path):
    sweep = tmp_path / "plain.toml"
    sweep.write_text(f'name = "plain"\ncommand = [{json.dumps(sys.executable)}, "-c", "pass"]\n[grid]\nx = [1, 2]\n')
    out = nexa_cli("sweep", "--config", str(sweep), "--local")
    assert out.returncode == 0 and "Top" not in out.stdout, out.stdout
    out = nexa_cli("results")
    assert out.returncode == 0 and "no metrics reported yet" in out.stdout
    out = nexa_cli("results", "--plot", "r.svg")
    assert out.returncode == 2 and "--plot: no task has reported a metric yet" in out.stderr and not (tmp_path / "r.svg").exists()
