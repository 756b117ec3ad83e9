"""Ranking tasks by a metric and rendering the ranking: table, markdown, csv, json (pure).

``load`` builds the rows from a run's status and metrics files; everything here takes data
and returns data or text, so it is tested without Slurm or files.
"""

import csv
import io
import json
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigError
from ..structs import mutable
from ..style import format_seconds, layout

MODES = ("min", "max")
REDUCES = ("last", "best")
FORMATS = ("table", "csv", "json", "markdown")


@mutable
class TaskResult:
    """One task's line of the results: its state and parameters, the chosen metric reduced
    to one ``value`` (None: not reported), and every metric's value (the chosen one reduced,
    the others their last)."""

    index: int
    state: str
    params: Dict[str, Any] = field(default_factory=dict)
    value: Optional[float] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    steps: int = 0  # distinct steps the task reported
    elapsed: Optional[float] = None
    run: str = ""  # the run id: tells the runs of a campaign apart
    text: Dict[str, str] = field(default_factory=dict)  # the last text value of each other key
    best: bool = False
    rung: Optional[int] = None  # a halving run: the row is trial ``index`` at its highest rung


@mutable
class BestConfig:
    """The winning task: where it ran, its parameters and its value of the metric."""

    index: int
    params: Dict[str, Any]
    value: float
    state: str
    run: str = ""
    metric: str = ""


@mutable
class Results:
    """A run's (or a campaign's) tasks ranked by ``metric``."""

    run: Optional[str]  # the run id (None for a campaign)
    metric: Optional[str]  # None: no task reported a metric yet
    mode: str
    reduce: str
    keys: List[str]  # the parameters that vary between the tasks
    metric_names: List[str]  # every metric reported, in the order first seen
    rows: List[TaskResult]
    best: Optional[BestConfig] = None
    skipped_lines: int = 0
    campaign: Optional[str] = None
    run_dirs: Dict[str, Path] = field(default_factory=dict)  # run id -> folder

    @property
    def others(self) -> List[str]:
        """The metrics shown beside the chosen one."""
        return [m for m in self.metric_names if m != self.metric]


def check_options(mode: str, reduce: str, top: Optional[int] = None) -> None:
    """ConfigError (exit 2) naming the option whose value is not one of its choices."""
    if mode not in MODES:
        raise ConfigError(f"--mode: expected min or max, got {mode!r}")
    if reduce not in REDUCES:
        raise ConfigError(f"--reduce: expected last or best, got {reduce!r}")
    if top is not None and (type(top) is not int or top < 1):
        raise ConfigError(f"--top: expected a whole number >= 1, got {top!r}")


def choose_metric(names: Sequence[str], metric: Optional[str]) -> Optional[str]:
    """``metric`` when some task reported it, the first name seen when None; an unknown
    name is a ConfigError that lists the names seen."""
    if metric is None:
        return names[0] if names else None
    if metric not in names:
        seen = ", ".join(names) if names else "none yet"
        raise ConfigError(f"--metric: no task reported {metric!r} (metrics seen: {seen})")
    return metric


def rank(rows: List[TaskResult], mode: str) -> List[TaskResult]:
    """Rows by value (smallest first for min, largest for max); tasks without the metric
    last. Ties, and the tasks without it, keep the order they came in (run, then task
    index). The first row is marked best when it has a value. Trials of a halving run rank
    by their highest rung first: a value at a larger budget beats any at a smaller one."""
    sign = 1.0 if mode == "min" else -1.0
    ordered = sorted(rows, key=lambda r: (r.value is None, -(r.rung or 0), 0.0 if r.value is None else sign * r.value))
    for row in ordered:
        row.best = False
    if ordered and ordered[0].value is not None:
        ordered[0].best = True
    return ordered


def best_of(rows: Sequence[TaskResult], metric: Optional[str]) -> Optional[BestConfig]:
    """The marked row as a ``BestConfig`` (None when no task reported the metric)."""
    for row in rows:
        if row.best and row.value is not None:
            return BestConfig(row.index, dict(row.params), row.value, row.state, row.run, metric or "")
    return None


# --- rendering ------------------------------------------------------------------------------


def number(value: Any) -> str:
    """A metric as the table shows it: 4 significant digits."""
    if value is None:
        return ""
    if type(value) is int:
        return str(value)
    return f"{value:.4g}"


def exact(value: Any) -> str:
    """A value as csv holds it: numbers exact (shortest round-trip text), text as is."""
    if value is None:
        return ""
    if type(value) in (int, float):
        return repr(value)
    if type(value) is str:
        return value
    return json.dumps(value, ensure_ascii=False)


def short(value: Any, width: int = 24) -> str:
    """A parameter as the table shows it: floats rounded like metrics, long text cut."""
    if type(value) is float:
        return number(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."




def metric_header(results: Results) -> str:
    return f"{results.metric} ({results.reduce}, {results.mode})"


def _campaign(results: Results) -> bool:
    return results.campaign is not None


def _trials(results: Results) -> bool:
    """A halving run's results: one row per trial, with its highest rung."""
    return any(row.rung is not None for row in results.rows)


def grid(results: Results) -> List[List[str]]:
    """Header and rows of the human table (and markdown): mark, [run], task (a halving run:
    trial and rung), state, the varying parameters, the chosen metric, the other metrics,
    steps, elapsed."""
    trials = _trials(results)
    head = [""] + (["run"] if _campaign(results) else []) + (["trial", "rung"] if trials else ["task"]) + ["state"] + list(results.keys)
    if results.metric:
        head.append(metric_header(results))
    head += results.others + ["steps", "elapsed"]
    lines = [head]
    for row in results.rows:
        where = [str(row.index)] + (["" if row.rung is None else str(row.rung)] if trials else [])
        cells = ["*" if row.best else ""] + ([row.run] if _campaign(results) else []) + where + [row.state]
        cells += [short(row.params[k]) if k in row.params else "" for k in results.keys]
        if results.metric:
            cells.append(number(row.value))
        cells += [number(row.metrics.get(m)) for m in results.others]
        cells += [str(row.steps) if row.steps else "", format_seconds(row.elapsed)]
        lines.append(cells)
    return lines


def summary(results: Results) -> List[str]:
    """The lines under the table: the winner, and what could not be read."""
    lines = []
    who = results.run if results.run else f"campaign {results.campaign}"
    if results.metric is None:
        lines.append(f"{who}: no metrics reported yet (tasks append JSON lines to $NEXA_METRICS_FILE)")
    elif not results.rows:
        lines.append(f"{who}: no task in the states asked for")
    elif results.best is None:
        lines.append(f"{who}: no task reported {results.metric} yet")
    else:
        b = results.best
        row = next((r for r in results.rows if r.best), None)
        noun = "trial" if row is not None and row.rung is not None else "task"
        where = f"run {b.run} {noun} {b.index}" if _campaign(results) else f"{noun} {b.index}"
        if row is not None and row.rung is not None:
            where += f" at rung {row.rung}"
        params = ", ".join(f"{k}={short(b.params[k])}" for k in results.keys if k in b.params)
        lines.append(f"best: {where}" + (f" ({params})" if params else "") + f": {results.metric} = {number(b.value)} ({b.state})")
    if results.skipped_lines:
        lines.append(f"{results.skipped_lines} line(s) of the metrics files skipped (not a JSON object, NaN/inf, or half-written)")
    return lines


def align(lines: List[List[str]]) -> str:
    """The table every nexa command prints (``style.layout``: columns padded to their widest
    cell, two spaces apart, a dashed line under the header), at a tenth of tabulate's cost
    for 10,000 rows."""
    return layout(lines[0], lines[1:])


def render_table(results: Results) -> str:
    return align(grid(results)) + "\n" + "\n".join(summary(results))


def render_markdown(results: Results) -> str:
    head, *rows = grid(results)
    head[0] = "best"

    def cells(items: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*") for c in items) + " |"

    lines = [cells(head), "|" + "|".join("---" for _ in head) + "|"] + [cells(r) for r in rows]
    return "\n".join(lines) + "\n\n" + "\n".join(summary(results))


def csv_keys(results: Results) -> List[str]:
    """Every parameter of the shown tasks (csv has a column for each, varying or not)."""
    keys = list(results.keys)
    for row in results.rows:
        for key in row.params:
            if key not in keys:
                keys.append(key)
    return keys


def render_csv(results: Results) -> str:
    keys = csv_keys(results)
    metrics = ([results.metric] if results.metric else []) + results.others
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    trials = _trials(results)
    where = ["index"] + (["rung"] if trials else [])
    writer.writerow((["run"] if _campaign(results) else []) + where + ["state"] + keys + metrics + ["steps", "elapsed"])
    for row in results.rows:
        writer.writerow(
            ([row.run] if _campaign(results) else [])
            + [row.index]
            + ([exact(row.rung)] if trials else [])
            + [row.state]
            + [exact(row.params.get(k)) for k in keys]
            + [exact(row.metrics.get(m)) for m in metrics]
            + [row.steps, exact(row.elapsed)]
        )
    return buffer.getvalue().rstrip("\n")


def to_json(results: Results) -> Dict[str, Any]:
    """The ``--format json`` document (numbers exact)."""
    campaign = _campaign(results)
    rows = []
    for row in results.rows:
        item: Dict[str, Any] = {"run": row.run} if campaign else {}
        item.update(index=row.index, state=row.state, params=row.params, metrics=row.metrics, steps=row.steps, elapsed=row.elapsed)
        if row.rung is not None:
            item["rung"] = row.rung
        rows.append(item)
    best = None
    if results.best is not None:
        b = results.best
        best = {"run": b.run} if campaign else {}
        best.update(index=b.index, params=b.params, value=b.value)
    doc: Dict[str, Any] = {"run": results.run}
    if campaign:
        doc["campaign"] = results.campaign
    doc.update(metric=results.metric, mode=results.mode, reduce=results.reduce, rows=rows, best=best, skipped_lines=results.skipped_lines)
    return doc


def render(results: Results, fmt: str) -> str:
    """``results`` in one of ``FORMATS`` (a ConfigError for any other)."""
    if fmt == "table":
        return render_table(results)
    if fmt == "markdown":
        return render_markdown(results)
    if fmt == "csv":
        return render_csv(results)
    if fmt == "json":
        return json.dumps(to_json(results), indent=2, ensure_ascii=False)
    raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
