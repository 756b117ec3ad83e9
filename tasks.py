"""``inv <task>`` in the repo runs the same collection as ``nexa <task>``."""

from nexa_ops.cli import ns  # noqa: F401
