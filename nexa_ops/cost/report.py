"""Cost reports: sum the cost book by campaign, user, GPU type or run; budgets; spend.

``cost_report`` reconciles unfinished runs first, so a cron report is current; a file that
is not a nexa cost manifest is reported on stderr and skipped, never summed.
"""

import csv
import datetime
import io
import json
import re
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple, Union

from tabulate import tabulate

from ..errors import ConfigError, NexaError, Refused
from ..fs import atomic_write_text
from ..structs import frozen, mutable
from ..style import layout
from .book import PREFIX, TERMINAL, manifest_problem, manifests_dir, scan, update_manifest, warn
from .reconcile import SlurmAnswers, reconcile_manifest

#: A finished run's cost manifest -> the cost of its allocated-but-idle GPUs, or None.
IdleCost = Callable[[Dict[str, Any]], Optional[float]]
BY = {"campaign": "campaign", "user": "user", "gpu": "gpu_type", "run": "run_id"}
FORMATS = ("table", "csv", "json", "markdown")


def parse_when(text: str, option: str, end: bool = False, now: Optional[float] = None) -> str:
    """``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS][Z]`` (UTC) or ``Nd`` (N days ago) as the
    manifests' own timestamp format, so filtering is a string comparison. A bare date as
    ``--until`` means the end of that day."""
    text = text.strip()
    now = time.time() if now is None else now
    m = re.match(r"^(\d+)d$", text)
    if m:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - int(m.group(1)) * 86400))
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?Z?)?$", text)
    if not m:
        raise ConfigError(f"{option}: expected a date like 2025-12-31, 2025-12-31T18:00 (UTC) or 7d, got {text!r}")
    y, mo, d, hh, mm, ss = m.groups()
    try:
        datetime.datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}: {text!r}") from None
    if hh is None:
        return f"{y}-{mo}-{d}T23:59:59Z" if end else f"{y}-{mo}-{d}T00:00:00Z"
    return f"{y}-{mo}-{d}T{hh}:{mm}:{ss or ('59' if end else '00')}Z"


NUMBERS = ("estimated_gpu_hours", "estimated_usd", "actual_gpu_hours", "actual_usd")
#: Right-aligned columns: counts, sums, and idle_usd (shown only where utilisation is known).
FIGURES = ("runs", "tasks", "tasks_done", *NUMBERS, "idle_usd")


@mutable
class CostReport:
    """Rows grouped by ``by`` plus totals; ``skipped`` lists files that were not read."""

    by: str
    rows: List[Dict[str, Any]]
    totals: Dict[str, Any]
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    filters: Dict[str, Optional[str]] = field(default_factory=dict)
    manifests: int = 0  # cost manifests read from the folder, before the filters (0: nothing there)
    folder: Optional[Path] = None  # the manifests folder read

    def columns(self) -> List[str]:
        key = BY[self.by]
        extra = ["campaign", "user", "gpu_type", "status"] if self.by == "run" else []
        idle = ["idle_usd"] if any(row.get("idle_usd") is not None for row in self.rows) else []
        return [key] + extra + ["runs", "tasks", "tasks_done", *NUMBERS, *idle]

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            doc = {
                "by": self.by,
                "filters": self.filters,
                "currency": "USD",
                "rows": self.rows,
                "totals": self.totals,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            }
            return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        cols = self.columns()
        total = dict(self.totals, **{cols[0]: "TOTAL"})
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(cols)
            for row in self.rows + [total]:
                writer.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
            return buf.getvalue()
        if fmt not in ("table", "markdown"):
            raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        heads = [_HEADS.get(c, c) for c in cols]
        body = [[_cell(row.get(c), c) for c in cols] for row in self.rows]
        body.append([_cell(total.get(c), c) for c in cols])
        numbers = [i for i, c in enumerate(cols) if c in FIGURES]
        if fmt == "markdown":
            align = [("right" if c in FIGURES else "left") for c in cols]
            text = tabulate(body, headers=heads, tablefmt="github", disable_numparse=True, colalign=align)
        else:
            text = layout(heads, body, right=numbers)  # the table every nexa command prints
        title = f"Cost by {self.by}" + "".join(f", {k} {v}" for k, v in self.filters.items() if v)
        if fmt == "markdown":
            return f"### {title} (USD)\n\n{text}\n"
        return f"{title} (USD)\n{text}\n"


_HEADS = {
    "estimated_gpu_hours": "est gpu-h",
    "estimated_usd": "est $",
    "actual_gpu_hours": "actual gpu-h",
    "actual_usd": "actual $",
    "idle_usd": "idle $",
    "tasks_done": "done",
    "gpu_type": "gpu",
    "run_id": "run",
}


def _cell(value: Any, col: str) -> str:
    if value is None:
        return "-"
    if col in NUMBERS or col == "idle_usd":  # cents and hundredths, but a small non-zero figure keeps 4 digits
        return f"{value:.4f}" if 0 < abs(value) < 1 else f"{value:,.2f}"
    return str(value)


def _new_row() -> Dict[str, Any]:
    return {
        "runs": 0,
        "tasks": 0,
        "tasks_done": 0,
        "estimated_gpu_hours": 0.0,
        "estimated_usd": 0.0,
        "actual_gpu_hours": 0.0,
        "actual_usd": 0.0,
        "idle_usd": None,  # None until a run's utilisation is known
    }


def cost_report(
    runs_dir: Path,
    *,
    campaign: Optional[str] = None,
    since: Optional[str] = None,
    until: Optional[str] = None,
    by: str = "campaign",
    reconcile_first: bool = True,
    use_sacct: Optional[bool] = None,
    dry_run: bool = False,
    err: TextIO = sys.stderr,
    idle: Optional[IdleCost] = None,
) -> CostReport:
    """Sum the cost manifests under ``runs_dir/manifests``.

    A file that is not valid JSON or not a nexa cost manifest is reported on ``err`` and
    skipped. A missing estimate or actual figure counts as 0 in the sums.

    Args:
        runs_dir: the runs folder whose ``manifests/`` holds the ``cost_<run_id>.json`` files.
        campaign: only this campaign (default None: all).
        since: only runs submitted at or after this time: ``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS]``
            (UTC) or ``Nd`` for N days ago (default None: no lower bound; see ``parse_when``).
        until: only runs submitted at or before this time, same forms; a bare date means the end
            of that day (default None: no upper bound).
        by: group rows by ``campaign`` (default), ``user``, ``gpu`` or ``run``.
        reconcile_first: reconcile unfinished runs before summing, so actual figures are current
            (default True); a run that fails to reconcile is warned about and summed as it is.
        use_sacct: for that reconciling, True/False to use accounting or not; None (default) tries
            ``sacct`` and falls back to the worker's records.
        dry_run: reconcile without writing the manifests back (default False).
        err: where warnings about skipped or unreconciled files go (default stderr).
        idle: for each finished run without an ``idle_usd`` yet, a function giving the cost
            of its idle GPUs, or None where utilisation is unknown (the CLI passes
            ``efficiency.idle_gpu`` when ``[monitor] prometheus_url`` is set); the figure is
            kept in the manifest. Default None: no idle column unless manifests have one.

    Returns:
        CostReport: ``by``, ``rows`` (one per group, sorted by key: ``runs``, ``tasks``, ``tasks_done``,
        estimated and actual GPU-hours and USD), ``totals`` (the same sums over all rows),
        ``skipped`` (``(path, reason)`` of files not read), ``filters`` and ``manifests`` (how many were
        read, see ``check_not_empty``); ``render(fmt)`` formats it.

    Raises:
        ConfigError: a bad ``by``, ``since`` or ``until``.
        NexaError: the manifests folder cannot be listed.
    """
    if by not in BY:
        raise ConfigError(f"--by: expected one of {', '.join(BY)}, got {by!r}")
    since_key = parse_when(since, "--since") if since else None
    until_key = parse_when(until, "--until", end=True) if until else None
    key_name = BY[by]
    groups: Dict[str, Dict[str, Any]] = {}
    skipped: List[Tuple[str, str]] = []
    answers = SlurmAnswers(use_sacct)
    folder = manifests_dir(runs_dir)
    read = 0
    for path, name in scan(folder, err):
        try:
            with open(path, "rb") as fh:
                doc = json.loads(fh.read())
        except (OSError, ValueError) as exc:
            reason = f"corrupt JSON: {exc}" if isinstance(exc, ValueError) else f"unreadable: {exc.strerror}"
            skipped.append((path, reason))
            warn(err, path, f"skipped: {reason}")
            continue
        problem = manifest_problem(doc) if name.startswith(PREFIX) else "not a nexa cost manifest"
        if problem:
            skipped.append((path, problem))
            warn(err, path, f"skipped: {problem}")
            continue
        read += 1
        if campaign is not None and doc.get("campaign") != campaign:
            continue
        when = doc.get("submitted_at") or ""
        if (since_key and when < since_key) or (until_key and when > until_key):
            continue
        if reconcile_first and doc.get("status") not in TERMINAL:
            try:
                doc = reconcile_manifest(Path(path), runs_dir, answers, dry_run=dry_run)[0]
            except (OSError, ValueError, NexaError) as exc:
                warn(err, path, f"not reconciled: {exc}")
        if idle is not None and doc.get("idle_usd") is None and doc.get("status") in TERMINAL:
            doc = _with_idle(Path(path), doc, idle, dry_run, err)
        key = doc.get(key_name)
        key = "-" if key is None else str(key)
        row = groups.get(key)
        if row is None:
            row = groups[key] = _new_row()
            row[key_name] = key
            if by == "run":
                row.update(campaign=doc.get("campaign"), user=doc.get("user"), gpu_type=doc.get("gpu_type"), status=doc.get("status"))
        row["runs"] += 1
        row["tasks"] += doc.get("tasks") or 0
        row["tasks_done"] += (doc.get("tasks_ok") or 0) + (doc.get("tasks_failed") or 0)
        for k in NUMBERS:
            row[k] += doc.get(k) or 0.0
        row["idle_usd"] = _plus(row["idle_usd"], doc.get("idle_usd"))
    rows = [groups[k] for k in sorted(groups)]
    totals = _new_row()
    for row in rows:
        for k in totals:
            totals[k] = _plus(totals[k], row[k]) if k == "idle_usd" else totals[k] + row[k]
    for row in rows + [totals]:
        for k in NUMBERS:
            row[k] = round(row[k], 6)
        if row["idle_usd"] is not None:
            row["idle_usd"] = round(row["idle_usd"], 6)
    filters = {"campaign": campaign, "since": since_key, "until": until_key}
    return CostReport(by, rows, totals, skipped, filters, manifests=read, folder=folder)


def check_not_empty(report: CostReport) -> None:
    """Refuse a report of a folder that holds no cost manifest at all: an all-zero table that
    exits 0 is how a cron job pointed at the wrong folder goes unnoticed for months.

    Raises:
        ConfigError: no cost manifest was read (exit 2).
    """
    if report.manifests == 0:
        raise ConfigError(f"no cost manifests under {report.folder} (is --runs-dir or the project right? --allow-empty reports nothing)")


def _plus(total: Optional[float], value: Any) -> Optional[float]:
    """A sum of the figures that are known (None while none is)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return total
    return (total or 0.0) + float(value)


def _with_idle(path: Path, doc: Dict[str, Any], idle: IdleCost, dry_run: bool, err: TextIO) -> Dict[str, Any]:
    """``doc`` with ``idle_usd`` from ``idle(doc)`` when it can be known; a finished run's
    figure no longer changes, so it is kept in the manifest and asked for once."""
    try:
        value = idle(doc)
    except (OSError, ValueError, NexaError) as exc:
        warn(err, path, f"idle cost unknown: {exc}")
        return doc
    if value is None:
        return doc
    if not dry_run:
        update_manifest(path, lambda current: dict(current, idle_usd=value))
    return dict(doc, idle_usd=value)


def check_budget(report: CostReport, budget: Optional[float]) -> None:
    """Refuse (exit 3 from the CLI) when the report's actual spend is above ``budget``, or
    when the spend cannot be vouched for: a file of the cost book was skipped (unreadable,
    corrupt, or not a valid cost manifest: its spend is missing from the total). A cron guard
    must not pass on bad data.

    Args:
        report: a ``CostReport`` from ``cost_report``.
        budget: the limit in the report's currency; None checks nothing.

    Raises:
        Refused: the actual spend is above the budget, or the book has files that were skipped.
    """
    if budget is None:
        return
    total = report.totals["actual_usd"]
    if not 0 <= total < float("inf"):  # cannot happen with checked manifests; never pass on it
        raise Refused(f"actual spend {total!r} is not a number: --budget ${budget:,.2f} not checked")
    if total > budget:
        raise Refused(f"actual spend ${total:,.2f} is above --budget ${budget:,.2f}")
    if report.skipped:
        raise Refused(
            f"--budget ${budget:,.2f} not checked: {len(report.skipped)} file(s) of the cost book were skipped (see the warnings), "
            f"so the actual spend ${total:,.2f} may be short; first skipped: {report.skipped[0][0]}"
        )


def write_report(
    report: CostReport, fmt: str = "table", output: Optional[Union[str, Path]] = None, out: TextIO = sys.stdout
) -> Optional[Path]:
    """Render and print, or write atomically to ``output`` (a cron job's file is never half)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    text = report.render(fmt)
    if output is None:
        out.write(text)
        out.flush()
        return None
    try:
        return atomic_write_text(Path(output), text)
    except OSError as exc:
        raise NexaError(f"{output}: cannot write: {exc.strerror or exc}") from None


# --- campaign spend (teardown) --------------------------------------------------------------


@frozen
class CampaignSpend:
    campaign: str
    runs: int
    estimated_usd: float
    actual_usd: float


def campaign_spend(runs_dir: Path, campaign: str, *, reconcile_first: bool = True, err: TextIO = sys.stderr) -> CampaignSpend:
    """What a campaign's runs were estimated to cost and actually cost so far (USD).

    Args:
        runs_dir: the runs folder whose ``manifests/`` holds the cost manifests.
        campaign: the campaign whose runs are summed.
        reconcile_first: reconcile its unfinished runs first, so actual figures are current
            (default True).
        err: where warnings about skipped or unreconciled manifests go (default stderr).

    Returns:
        CampaignSpend: ``campaign``, ``runs`` (the number of its manifests), ``estimated_usd`` and
        ``actual_usd`` (sums; a missing figure counts as 0).

    Raises:
        NexaError: the manifests folder cannot be listed.
    """
    report = cost_report(Path(runs_dir), campaign=campaign, by="campaign", reconcile_first=reconcile_first, err=err)
    t = report.totals
    return CampaignSpend(campaign, int(t["runs"]), float(t["estimated_usd"]), float(t["actual_usd"]))
