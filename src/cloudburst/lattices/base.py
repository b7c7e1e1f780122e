"""The lattice protocol shared by every lattice type, plus small validation helpers.

Lattices are join-semilattices: ``merge`` is associative, commutative and idempotent, so replicas that see the
same updates in any order, any number of times, converge to the same value without coordination.
"""

from __future__ import annotations

import math
from typing import Protocol, Self, runtime_checkable


@runtime_checkable
class Lattice(Protocol):
    """A value whose ``merge`` is a join, so replicas converge regardless of delivery order.

    Implementations are immutable: ``merge`` returns a new value and never changes either operand, which lets
    callers share lattices between threads and keep old versions without defensive copies.
    """

    def merge(self, other: Self) -> Self:
        """The least upper bound of ``self`` and ``other``."""
        ...

    def reveal(self) -> object:
        """The user-visible content, stripped of the metadata that only exists to make merging converge."""
        ...


def require_bytes(what: str, value: object) -> None:
    """Rejects non-``bytes`` payloads early, because they would otherwise fail far away (e.g. at encoding)."""
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")


def require_int(what: str, value: object) -> int:
    """Rejects ``bool`` too: it is an ``int`` subclass, but a flag passed as a counter is always a bug."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


def require_number(what: str, value: object) -> None:
    """Rejects NaN because it is unordered, which would make ``max``/``min`` based merges order dependent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be an int or float, not {type(value).__name__}")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{what} must not be NaN")
