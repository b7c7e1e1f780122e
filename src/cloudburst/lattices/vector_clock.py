"""Vector clocks: the causal-history summary used by the causal lattices."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from cloudburst.lattices.base import require_int

_UINT32_LIMIT = 2**32


class CausalOrder(enum.Enum):
    """How two vector clocks relate; ``a.compare(b) is BEFORE`` means ``a`` happened before ``b``."""

    BEFORE = enum.auto()
    AFTER = enum.auto()
    EQUAL = enum.auto()
    CONCURRENT = enum.auto()


@dataclass(frozen=True, slots=True)
class VectorClock:
    """A map from node id to event counter, ordered pointwise; merge is the pointwise maximum.

    The representation is canonical so that structural equality is causal equality: entries are sorted by
    node id, and zero counters are omitted because an absent node already means zero. Counters are limited to
    uint32 because that is what the wire format carries.

    Attributes:
        entries: ``(node_id, counter)`` pairs, strictly sorted by node id, with ``0 < counter < 2**32``.
    """

    entries: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        entries: object = self.entries
        if not isinstance(entries, tuple):
            raise TypeError(f"VectorClock.entries must be a tuple, not {type(entries).__name__}")
        previous: str | None = None
        for entry in entries:
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise TypeError(f"VectorClock entry must be a (node_id, counter) pair, got {entry!r}")
            node_id, counter = entry
            if not isinstance(node_id, str):
                raise TypeError(f"VectorClock node id must be a str, not {type(node_id).__name__}")
            _check_counter(node_id, counter)
            if counter == 0:
                raise ValueError(f"VectorClock counter for {node_id!r} is 0; use VectorClock.of()")
            if previous is not None and node_id <= previous:
                raise ValueError("VectorClock.entries must be sorted by unique node id; use VectorClock.of()")
            previous = node_id

    @classmethod
    def of(cls, clock: Mapping[str, int] | None = None) -> VectorClock:
        """Builds a clock from a mapping, dropping zero counters and sorting by node id.

        Raises:
            ValueError: A counter is negative or does not fit in uint32.
        """
        if not clock:
            return cls()
        for node_id, counter in clock.items():
            _check_counter(node_id, counter)
        return cls(tuple(sorted((node, counter) for node, counter in clock.items() if counter != 0)))

    def merge(self, other: VectorClock) -> VectorClock:
        """The pointwise maximum, i.e. the smallest clock that has seen everything either side has."""
        if not other.entries:
            return self
        if not self.entries:
            return other
        joined = dict(self.entries)
        for node_id, counter in other.entries:
            if counter > joined.get(node_id, 0):
                joined[node_id] = counter
        return VectorClock(tuple(sorted(joined.items())))

    def compare(self, other: VectorClock) -> CausalOrder:
        """The causal relation of ``self`` to ``other`` (``BEFORE`` means ``self`` is strictly smaller)."""
        le = _pointwise_le(self, other)
        ge = _pointwise_le(other, self)
        if le and ge:
            return CausalOrder.EQUAL
        if le:
            return CausalOrder.BEFORE
        if ge:
            return CausalOrder.AFTER
        return CausalOrder.CONCURRENT

    def dominates(self, other: VectorClock) -> bool:
        """Whether ``self`` has seen every event ``other`` has (pointwise ``>=``; true for equal clocks)."""
        return _pointwise_le(other, self)

    def increment(self, node_id: str) -> VectorClock:
        """The clock after one more event at ``node_id``, adding the entry if the node was not yet present.

        The original silently ignored absent ids, so a node's first write carried no trace of its author.

        Raises:
            ValueError: The counter would overflow uint32.
        """
        if not isinstance(node_id, str):
            raise TypeError(f"VectorClock node id must be a str, not {type(node_id).__name__}")
        counters = dict(self.entries)
        counters[node_id] = counters.get(node_id, 0) + 1
        return VectorClock.of(counters)

    def get(self, node_id: str) -> int:
        """The counter for ``node_id``, 0 when absent."""
        for node, counter in self.entries:
            if node == node_id:
                return counter
        return 0

    def as_dict(self) -> dict[str, int]:
        """A fresh, mutable copy of the non-zero counters."""
        return dict(self.entries)

    def reveal(self) -> dict[str, int]:
        """The counters as a dict."""
        return dict(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)


def _check_counter(node_id: str, counter: object) -> None:
    value = require_int(f"VectorClock counter for {node_id!r}", counter)
    if not 0 <= value < _UINT32_LIMIT:
        raise ValueError(f"VectorClock counter for {node_id!r} must be in [0, 2**32), got {value}")


def _pointwise_le(small: VectorClock, big: VectorClock) -> bool:
    """Whether every counter of ``small`` is at most the matching counter of ``big``."""
    if len(small.entries) > len(big.entries):
        # Every node of ``small`` has a positive counter, so ``big`` would need at least as many entries.
        return False
    counters = dict(big.entries)
    return all(counter <= counters.get(node, 0) for node, counter in small.entries)
