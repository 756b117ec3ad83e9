"""Reading the metrics files tasks append to: ``<run>/metrics/<task>.jsonl``.

One JSON object per line. Numbers are metrics, ``step`` (a number, optional) orders them,
other values are kept as text. A line without a numeric ``step`` takes its place in the file
as its step (0, 1, 2, ... over the file's valid lines). When a step comes again (a requeued
attempt that resumed from a checkpoint reports it anew), the later line wins.

Lines that are not JSON, not an object, or hold NaN, an infinity or a number beyond a float's
range (a half-written last line included) are skipped and counted: never an error, as a run is read while it is written.

Speed matters here (``nexa results`` over 10,000 tasks of 100 lines): a file is parsed in
one ``json`` call as a JSON array of its lines, and taken apart column by column with
builtins when its lines share their keys (the usual file). Only a file with a bad line, or
lines of different shapes, is read line by line in plain Python.
"""

import json
import os
import re
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..runs import read_small
from ..structs import mutable

FOLDER = "metrics"
SUFFIX = ".jsonl"

Points = Dict[str, Dict[float, float]]  # metric -> step -> value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_INDEX = re.compile(r"(0|[1-9][0-9]*)\Z")  # ASCII digits, no leading zero: one file per task


@mutable
class Parsed:
    """One metrics file, parsed: every metric's points and the last text value of each
    other key, in the order they first appeared."""

    points: Points = field(default_factory=dict)
    text: Dict[str, str] = field(default_factory=dict)
    lines: int = 0  # valid lines
    skipped: int = 0  # bad lines


@mutable
class TaskMetrics:
    """What the results table needs of one task's file (the points themselves are dropped:
    10,000 tasks x 100 steps would not fit comfortably in memory)."""

    last: Dict[str, float] = field(default_factory=dict)  # value at the highest step
    low: Dict[str, float] = field(default_factory=dict)  # smallest value over the steps
    high: Dict[str, float] = field(default_factory=dict)  # largest value over the steps
    steps: int = 0  # distinct steps reported, over all metrics
    text: Dict[str, str] = field(default_factory=dict)
    lines: int = 0
    skipped: int = 0


def metrics_path(run_dir: Path, index: int) -> Path:
    """``<run>/metrics/<index>.jsonl``: the file task ``index`` gets as ``$NEXA_METRICS_FILE``."""
    return Path(run_dir) / FOLDER / f"{index}{SUFFIX}"


def parse(data: bytes) -> Parsed:
    """Parse the content of one metrics file (pure)."""
    out = Parsed()
    body = data.strip()
    if not body:
        return out
    objects: Optional[List[Any]] = None
    try:
        objects = _DECODER.decode("[" + body.decode("utf-8").replace("\n", ",") + "]")
    except ValueError:  # UnicodeDecodeError too
        pass
    if objects is not None and len(objects) == body.count(b"\n") + 1:
        if not _add_columns(out, objects):
            _add(out, objects, check=True)
    else:
        _add(out, _each_line(body, out), check=True)
    return out


_NUMBERS = frozenset((int, float))


def _add_columns(out: Parsed, objects: List[Any]) -> bool:
    """The common file, column by column: every line an object with the same keys, each key
    holding numbers only or text only. Builtins do the per-line work (a file of 100 lines
    costs a few list comprehensions, not 100 rounds of Python). Returns False, having
    changed nothing, for any other file: ``_add`` then reads it line by line."""
    if not objects or set(map(type, objects)) != {dict}:
        return False
    first = objects[0]
    if set(map(len, objects)) != {len(first)}:
        return False
    try:
        columns = {key: [obj[key] for obj in objects] for key in first}
    except KeyError:  # same sizes, other keys
        return False
    steps = columns.pop("step", None)
    if steps is None:
        steps = range(out.lines, out.lines + len(objects))
    elif not set(map(type, steps)) <= _NUMBERS or not _in_range(steps):
        return False  # some steps are not numbers: their lines take their place instead
    text = {}
    for key, values in columns.items():
        kinds = set(map(type, values))
        if kinds <= _NUMBERS:
            if not _in_range(values):
                return False  # an infinity (json reads 1e999 as one): that line is bad
            continue
        if kinds & _NUMBERS:
            return False  # numbers on some lines, text on others
        value = values[-1]
        text[key] = value if type(value) is str else json.dumps(value, ensure_ascii=False)
    for key, values in columns.items():
        if key in text:
            out.text[key] = text[key]
        else:
            out.points[key] = dict(zip(steps, values))  # a step given again: the later line wins
    out.lines += len(objects)
    return True


def _each_line(body: bytes, out: Parsed) -> Iterable[Any]:
    """Every line's JSON value; lines that do not parse are counted in ``out.skipped``."""
    for raw in body.split(b"\n"):
        raw = raw.strip()
        if not raw:
            continue
        try:
            yield _DECODER.decode(raw.decode("utf-8"))
        except ValueError:
            out.skipped += 1


def _add(out: Parsed, objects: Iterable[Any], check: bool) -> None:
    """Add parsed lines to ``out``; not an object, or (with ``check``) a non-finite number in
    it: skipped and counted. The plain loop below is the per-line cost of ``nexa results``."""
    points, text = out.points, out.text
    position, skipped = out.lines, 0
    for obj in objects:
        if type(obj) is not dict or (check and not _finite(obj)):
            skipped += 1
            continue
        step = obj.get("step", None)
        kind = type(step)
        if kind is not int and kind is not float:
            step = position
        position += 1
        for key, value in obj.items():
            kind = type(value)
            if kind is float or kind is int:
                if key != "step":
                    series = points.get(key)
                    if series is None:
                        series = points[key] = {}
                    series[step] = value
            elif key != "step":
                text[key] = value if kind is str else json.dumps(value, ensure_ascii=False)
    out.lines = position
    out.skipped += skipped


_LARGEST = 1.7976931348623157e308


def _in_range(numbers: List[Any]) -> bool:
    """No infinity and no integer beyond a float's range among ``numbers`` (NaN cannot be:
    the decoder refuses it, and no literal overflows into it)."""
    return -_LARGEST <= min(numbers) and max(numbers) <= _LARGEST


def _finite(obj: Dict[str, Any]) -> bool:
    """No infinity, and no integer too large for a float (a 309-digit number is no metric)."""
    for value in obj.values():
        kind = type(value)
        if kind is float and value - value != 0:  # inf - inf is nan; nan != 0
            return False
        if kind is int and not -_LARGEST <= value <= _LARGEST:
            return False
    return True


def summarise(parsed: Parsed) -> TaskMetrics:
    """The last, lowest and highest value of every metric, and the distinct steps."""
    last, low, high = {}, {}, {}
    steps = set()
    for name, series in parsed.points.items():
        last[name] = series[max(series)]
        values = series.values()
        low[name], high[name] = min(values), max(values)
        steps.update(series)
    return TaskMetrics(last, low, high, len(steps), parsed.text, parsed.lines, parsed.skipped)


def series(parsed: Parsed, metric: str) -> List[Tuple[float, float]]:
    """``(step, value)`` of one metric, by step: the curve the plot draws."""
    return sorted(parsed.points.get(metric, {}).items())


def read(path: Path) -> Parsed:
    """One metrics file, parsed; a file that is missing or unreadable has no lines."""
    try:
        return parse(read_small(str(path)))
    except OSError:
        return Parsed()


def read_run(run_dir: Path) -> Dict[int, TaskMetrics]:
    """Every task's metrics in ``<run>/metrics/``, by task index (one directory scan; names
    other than ``<index>.jsonl`` are not metrics files and are ignored)."""
    out: Dict[int, TaskMetrics] = {}
    try:
        entries = list(os.scandir(os.path.join(str(run_dir), FOLDER)))
    except OSError:
        return out
    for entry in entries:
        name = entry.name
        if not name.endswith(SUFFIX) or not _INDEX.match(name[: -len(SUFFIX)]):
            continue
        try:
            data = read_small(entry.path)  # open, read, close: thousands of files, each call a round trip on NFS
        except OSError:  # removed or unreadable meanwhile: as if not written yet
            continue
        out[int(name[: -len(SUFFIX)])] = summarise(parse(data))
    return out
