"""Read TOML with ``tomllib`` (3.11+) or the ``tomli`` backport; errors name the file.

The parser is imported on first use: modules that only import ``config`` for its
dataclasses (the promotion job of a halving sweep runs on a compute node with the standard
library only, see ``sweep/promote.py``) never load ``tomli``.
"""

import sys
from pathlib import Path
from typing import Any, Dict

from .errors import ConfigError


def _parser() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # pragma: no cover - exercised on older interpreters through nexa.pyz

    return tomli


def load(path: Path) -> Dict[str, Any]:
    """Parse ``path``; a missing file or a syntax error is a ``ConfigError``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", str(path)) from None
    return loads(text, str(path))


def loads(text: str, where: str) -> Dict[str, Any]:
    """Parse TOML ``text`` (e.g. a file shipped inside nexa.pyz); ``where`` names it in errors."""
    parser = _parser()
    try:
        return parser.loads(text)
    except parser.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", where) from None
