"""Strict conversion of TOML tables into frozen dataclasses.

One generic walker driven by the dataclasses' type hints, so a new config section is a new
dataclass and nothing else. Unknown keys (with a "did you mean"), wrong types and missing
required keys are ``ConfigError``s that name the file and the dotted key.
"""

import dataclasses
import difflib
import json
import math
import typing
from typing import Any, Dict, List, Type, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}

#: Keys whose strings reach a program as argv items, never a script line or a file name: the
#: only ones where a line break is allowed. Everywhere else one would end an ``#SBATCH`` line
#: in the generated script and start a shell command.
ARGV_KEYS = frozenset({"command", "arg_format"})


def describe(tp: Any) -> str:
    """Human words for a type hint, used in 'expected ...' messages."""
    origin = getattr(tp, "__origin__", None)
    args = getattr(tp, "__args__", ())
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if tp is Any:
        return "a value"
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        return " or ".join(describe(a) for a in inner)
    if origin in (list, List):
        return f"a list of {_plural(describe(args[0]))}" if args else "a list"
    if origin in (dict, Dict):
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _plural(words: str) -> str:
    for article in ("an ", "a "):
        if words.startswith(article):
            return words[len(article) :] + "s"
    return words


def key_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and len(word) >= 3:  # 'gpus' -> 'gpus_per_node'
        close = [c for c in choices if c.startswith(word)][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def convert(tp: Any, value: Any, path: str, key: str, *, argv: bool = False) -> Any:
    """Check ``value`` against hint ``tp``; return it converted (tables become dataclasses).
    ``argv``: strings may hold line breaks (see ``ARGV_KEYS``)."""
    origin = getattr(tp, "__origin__", None)
    args = getattr(tp, "__args__", ())
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:  # Optional[X]: X's own message (say, "expected a single line")
            return convert(inner[0], value, path, key, argv=argv)
        for candidate in inner:
            try:
                return convert(candidate, value, path, key, argv=argv)
            except ConfigError:
                continue
        raise _expected(tp, value, path, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _expected(tp, value, path, key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _expected(tp, value, path, key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # TOML has nan and inf; no setting means either
                raise ConfigError(f"expected a finite number, got {value!r}", path, key)
            return float(value)
        raise _expected(tp, value, path, key)
    if tp is str:
        if isinstance(value, str):
            check_text(value, path, key, argv=argv)
            return value
        raise _expected(tp, value, path, key)
    if origin in (list, List):
        if not isinstance(value, list):
            raise _expected(tp, value, path, key)
        return [convert(args[0], v, path, f"{key}[{i}]", argv=argv) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise _expected(tp, value, path, key)
        return {k: convert(args[1], v, path, key_path(key, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _expected(tp, value, path, key)
        return from_table(tp, value, path, key)
    raise TypeError(f"unsupported schema type {tp!r}")  # a bug in nexa, not user input


def check_text(value: str, path: str, key: str, *, argv: bool = False) -> None:
    """No NUL anywhere (no argv item, path or script can hold one); no line break outside argv."""
    if "\0" in value:
        raise ConfigError(f"expected text without NUL characters, got {_short(value)}", path, key)
    if not argv and ("\n" in value or "\r" in value):
        raise ConfigError(f"expected a single line, got {_short(value)}", path, key)


def _expected(tp: Any, value: Any, path: str, key: str) -> ConfigError:
    got = type(value).__name__
    got = {"dict": "table", "list": "array", "str": "string", "int": "integer", "float": "float", "bool": "boolean"}.get(got, got)
    return ConfigError(f"expected {describe(tp)}, got {got} {_short(value)}", path, key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def from_table(cls: Type[T], table: Dict[str, Any], path: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from TOML ``table``; strict about unknown and missing keys.

    A field's TOML name is its ``metadata["toml"]`` or its Python name.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.metadata.get("toml", f.name): f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in table:
        if key not in fields:
            raise ConfigError(f"unknown key{suggest(key, fields)}", path, key_path(prefix, key))
    kwargs = {}
    for toml_name, field in fields.items():
        full = key_path(prefix, toml_name)
        if toml_name in table:
            kwargs[field.name] = convert(hints[field.name], table[toml_name], path, full, argv=toml_name in ARGV_KEYS)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"missing required key (expected {describe(hints[field.name])})", path, full)
    return cls(**kwargs)


# --- JSON documents nexa wrote (run folders, cost manifests) -------------------------------
#
# Read back from disk they may have been edited or damaged: each reader names the fields it
# uses and the types it needs, and a document that fails is "not ours" rather than a crash.

Kind = typing.Tuple[typing.Tuple[type, ...], str]

INTEGER: Kind = ((int,), "an integer")  # bool is not: type() is compared, not isinstance()
NUMBER: Kind = ((int, float), "a number")
STRING: Kind = ((str,), "a string")
LIST: Kind = ((list,), "a list")
OBJECT: Kind = ((dict,), "an object")


def nullable(kind: Kind) -> Kind:
    """The same kind, or null (a missing value)."""
    return (kind[0] + (type(None),), kind[1])


def shown(value: Any) -> str:
    """A value as JSON, cut to 40 characters, for messages."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def field_problem(doc: Dict[str, Any], fields: Dict[str, Kind], prefix: str = "") -> typing.Optional[str]:
    """The first field of ``doc`` named in ``fields`` (key -> (types, what)) whose value has
    another type, as ``"<prefix><key> must be <what>, got <value>"``; None when all are right.
    An absent field passes; null passes where ``NoneType`` is among the types."""
    for key, (types, what) in fields.items():
        if key in doc and type(doc[key]) not in types:
            return f"{prefix}{key} must be {what}, got {shown(doc[key])}"
    return None
