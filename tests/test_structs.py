"""@frozen and @mutable behave as @dataclass(frozen=True) and @dataclass: the same repr,
equality and hashing, and the dataclasses functions work on them."""

import dataclasses
from dataclasses import field
from typing import List, Optional

import pytest

from nexa_ops.structs import frozen, mutable


def pair(decorate, reference):
    """The same class body made by ``decorate`` and by ``reference``."""

    def body():
        class Point:
            x: int
            y: Optional[str] = None
            tags: List[str] = field(default_factory=list)
            hidden: int = field(default=0, repr=False, compare=False)

        return Point

    return decorate(body()), reference(body())


@pytest.mark.parametrize("decorate, reference", [(frozen, dataclasses.dataclass(frozen=True)), (mutable, dataclasses.dataclass)])
def test_same_behaviour_as_dataclass(decorate, reference):
    ours, theirs = pair(decorate, reference)
    a, b = ours(1, "a", ["t"], hidden=5), theirs(1, "a", ["t"], hidden=5)
    assert repr(a) == repr(b) and repr(a).endswith(".Point(x=1, y='a', tags=['t'])")
    assert a == ours(1, "a", ["t"], hidden=9) and b == theirs(1, "a", ["t"], hidden=9)  # hidden is not compared
    assert a != ours(2) and (a == b) is False  # another class is never equal
    assert (a.__hash__ is None) == (b.__hash__ is None)
    if a.__hash__ is not None:
        c, d = ours(1, "a", ("t",)), theirs(1, "a", ("t",))
        assert hash(c) == hash(d)
    assert dataclasses.is_dataclass(a) and dataclasses.asdict(a) == dataclasses.asdict(b)
    assert dataclasses.replace(a, x=3).x == 3 and [f.name for f in dataclasses.fields(a)] == ["x", "y", "tags", "hidden"]


def test_frozen_stays_frozen():
    ours, _ = pair(frozen, dataclasses.dataclass(frozen=True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ours(1).x = 2
