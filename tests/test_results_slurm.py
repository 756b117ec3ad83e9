"""`nexa results` over a real Slurm array: metrics computed from the parameters (the winner is
known), a failing task, a silent one, garbage lines, and a task requeued with
`scontrol requeue` after it finished, whose second attempt appends to the same file."""

import json
import subprocess
import time

import pytest

from nexa_ops import track
from nexa_ops.config import load_config
from tests.conftest import ROOT
from tests.services.chromium import pixel_counts
from tests.test_launcher_run import torch_path  # noqa: F401 - fixture
from tests.test_results import LAST, write_sweep

pytestmark = pytest.mark.slurm


def test_a_slurm_array_ranked_partially_and_after_a_requeue(slurm_cluster, tmp_path, nexa_cli, chromium):
    sweep = write_sweep(tmp_path)
    text = sweep.read_text().replace('time = "00:05:00"', 'time = "00:05:00"\nrequeue = true\nmax_requeues = 1\ncpus_per_task = 1')
    sweep.write_text(text)
    run = tmp_path / "run"
    out = nexa_cli("sweep", "--config", str(sweep), "--submit", "--wait", "--out", str(run))
    assert out.returncode == 1, out.stderr  # task 7 fails
    assert "1 of 8 task(s) failed" in out.stderr
    top = out.stdout.split("Top 5 by loss (last, min)", 1)[1].splitlines()
    assert [line.lstrip("* ").split()[0] for line in top[3:8]] == ["3", "2", "1", "5", "0"]  # 1 and 5 tie at 4/3
    assert "best: task 3 (lr=0.001, layers=4): loss = 0.3333 (COMPLETED)" in out.stdout

    doc = json.loads(nexa_cli("results", str(run), "--format", "json").stdout)
    assert [r["index"] for r in doc["rows"]] == [3, 2, 1, 5, 0, 4, 6, 7]
    assert {r["index"]: r["state"] for r in doc["rows"]} == {**dict.fromkeys(range(7), "COMPLETED"), 7: "FAILED"}
    assert doc["skipped_lines"] == 4 and doc["best"]["index"] == 3

    # Requeue task 1 after it finished: Slurm runs it again in the same job; its program
    # resumes from step 2 and appends steps 2..5 to the same file.
    job = json.loads((run / "manifest.json").read_text())["job_ids"][0]
    subprocess.run(["scontrol", "requeue", f"{job}_1"], check=True, capture_output=True)
    cfg = load_config(cwd=tmp_path)
    st = track.status(str(run), config=cfg)
    assert st.tasks[1].bucket == "pending", st.tasks[1]
    # While it waits, results are partial: task 1 keeps its first attempt's numbers, state PENDING.
    doc = json.loads(nexa_cli("results", str(run), "--format", "json").stdout)
    row = next(r for r in doc["rows"] if r["index"] == 1)
    assert row["state"] in ("PENDING", "REQUEUED", "RUNNING") and row["metrics"]["loss"] == pytest.approx(LAST[1])
    time.sleep(1)  # Slurm holds a requeued task ~2 minutes: release it (not "now": see test_track_slurm)
    subprocess.run(["scontrol", "update", f"JobId={job}_1", "StartTime=now+3"], check=True, capture_output=True)
    out = nexa_cli("wait", str(run), "--poll", "1")
    assert out.returncode == 1, out.stderr  # task 7 still failed
    assert "Top 5 by loss" in out.stdout
    assert (tmp_path / "marks" / "1.attempts").read_text() == "xx"

    doc = json.loads(nexa_cli("results", str(run), "--format", "json").stdout)
    rows = {r["index"]: r for r in doc["rows"]}
    assert rows[1]["state"] == "COMPLETED" and rows[1]["steps"] == 5
    assert rows[1]["metrics"]["loss"] == pytest.approx(1.1)  # the second attempt's step 5
    assert [r["index"] for r in doc["rows"]] == [3, 2, 1, 5, 0, 4, 6, 7]
    lines = (run / "metrics" / "1.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 2, 3, 4, 5]

    # best over the steps: task 4's dip; csv exact; the picture in a real browser
    doc = json.loads(nexa_cli("results", str(run), "--reduce", "best", "--format", "json").stdout)
    assert doc["best"]["index"] == 4 and doc["best"]["value"] == 0.05
    csv_text = nexa_cli("results", str(run), "--format", "csv").stdout.splitlines()
    assert csv_text[0] == "index,state,lr,layers,marks,loss,acc,steps,elapsed"
    assert csv_text[1].startswith(f"3,COMPLETED,0.001,4,{tmp_path / 'marks'},{1 / 3!r},{1 / (1 + 1 / 3)!r},3,")
    out = nexa_cli("results", str(run), "--plot", str(tmp_path / "r.svg"))
    assert out.returncode == 0, out.stderr
    svg = (tmp_path / "r.svg").read_text()
    assert svg.count('class="point best" data-index="3"') == 2 and svg.count('class="panel param"') == 2
    pixels, ink, red = pixel_counts(chromium(tmp_path / "r.svg", tmp_path / "r.png", 1000, 900))
    assert ink > pixels * 0.02 and red > 100, (ink, red)


def test_a_slurm_launch_reports_as_task_0_from_rank_0_only(slurm_cluster, tmp_path, torch_path, nexa_cli, monkeypatch):  # noqa: F811
    """`nexa launch --mode slurm`: two torchrun ranks both call log(); the job's one metrics
    file holds rank 0's lines, and `nexa results` shows the launch as task 0."""
    monkeypatch.chdir(tmp_path)
    program = tmp_path / "train.py"
    program.write_text(
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from nexa_ops.metrics import log\n"
        "for step in range(1, 5):\n"
        "    log(step=step, loss=2.0 / step)\n"
    )
    launch = tmp_path / "launch.toml"
    launch.write_text(
        f'mode = "slurm"\nname = "one"\nnproc_per_node = 2\ncommand = ["python", {json.dumps(str(program))}]\n'
        '[resources]\nnodes = 1\ncpus_per_task = 1\ntime = "00:05:00"\n'
    )
    out = nexa_cli("launch", "--config", str(launch), "--wait", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if (p / "manifest.json").is_file())
    assert len((run_dir / "metrics" / "0.jsonl").read_text().splitlines()) == 4  # rank 1 wrote none
    doc = json.loads(nexa_cli("results", str(run_dir), "--format", "json", cwd=tmp_path).stdout)
    assert [(r["index"], r["state"], r["metrics"], r["steps"]) for r in doc["rows"]] == [(0, "COMPLETED", {"loss": 0.5}, 4)]
