"""The training side's helper ``nexa_ops.metrics.log``: one JSON line per call, standard library
only, loadable by path on every Python nexa supports, and what it writes reads back."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nexa_ops import metrics
from nexa_ops.results import metrics as reader
from tests.conftest import ROOT
from tests.services.pyz import require_python

HELPER = ROOT / "nexa_ops" / "metrics.py"


class Scalar:
    """What a 0-d torch tensor or a NumPy scalar looks like to the helper."""

    def __init__(self, value):
        self.value = value

    def item(self):
        return self.value


def test_log_appends_one_line_per_call(tmp_path, monkeypatch):
    path = tmp_path / "metrics" / "3.jsonl"
    path.parent.mkdir()
    monkeypatch.setenv("NEXA_METRICS_FILE", str(path))
    monkeypatch.delenv("RANK", raising=False)
    assert metrics.log(step=1, loss=0.5, acc=Scalar(0.75), phase="warmup", ckpt=Path("/c"))
    assert metrics.log(step=2, loss=float("nan"), acc=float("inf"), done=True)
    assert metrics.log(loss=0.25)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "loss": 0.5, "acc": 0.75, "phase": "warmup", "ckpt": "/c"},
        {"step": 2, "loss": "nan", "acc": "inf", "done": True},  # NaN/inf as text: the line stays valid
        {"loss": 0.25},
    ]
    parsed = reader.parse(path.read_bytes())
    assert parsed.skipped == 0 and parsed.points == {"loss": {1: 0.5, 2: 0.25}, "acc": {1: 0.75}}
    assert parsed.text == {"phase": "warmup", "ckpt": "/c", "loss": "nan", "acc": "inf", "done": "true"}


def test_only_rank_0_writes_and_nothing_without_the_variable(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    monkeypatch.setenv("NEXA_METRICS_FILE", str(path))
    monkeypatch.setenv("RANK", "1")
    assert metrics.log(loss=1) is False and not path.exists()
    monkeypatch.setenv("RANK", "0")
    assert metrics.log(loss=1) and path.exists()
    monkeypatch.delenv("NEXA_METRICS_FILE")
    assert metrics.log(loss=1) is False


def test_a_missing_folder_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXA_METRICS_FILE", str(tmp_path / "old-run" / "metrics" / "0.jsonl"))
    monkeypatch.delenv("RANK", raising=False)
    assert metrics.log(step=0, loss=1.0)
    assert (tmp_path / "old-run" / "metrics" / "0.jsonl").read_text() == '{"step": 0, "loss": 1.0}\n'


def test_line_is_what_log_writes():
    assert metrics.line(step=5, loss=1, name="ü") == '{"step": 5, "loss": 1, "name": "ü"}\n'


@pytest.mark.parametrize("version", ["3.6", "3.8", "3.13"])
def test_loaded_by_path_without_nexa_on_every_python(tmp_path, version):
    """A program on the oldest and newest Python, nexa not importable: the file alone works."""
    python = require_python(version)
    program = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('nexa_metrics', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert 'nexa_ops' not in sys.modules\n"
        "for step in range(3): m.log(step=step, loss=1.0 / (step + 1))\n"
    )
    path = tmp_path / "0.jsonl"
    env = {"PATH": "/usr/bin:/bin", "NEXA_METRICS_FILE": str(path)}
    done = subprocess.run([python, "-I", "-c", program, str(HELPER)], env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert reader.summarise(reader.parse(path.read_bytes())).last == {"loss": 1 / 3}


def test_helper_imports_only_the_standard_library():
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import nexa_ops.metrics; "
        "print(sorted(m for m in sys.modules if m.startswith('nexa')))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['nexa_ops', 'nexa_ops.metrics']"
