"""Single-value lattices: numeric maximum, boolean OR and lowest-priority-wins."""

from __future__ import annotations

from dataclasses import dataclass

from cloudburst.lattices.base import require_bytes, require_number


@dataclass(frozen=True, slots=True)
class MaxLattice:
    """A number that only grows; merge keeps the maximum.

    Python ints are unbounded, so unlike the original fixed-width counter nothing is truncated.

    Attributes:
        value: Any int or float except NaN (NaN is unordered, which would make merge order dependent).
    """

    value: int | float

    def __post_init__(self) -> None:
        require_number("MaxLattice.value", self.value)

    def merge(self, other: MaxLattice) -> MaxLattice:
        """The larger of the two values."""
        return other if other.value > self.value else self

    def reveal(self) -> int | float:
        """The current maximum."""
        return self.value


@dataclass(frozen=True, slots=True)
class BoolLattice:
    """A flag that, once set, stays set; merge is logical OR.

    Attributes:
        value: Whether any replica has set the flag.
    """

    value: bool = False

    def __post_init__(self) -> None:
        value: object = self.value
        if not isinstance(value, bool):
            raise TypeError(f"BoolLattice.value must be a bool, not {type(value).__name__}")

    def merge(self, other: BoolLattice) -> BoolLattice:
        """True when either side is true."""
        return self if self.value else other

    def reveal(self) -> bool:
        """The flag."""
        return self.value


@dataclass(frozen=True, slots=True)
class PriorityLattice:
    """A register where the lowest priority wins.

    Equal priorities are broken by the smaller value bytes so that merge is commutative; the original kept the
    current value on ties, which made the result depend on arrival order.

    Attributes:
        priority: Lower is better; NaN is rejected because it is unordered.
        value: The payload attached to that priority.
    """

    priority: float
    value: bytes

    def __post_init__(self) -> None:
        require_number("PriorityLattice.priority", self.priority)
        require_bytes("PriorityLattice.value", self.value)

    def merge(self, other: PriorityLattice) -> PriorityLattice:
        """The entry that is smaller in the total order ``(priority, value)``."""
        if (other.priority, other.value) < (self.priority, self.value):
            return other
        return self

    def reveal(self) -> bytes:
        """The winning value."""
        return self.value
