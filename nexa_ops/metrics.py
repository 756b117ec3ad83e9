"""Report metrics from a training program: ``log(step=100, val_loss=0.41, acc=0.88)``.

Standard library only and no nexa import, so a program can use it without nexa installed:
``from nexa_ops.metrics import log`` where nexa is importable, else load this one file by
path (or copy it beside the program)::

    import importlib.util
    spec = importlib.util.spec_from_file_location("nexa_metrics", "/path/to/nexa_ops/metrics.py")
    metrics = importlib.util.module_from_spec(spec); spec.loader.exec_module(metrics)
    metrics.log(step=1, loss=0.3)

Each call appends one JSON object as one line to ``$NEXA_METRICS_FILE``, the file nexa gives
every task (``<run>/metrics/<task>.jsonl``); ``nexa results`` ranks the tasks by them. Any
language can do the same: ``echo '{"loss": 0.3}' >> "$NEXA_METRICS_FILE"``.
"""

import json
import math
import os

ENV = "NEXA_METRICS_FILE"


def _plain(value):
    """A JSON-ready value: numbers stay numbers (NaN and infinities, which no JSON reader
    takes, become the text ``"nan"``/``"inf"``/``"-inf"``), tensors and NumPy scalars become
    their Python number, anything else its text."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def line(step=None, **metrics):
    """The JSON line ``log`` appends (with its newline), for tests and other writers."""
    record = {} if step is None else {"step": _plain(step)}
    for name, value in metrics.items():
        record[name] = _plain(value)
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def log(step=None, **metrics):
    """Append ``{"step": step, name: value, ...}`` to the metrics file; return whether it did.

    Numbers are metrics and ``step`` (optional) orders them; other values are kept as text.
    Under torchrun only rank 0 writes (``RANK`` unset or ``0``), so every rank may call it.
    Without ``$NEXA_METRICS_FILE`` (a program not started by nexa) nothing is written. The
    line goes out in one ``write`` on a file opened for appending, so lines of concurrent
    writers and of a requeued attempt never cut into each other.
    """
    path = os.environ.get(ENV)
    if not path or os.environ.get("RANK", "0") != "0":
        return False
    data = line(step, **metrics).encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except FileNotFoundError:  # a run folder from before nexa made metrics/ for its tasks
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return True
