"""The last-writer-wins register."""

from __future__ import annotations

from dataclasses import dataclass

from cloudburst.lattices.base import require_bytes, require_int

_UINT64_LIMIT = 2**64


@dataclass(frozen=True, slots=True)
class LwwLattice:
    """A register where the write with the greatest ``(timestamp, value)`` wins.

    Timestamps are generated elsewhere with the writer's id in the low bits, so ordering by timestamp already
    orders by (time, writer) and distinct writers never tie. Two writes can still share a timestamp (the same
    writer retrying, or a clock collision); those ties are broken by the value bytes so that merge is
    commutative. The original system let the incoming value win ties, which let replicas diverge.

    Attributes:
        timestamp: Unsigned 64-bit write time (the wire format's range).
        value: The written payload; an empty value is how deletions are recorded.
    """

    timestamp: int
    value: bytes

    def __post_init__(self) -> None:
        timestamp = require_int("LwwLattice.timestamp", self.timestamp)
        if not 0 <= timestamp < _UINT64_LIMIT:
            raise ValueError(f"LwwLattice.timestamp must be in [0, 2**64), got {timestamp}")
        require_bytes("LwwLattice.value", self.value)

    def merge(self, other: LwwLattice) -> LwwLattice:
        """The write that is greater in the total order ``(timestamp, value)``."""
        if (other.timestamp, other.value) > (self.timestamp, self.value):
            return other
        return self

    def reveal(self) -> bytes:
        """The winning value."""
        return self.value
