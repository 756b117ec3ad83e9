"""Dataclasses that cost less to define: ``@frozen`` is ``@dataclass(frozen=True)`` and
``@mutable`` is ``@dataclass``, with the same ``__init__``, ``__repr__``, ``__eq__`` and
``__hash__`` behaviour.

``dataclasses`` (before 3.13) compiles every method it generates from source with its own
``exec``, about 50 microseconds each, six for a frozen class. ``__repr__``, ``__eq__`` and
``__hash__`` do the same for every class, so here they are three shared functions that read
the class's fields, and only ``__init__`` (and a frozen class's ``__setattr__`` and
``__delattr__``) is compiled: 40 classes are defined before a sweep is planned, and this
saves a twentieth of the start-up of every command. (No class here defines these methods
itself: one that did would need ``dataclass`` itself.)
"""

from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Tuple, Type, TypeVar

T = TypeVar("T")


def _shown(self: Any) -> str:
    """``Name(a=1, b='x')``, as a dataclass shows itself (fields with ``repr=False`` left out)."""
    inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
    return f"{type(self).__qualname__}({inner})"


def _compared(self: Any) -> Tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in fields(self) if f.compare)


def _equal(self: Any, other: Any) -> Any:
    """Equal when of the very same class with equal compared fields, as a dataclass is."""
    if other.__class__ is self.__class__:
        return _compared(self) == _compared(other)
    return NotImplemented


def _hashed(self: Any) -> int:
    return hash(tuple(getattr(self, f.name) for f in fields(self) if (f.compare if f.hash is None else f.hash)))


def _finish(cls: Type[T], hashing: Optional[Callable[[Any], int]]) -> Type[T]:
    cls.__repr__ = _shown  # type: ignore[assignment]
    cls.__eq__ = _equal  # type: ignore[assignment]
    cls.__hash__ = hashing  # type: ignore[assignment]  # None: unhashable, as a mutable dataclass
    return cls


def frozen(cls: Type[T]) -> Type[T]:
    """``@dataclass(frozen=True)``: immutable, compared and hashed by its fields."""
    return _finish(dataclass(frozen=True, repr=False, eq=False)(cls), _hashed)


def mutable(cls: Type[T]) -> Type[T]:
    """``@dataclass``: compared by its fields, and so not hashable."""
    return _finish(dataclass(repr=False, eq=False)(cls), None)
