"""Environment variables carried into a job through a file it sources: which ones, and the
file. Pure: the sweep's ``sweep.env`` and the launch's ``launch.env`` are both written here.

Only names that are plain identifiers (``config.is_env_name``) ever reach such a file: a name
with a line break would add lines to the script, ``WANDB_$(touch x)`` would run a command when
sourced. Values are shell-quoted. The files hold values from the submitting environment
(tokens among them): they are written readable by their owner alone (mode 0600).
"""

import shlex
from typing import Dict, List, Mapping, Sequence

from .config import is_env_name
from .errors import ConfigError

MODE = 0o600


def script_env_names(names: Sequence[str]) -> List[str]:
    """``names``, each checked to be a variable name before it is written into a script or
    a file the job sources."""
    for name in names:
        if not is_env_name(name):
            raise ConfigError(f"environment variable name {name!r}: expected letters, digits and '_', not starting with a digit")
    return list(names)


def select_prefixed(patterns: Sequence[str], environ: Mapping[str, str]) -> Dict[str, str]:
    """The variables of ``environ`` that ``patterns`` name: ``NAME`` exactly, or ``NAME_*``
    (a prefix), sorted by name. Names a script cannot hold are never chosen; unset ones are
    simply absent."""
    chosen: Dict[str, str] = {}
    for name in sorted(n for n in environ if is_env_name(n)):
        for pattern in patterns:
            if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                chosen[name] = environ[name]
                break
    return chosen


def env_file(values: Mapping[str, str], header: str) -> str:
    """``export NAME=value`` lines after a ``# header`` comment: every name checked, every
    value shell-quoted."""
    lines = [f"# {header}"]
    lines += [f"export {name}={shlex.quote(values[name])}" for name in script_env_names(list(values))]
    return "\n".join(lines) + "\n"
