"""``promtool``: Prometheus's own checker, run on the files ``monitor-config`` writes."""

from pathlib import Path
from typing import Union

from .. import proc

HINT = "install the Debian package 'prometheus' or drop --check"


def check_config(path: Union[str, Path], *, dry_run: bool = False) -> proc.Result:
    """``promtool check config PATH``: the config and every rule file it loads. A config
    Prometheus would refuse raises ``ToolError`` with promtool's reason."""
    return proc.run(
        ["promtool", "check", "config", str(path)],
        dry_run=dry_run,
        hint=HINT,
        explain=lambda code, err: "the written config does not load in Prometheus",
    )
