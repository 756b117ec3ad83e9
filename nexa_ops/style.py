"""How nexa's output looks on a terminal: colour (only where it helps, never in a pipe) and
the one table layout every command prints.

Pure and stdlib-only: the commands decide what to paint, this module how. Colour is on when
the stream is a terminal, ``NO_COLOR`` is unset or empty (https://no-color.org), ``TERM``
is not ``dumb`` and ``--no-color`` was not given (``cli`` sets ``COLOR`` to False then).
"""

import os
import re
from typing import Any, Dict, List, Optional, Sequence

#: None: decide per stream; False: ``--no-color`` was given.
COLOR: Optional[bool] = None

RESET = "\x1b[0m"
CODES = {"red": "31", "green": "32", "yellow": "33", "dim": "2", "bold": "1"}
#: A task state's colour by its bucket (``runs.bucket``): every failed state is red.
BUCKET_COLORS = {"failed": "red", "done": "green", "running": "yellow", "pending": "dim"}
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def color_enabled(stream: Any, environ: Optional[Dict[str, str]] = None) -> bool:
    """Whether to colour what goes to ``stream``."""
    env = os.environ if environ is None else environ
    if COLOR is False or env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def paint(text: str, color: Optional[str], on: bool) -> str:
    """``text`` in ``color`` (a name of ``CODES``) when ``on``; else as it is."""
    if not on or not color or not text:
        return text
    return f"\x1b[{CODES[color]}m{text}{RESET}"


def visible_len(text: str) -> int:
    """Width of ``text`` on screen: colour codes take none."""
    return len(ANSI_RE.sub("", text)) if "\x1b" in text else len(text)


def layout(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """The table every command prints: columns two spaces apart, each as wide as its widest
    cell, a dashed line under the lower-case headers, columns in ``right`` right-aligned.

    Cells are shown with ``str`` (None as empty) and may hold colour codes. Fast enough for
    10,000 rows (no per-cell number parsing)."""
    lines: List[List[str]] = [[str(h) for h in headers]]
    lines += [["" if c is None else str(c) for c in row] for row in rows]
    colored = any("\x1b" in cell for line in lines for cell in line)
    measure = visible_len if colored else len
    widths = [max(map(measure, column)) for column in zip(*lines)] if lines[0] else []
    out = []
    for line in lines:
        if not colored and not right:
            out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
            continue
        cells = []
        for i, (cell, width) in enumerate(zip(line, widths)):
            pad = " " * (width - measure(cell))
            cells.append(pad + cell if i in right else cell + pad)
        out.append("  ".join(cells).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_seconds(seconds: Optional[float]) -> str:
    """A duration as the tables show it: ``M:SS``, or ``H:MM:SS`` from an hour; "" when unknown."""
    if seconds is None:
        return ""
    total = int(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
