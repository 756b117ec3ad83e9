"""The results as a picture: SVG written with the standard library (no plotting package).

One small panel per varying parameter (the metric against the parameter's values; a log
axis where the values span a decade or more; the best task highlighted), and below them
the metric over the steps for the top tasks, with a legend. ``render_html`` wraps the
picture in a page with the ranking beside it. Pure: data in, text out.

The elements carry classes and ``data-`` attributes (``panel``, ``point``, ``best``,
``curve``, ``data-param``, ``data-index``) so tests, and anyone post-processing the file,
can find them.
"""

import html
import math
from typing import Any, List, Optional, Sequence, Tuple

from ..structs import mutable
from .table import Results, TaskResult, grid, metric_header, number, short, summary

WIDTH = 980
PANEL_H = 250
CURVES_H = 340
COLUMNS = 3
MARGIN = 24
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
INK = "#222222"
MUTED = "#666666"
GRID = "#e6e6e6"
POINT = "#4c78a8"
BEST = "#d62728"
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#72b7b2", "#9d755d", "#eeca3b", "#ff9da6", "#bab0ac"]
LOG_RATIO = 10.0  # positive values whose largest is 10x the smallest get a log axis


# --- scales and ticks -----------------------------------------------------------------------


@mutable
class Scale:
    """A value -> pixel map over ``[lo, hi]`` (log10 when ``log``) onto ``[start, end]``."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        lo, hi, v = self.lo, self.hi, value
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(value)
        t = 0.5 if hi == lo else (v - lo) / (hi - lo)
        return self.start + t * (self.end - self.start)


def wants_log(values: Sequence[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) >= LOG_RATIO


def domain(values: Sequence[float], log: bool, room: float = 0.1) -> Tuple[float, float]:
    """The values' range with ``room`` (a share of it) at both ends, in log space for a log
    axis, so that no point sits on an axis line."""
    lo, hi = min(values), max(values)
    if log:
        a, b = math.log10(lo), math.log10(hi)
        pad = (b - a) * room or 0.5
        return 10 ** (a - pad), 10 ** (b + pad)
    span = hi - lo
    pad = span * room if span else (abs(lo) * 0.1 or 1.0)
    return lo - pad, hi + pad


def nice_step(span: float, count: int = 5) -> float:
    raw = span / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power  # pragma: no cover - the loop ends at 10


def linear_ticks(lo: float, hi: float, count: int = 5, whole: bool = False) -> List[float]:
    """Round values between ``lo`` and ``hi``, about ``count`` of them (whole numbers only
    with ``whole``, for steps)."""
    if hi <= lo:
        return [lo]
    step = nice_step(hi - lo, count)
    if whole:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> List[float]:
    """Powers of ten in range; with fewer than three, the 2s and 5s between them too."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0**k for k in range(a, b + 1) if lo <= 10.0**k <= hi]
    if len(decades) >= 3:
        return decades
    more = [m * 10.0**k for k in range(a, b + 1) for m in (1, 2, 5) if lo <= m * 10.0**k <= hi]
    return more if len(more) >= 2 else more + [lo, hi][len(more) :]


def tick_label(value: float, step: Optional[float] = None) -> str:
    """Short tick text: ``0.001``, ``250``, ``1e-05``, ``3e+04``."""
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 1e5 or size < 1e-3:
        mantissa, exponent = f"{value:.1e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    if step is not None and step < 1:
        decimals = min(6, max(0, -math.floor(math.log10(step) + 1e-9)))
        text = f"{value:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:.4g}"


# --- drawing --------------------------------------------------------------------------------


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _text(x: float, y: float, content: str, size: int = 12, anchor: str = "middle", color: str = INK, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{color}"{extra}>{_esc(content)}</text>'


@mutable
class Box:
    """A panel's plotting area inside the picture."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


def _y_axis(box: Box, scale: Scale, label: str, out: List[str]) -> None:
    ticks = log_ticks(scale.lo, scale.hi) if scale.log else linear_ticks(scale.lo, scale.hi, 4)
    step = None if scale.log or len(ticks) < 2 else ticks[1] - ticks[0]
    for value in ticks:
        y = scale(value)
        out.append(f'<line x1="{box.left:.1f}" y1="{y:.1f}" x2="{box.right:.1f}" y2="{y:.1f}" stroke="{GRID}" stroke-width="1"/>')
        out.append(_text(box.left - 6, y + 4, tick_label(value, step), 11, "end", MUTED))
    out.append(f'<line x1="{box.left:.1f}" y1="{box.top:.1f}" x2="{box.left:.1f}" y2="{box.bottom:.1f}" stroke="{INK}" stroke-width="1"/>')
    cx, cy = box.left - 46, box.top + box.height / 2
    out.append(_text(cx, cy, label, 12, extra=f' transform="rotate(-90 {cx:.1f} {cy:.1f})"'))


def _x_axis_numeric(box: Box, scale: Scale, label: str, out: List[str], values: Sequence[float] = (), whole: bool = False) -> None:
    """Ticks at the parameter's own values when there are few (a grid's), else round ones."""
    distinct = sorted(set(values))
    if 2 <= len(distinct) <= 8 and all(scale(b) - scale(a) >= 34 for a, b in zip(distinct, distinct[1:])):
        ticks = distinct
        step = None
    else:
        ticks = log_ticks(scale.lo, scale.hi) if scale.log else linear_ticks(scale.lo, scale.hi, 4, whole)
        step = None if scale.log or len(ticks) < 2 else ticks[1] - ticks[0]
    for value in ticks:
        x = scale(value)
        out.append(f'<line x1="{x:.1f}" y1="{box.top:.1f}" x2="{x:.1f}" y2="{box.bottom:.1f}" stroke="{GRID}" stroke-width="1"/>')
        out.append(f'<line x1="{x:.1f}" y1="{box.bottom:.1f}" x2="{x:.1f}" y2="{box.bottom + 4:.1f}" stroke="{INK}" stroke-width="1"/>')
        out.append(_text(x, box.bottom + 17, tick_label(value, step), 11, color=MUTED))
    _x_line_and_label(box, label + (" (log)" if scale.log else ""), out)


def _x_line_and_label(box: Box, label: str, out: List[str]) -> None:
    out.append(
        f'<line x1="{box.left:.1f}" y1="{box.bottom:.1f}" x2="{box.right:.1f}" y2="{box.bottom:.1f}" stroke="{INK}" stroke-width="1"/>'
    )
    out.append(_text(box.left + box.width / 2, box.bottom + 36, label, 12, extra=' font-weight="bold"'))


def _jitter(index: int) -> float:
    """A small fixed sideways offset, so tasks sharing a parameter value do not hide each other."""
    return ((index * 7919) % 11 - 5) * 0.9


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _point(x: float, y: float, row: TaskResult, label: str, out: List[str]) -> None:
    tip = f"{label}: {number(row.value)} ({row.state})"
    if row.best:
        out.append(
            f'<circle class="point best" data-index="{row.index}" data-run="{_esc(row.run)}" cx="{x:.1f}" cy="{y:.1f}" r="7" '
            f'fill="{BEST}" stroke="{INK}" stroke-width="1.5"><title>{_esc("best: " + tip)}</title></circle>'
        )
    else:
        out.append(
            f'<circle class="point" data-index="{row.index}" data-run="{_esc(row.run)}" cx="{x:.1f}" cy="{y:.1f}" r="4.5" '
            f'fill="{POINT}" fill-opacity="0.75" stroke="white" stroke-width="0.8"><title>{_esc(tip)}</title></circle>'
        )


def task_label(row: TaskResult, keys: Sequence[str]) -> str:
    who = f"{row.run} task {row.index}" if row.run else f"task {row.index}"
    params = ", ".join(f"{k}={short(row.params[k], 12)}" for k in keys if k in row.params)
    return f"{who}" + (f" ({params})" if params else "")


def param_panel(results: Results, key: str, box: Box, y_scale: Scale, out: List[str]) -> None:
    """The metric against one parameter: a numeric axis (log when the values span a
    decade), or evenly spaced categories for text values."""
    rows = [r for r in results.rows if r.value is not None and key in r.params]
    values = [r.params[key] for r in rows]
    log = False
    if values and all(_is_number(v) for v in values):
        log = wants_log(values)
        lo, hi = domain(values, log)
        scale = Scale(lo, hi, box.left, box.right, log)
        out.append(f'<g class="panel param" data-param="{_esc(key)}" data-scale="{"log" if log else "linear"}">')
        _y_axis(box, y_scale, results.metric or "", out)
        _x_axis_numeric(box, scale, key, out, values)
        where = {id(r): scale(r.params[key]) for r in rows}
    else:
        categories: List[str] = []
        for v in values:
            text = short(v, 14)
            if text not in categories:
                categories.append(text)
        slot = box.width / max(1, len(categories))
        place = {c: box.left + slot * (i + 0.5) for i, c in enumerate(categories)}
        out.append(f'<g class="panel param" data-param="{_esc(key)}" data-scale="category">')
        _y_axis(box, y_scale, results.metric or "", out)
        turn = len(categories) > 6
        for c, x in place.items():
            out.append(f'<line x1="{x:.1f}" y1="{box.bottom:.1f}" x2="{x:.1f}" y2="{box.bottom + 4:.1f}" stroke="{INK}" stroke-width="1"/>')
            if turn:
                out.append(_text(x, box.bottom + 14, c, 10, "end", MUTED, f' transform="rotate(-30 {x:.1f} {box.bottom + 14:.1f})"'))
            else:
                out.append(_text(x, box.bottom + 17, c, 11, color=MUTED))
        _x_line_and_label(box, key, out)
        where = {id(r): place[short(r.params[key], 14)] for r in rows}
    for row in sorted(rows, key=lambda r: r.best):  # the best drawn last, on top
        _point(where[id(row)] + (0 if row.best else _jitter(row.index)), y_scale(row.value), row, task_label(row, results.keys), out)
    out.append("</g>")


def curves_panel(results: Results, curves: Sequence[Any], box: Box, legend_x: float, out: List[str]) -> None:
    """The metric over the steps of the top tasks, each its own colour, the best in red."""
    drawn = [c for c in curves if c.points]
    steps = [s for c in drawn for s, _ in c.points]
    values = [v for c in drawn for _, v in c.points]
    out.append(f'<g class="panel curves" data-tasks="{len(drawn)}">')
    out.append(_text(box.left, box.top - 12, f"{results.metric} over steps, top {len(drawn)}", 13, "start", extra=' font-weight="bold"'))
    if not drawn:
        out.append(_text(box.left + box.width / 2, box.top + box.height / 2, "no steps reported", 12, color=MUTED))
        out.append("</g>")
        return
    y_log = wants_log(values) and max(values) / min(values) >= 100
    y_scale = Scale(*domain(values, y_log), box.bottom, box.top, y_log)
    x_scale = Scale(*_step_domain(steps), box.left, box.right)
    _y_axis(box, y_scale, results.metric or "", out)
    _x_axis_numeric(box, x_scale, "step", out, whole=all(float(s).is_integer() for s in steps))
    colours = iter(PALETTE)
    styled = []
    for curve in drawn:
        colour = BEST if curve.row.best else next(colours, PALETTE[-1])
        styled.append((curve, colour))
    for curve, colour in sorted(styled, key=lambda cc: cc[0].row.best):
        width = 2.6 if curve.row.best else 1.7
        pts = " ".join(f"{x_scale(s):.1f},{y_scale(v):.1f}" for s, v in curve.points)
        label = _esc(task_label(curve.row, results.keys))
        if len(curve.points) == 1:
            ((s, v),) = curve.points
            out.append(
                f'<circle class="curve" data-index="{curve.row.index}" cx="{x_scale(s):.1f}" cy="{y_scale(v):.1f}" r="4" '
                f'fill="{colour}"><title>{label}</title></circle>'
            )
        else:
            out.append(
                f'<polyline class="curve" data-index="{curve.row.index}" points="{pts}" fill="none" stroke="{colour}" '
                f'stroke-width="{width}" stroke-linejoin="round" stroke-linecap="round"><title>{label}</title></polyline>'
            )
    y = box.top + 6
    for curve, colour in styled:
        row = curve.row
        out.append(
            f'<line x1="{legend_x:.1f}" y1="{y:.1f}" x2="{legend_x + 22:.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="{3 if row.best else 2}"/>'
        )
        who = f"{row.run} task {row.index}" if row.run else f"task {row.index}"
        head = f"{who}: {number(row.value)}" + ("  best" if row.best else "")
        out.append(_text(legend_x + 28, y + 4, head, 11, "start", extra=' font-weight="bold"' if row.best else ""))
        params = ", ".join(f"{k}={short(row.params[k], 12)}" for k in results.keys if k in row.params)
        if params:
            out.append(_text(legend_x + 28, y + 18, short(params, 40), 10, "start", MUTED))
        y += 38
    out.append("</g>")


def _step_domain(steps: Sequence[float]) -> Tuple[float, float]:
    lo, hi = min(steps), max(steps)
    return (lo, hi) if hi > lo else (lo - 1, hi + 1)


def render_svg(results: Results, curves: Sequence[Any]) -> str:
    """The whole picture; ``curves`` are ``load.Curve``s (row and points) of the top tasks."""
    keys = list(results.keys)
    measured = [r.value for r in results.rows if r.value is not None]
    cols = max(1, min(COLUMNS, len(keys)))
    rows_of_panels = math.ceil(len(keys) / cols) if keys else 0
    cell_w = (WIDTH - 2 * MARGIN) / cols
    top = 78
    height = top + rows_of_panels * (PANEL_H + 20) + CURVES_H + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="nexa-results" data-metric="{_esc(results.metric)}" '
        f'width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" font-family="{FONT}">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{height:.0f}" fill="white"/>',
    ]
    who = results.run if results.run else f"campaign {results.campaign}"
    out.append(_text(MARGIN, 30, f"{who}: {metric_header(results)}", 17, "start", extra=' font-weight="bold"'))
    subtitle = f"{len(measured)} of {len(results.rows)} task(s) reported {results.metric}"
    if results.best is not None:
        b = results.best
        subtitle += f"; best: {task_label(next(r for r in results.rows if r.best), keys)} = {number(b.value)}"
    out.append(_text(MARGIN, 52, subtitle, 12, "start", MUTED))
    if measured:
        y_log = wants_log(measured) and max(measured) / min(measured) >= 100
        y_lo, y_hi = domain(measured, y_log)
        for i, key in enumerate(keys):
            col, line = i % cols, i // cols
            box = Box(MARGIN + col * cell_w + 62, top + line * (PANEL_H + 20) + 10, cell_w - 80, PANEL_H - 64)
            param_panel(results, key, box, Scale(y_lo, y_hi, box.bottom, box.top, y_log), out)
    curves_top = top + rows_of_panels * (PANEL_H + 20) + 36
    legend_w = 250
    box = Box(MARGIN + 62, curves_top, WIDTH - 2 * MARGIN - 62 - legend_w - 20, CURVES_H - 80)
    curves_panel(results, curves, box, box.right + 24, out)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(results: Results, curves: Sequence[Any]) -> str:
    """A page: the picture, then the ranking as an HTML table and its summary lines."""
    head, *rows = grid(results)
    cells = "".join(f"<th>{_esc(c)}</th>" for c in head)
    body = "\n".join(
        "<tr" + (' class="best"' if r[0] == "*" else "") + ">" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    notes = "".join(f"<p>{_esc(line)}</p>" for line in summary(results))
    title = results.run if results.run else f"campaign {results.campaign}"
    style = (
        f"body{{font-family:{FONT};color:{INK};margin:24px}}table{{border-collapse:collapse;font-size:13px}}"
        "svg{max-width:100%;height:auto}p{font-size:13px;color:#444}"
        "th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}tr.best td{font-weight:bold;background:#fdecec}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_esc(title)}: {_esc(results.metric)}</title>'
        f"<style>{style}</style></head>\n<body>\n{render_svg(results, curves)}"
        f"<table>\n<tr>{cells}</tr>\n{body}\n</table>\n{notes}\n</body></html>\n"
    )


def render(results: Results, curves: Sequence[Any], path_suffix: str) -> str:
    """SVG or HTML by the file's suffix (``.svg``, ``.html``/``.htm``)."""
    return render_html(results, curves) if path_suffix.lower() in (".html", ".htm") else render_svg(results, curves)
