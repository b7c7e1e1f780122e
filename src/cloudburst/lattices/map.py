"""The key-wise map lattice."""

from __future__ import annotations

from collections.abc import Hashable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar, overload

from cloudburst.lattices.base import Lattice

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Lattice)
D = TypeVar("D")


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class MapLattice(Generic[K, V]):
    """A map whose values are lattices; merge joins values key-wise and keeps keys present on only one side.

    Attributes:
        entries: A read-only view over a private copy of the input, so later changes to the caller's mapping
            cannot alter (or unhash) the lattice.
    """

    entries: Mapping[K, V]

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    @classmethod
    def of(cls, entries: Mapping[K, V]) -> MapLattice[K, V]:
        """Builds the lattice from any mapping (copied)."""
        return cls(entries)

    @classmethod
    def _adopt(cls, owned: dict[K, V]) -> MapLattice[K, V]:
        """Wraps a dict nobody else references, skipping the defensive copy on the merge path."""
        lattice: MapLattice[K, V] = object.__new__(cls)
        object.__setattr__(lattice, "entries", MappingProxyType(owned))
        return lattice

    def merge(self, other: MapLattice[K, V]) -> MapLattice[K, V]:
        """The key-wise join; a key on only one side keeps that side's value."""
        merged = dict(self.entries)
        for key, value in other.entries.items():
            mine = merged.get(key)
            merged[key] = value if mine is None else mine.merge(value)
        return MapLattice._adopt(merged)

    def reveal(self) -> dict[K, object]:
        """A fresh dict of every key's revealed value."""
        return {key: value.reveal() for key, value in self.entries.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MapLattice):
            return NotImplemented
        return self.entries == other.entries

    def __repr__(self) -> str:
        return f"MapLattice({dict(self.entries)!r})"

    def __reduce__(self) -> tuple[type[MapLattice[K, V]], tuple[dict[K, V]]]:
        # A mappingproxy cannot be pickled, so rebuild from a plain dict (cloudpickle and deepcopy need this).
        return (type(self), (dict(self.entries),))

    def __hash__(self) -> int:
        # Order independent, so maps that compare equal hash equally whatever their insertion order.
        return hash(frozenset(self.entries.items()))

    def __getitem__(self, key: K) -> V:
        return self.entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self.entries)

    @overload
    def get(self, key: K, default: None = None) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: object = None) -> object:
        """The value at ``key``, or ``default`` when the key is absent."""
        return self.entries.get(key, default)

    def keys(self) -> KeysView[K]:
        """A read-only view of the keys."""
        return self.entries.keys()

    def values(self) -> ValuesView[V]:
        """A read-only view of the (unrevealed) lattice values."""
        return self.entries.values()

    def items(self) -> ItemsView[K, V]:
        """A read-only view of ``(key, lattice)`` pairs."""
        return self.entries.items()
