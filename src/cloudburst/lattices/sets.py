"""Grow-only set lattices."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cloudburst.lattices.base import require_bytes


@dataclass(frozen=True, slots=True)
class SetLattice:
    """A grow-only set of byte strings; merge is union.

    Attributes:
        values: The elements. Any iterable is accepted and frozen, so the lattice stays hashable.
    """

    values: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        values: object = self.values
        if not isinstance(values, frozenset):
            if not isinstance(values, Iterable) or isinstance(values, bytes | str):
                raise TypeError(f"SetLattice.values must be a set of bytes, not {type(values).__name__}")
            object.__setattr__(self, "values", frozenset(values))
        for value in self.values:
            require_bytes("SetLattice element", value)

    def merge(self, other: SetLattice) -> SetLattice:
        """The union of both sets."""
        if other.values <= self.values:
            return self
        if self.values <= other.values:
            return other
        return SetLattice(self.values | other.values)

    def reveal(self) -> frozenset[bytes]:
        """The elements."""
        return self.values


@dataclass(frozen=True, slots=True)
class OrderedSetLattice:
    """A grow-only set kept sorted byte-lexicographically, for readers that need a stable iteration order.

    The tuple must already be strictly sorted (sorted, no duplicates) so that equal sets have exactly one
    representation; use :meth:`of` to normalise arbitrary input.

    Attributes:
        values: The elements in strictly increasing byte order.
    """

    values: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        values: object = self.values
        if not isinstance(values, tuple):
            raise TypeError(f"OrderedSetLattice.values must be a tuple, not {type(values).__name__}")
        for value in self.values:
            require_bytes("OrderedSetLattice element", value)
        if any(a >= b for a, b in zip(self.values, self.values[1:], strict=False)):
            raise ValueError("OrderedSetLattice.values must be strictly sorted; use OrderedSetLattice.of()")

    @classmethod
    def of(cls, values: Iterable[bytes]) -> OrderedSetLattice:
        """Builds the lattice from elements in any order, possibly repeated."""
        return cls(tuple(sorted(set(values))))

    def merge(self, other: OrderedSetLattice) -> OrderedSetLattice:
        """The sorted union of both sets."""
        return OrderedSetLattice(tuple(sorted(set(self.values).union(other.values))))

    def reveal(self) -> tuple[bytes, ...]:
        """The elements in byte order."""
        return self.values
