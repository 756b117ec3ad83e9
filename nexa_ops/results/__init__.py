"""Which configuration won: the metrics tasks report, ranked, as a table, a file and a picture.

- ``metrics``: reading ``<run>/metrics/<task>.jsonl`` (the protocol is in its docstring);
- ``table``: ranking and the table, markdown, csv and json renderings (pure);
- ``plot``: the SVG/HTML picture (pure);
- ``load``: ``load_results`` and ``best_config``, joining ``track.status`` with the metrics.

The training side's helper is ``nexa_ops.metrics`` (standard library only).
"""

from .load import best_config, load_results
from .table import BestConfig, Results, TaskResult

__all__ = ["BestConfig", "Results", "TaskResult", "best_config", "load_results"]
