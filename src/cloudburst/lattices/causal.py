"""Causal lattices: multi-value registers whose versions are ordered by vector clocks.

Why a set of versions: the original merge ("if the incoming clock dominates, replace; if concurrent, union
the values and join the clocks") is not associative. With ``a = {x:1}:va``, ``b = {y:1}:vb`` and
``c = {x:2}:vc`` (``c`` supersedes ``a``), merging ``(a, b)`` first folds ``va`` into a joined ``{x:1, y:1}``
version that ``c`` does not dominate, so ``va`` survives; merging ``(b, c)`` first lets ``c`` drop it. Keeping
each concurrent version with its own clock and pruning only strictly dominated versions makes merge
associative, commutative and idempotent, so replicas converge whatever order updates arrive in.

Both lattices keep ``versions`` as an antichain: no version's clock is strictly dominated by another's, and
no two versions share a clock (such versions are combined by unioning values and merging dependencies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self

from cloudburst.lattices.map import MapLattice
from cloudburst.lattices.vector_clock import CausalOrder, VectorClock

_NO_DEPENDENCIES: MapLattice[str, VectorClock] = MapLattice.of({})


@dataclass(frozen=True, slots=True)
class CausalVersion:
    """One version of a causal value: what was written, when (causally), and what it depends on.

    Attributes:
        vector_clock: The causal time of the write.
        dependencies: The versions of other keys the write depends on; empty for single-key causal values.
        values: The sibling values written at this clock (several only when same-clock writes were combined).
        origin: The request that wrote it (its causal session's id; empty when unknown), so a request can tell its
            own writes from others'.
    """

    vector_clock: VectorClock
    dependencies: MapLattice[str, VectorClock]
    values: frozenset[bytes]
    origin: str = ""

    def __post_init__(self) -> None:
        values: object = self.values
        if not isinstance(values, frozenset):
            if not isinstance(values, Iterable) or isinstance(values, bytes | str):
                raise TypeError(f"CausalVersion.values must be a set of bytes, not {type(values).__name__}")
            object.__setattr__(self, "values", frozenset(values))
        for value in self.values:
            if not isinstance(value, bytes):
                raise TypeError(f"CausalVersion value must be bytes, not {type(value).__name__}")

    def _is_bottom(self) -> bool:
        # Carries no information at all, so dropping it keeps "empty" canonical.
        return not self.vector_clock and not self.dependencies and not self.values


def _normalise(versions: Iterable[CausalVersion]) -> frozenset[CausalVersion]:
    """Combines same-clock versions, then drops versions whose clock another version strictly dominates."""
    by_clock: dict[VectorClock, CausalVersion] = {}
    for version in versions:
        if version._is_bottom():
            continue
        existing = by_clock.get(version.vector_clock)
        if existing is None:
            by_clock[version.vector_clock] = version
        elif existing != version:
            by_clock[version.vector_clock] = CausalVersion(
                vector_clock=version.vector_clock,
                dependencies=existing.dependencies.merge(version.dependencies),
                values=existing.values | version.values,
                origin=max(existing.origin, version.origin),
            )
    clocks = list(by_clock)
    return frozenset(
        version
        for clock, version in by_clock.items()
        if not any(clock.compare(other) is CausalOrder.BEFORE for other in clocks)
    )


def _is_antichain(versions: frozenset[CausalVersion]) -> bool:
    clocks = [version.vector_clock for version in versions]
    if len(set(clocks)) != len(clocks):
        return False
    return not any(a.compare(b) is CausalOrder.BEFORE for a in clocks for b in clocks)


class _VersionSet:
    """Behaviour shared by the single- and multi-key causal lattices, which differ only in dependencies."""

    __slots__ = ()

    versions: frozenset[CausalVersion]

    def _check_versions(self) -> None:
        versions: object = self.versions
        if not isinstance(versions, frozenset):
            raise TypeError(f"versions must be a frozenset, not {type(versions).__name__}")
        for version in self.versions:
            if not isinstance(version, CausalVersion):
                raise TypeError(f"versions must hold CausalVersion, not {type(version).__name__}")
        if any(version._is_bottom() for version in self.versions) or not _is_antichain(self.versions):
            raise ValueError(f"{type(self).__name__}.versions is not canonical; use from_versions()")

    @property
    def vector_clock(self) -> VectorClock:
        """The join of every version's clock: everything this value has seen."""
        joined = VectorClock()
        for version in self.versions:
            joined = joined.merge(version.vector_clock)
        return joined

    @property
    def values(self) -> frozenset[bytes]:
        """The union of every version's values, i.e. the concurrent siblings a reader must reconcile."""
        return frozenset().union(*(version.values for version in self.versions))

    def reveal(self) -> frozenset[bytes]:
        """The sibling values."""
        return self.values

    def __bool__(self) -> bool:
        # A value with no siblings reads as "key does not exist", whatever clocks it carries.
        return any(version.values for version in self.versions)


@dataclass(frozen=True, slots=True)
class SingleKeyCausalLattice(_VersionSet):
    """A multi-value register ordered by vector clocks, for keys read under single-key causal consistency.

    Attributes:
        versions: The concurrent versions, an antichain (see the module docstring); dependencies always empty.
    """

    versions: frozenset[CausalVersion] = frozenset()

    def __post_init__(self) -> None:
        self._check_versions()
        if any(version.dependencies for version in self.versions):
            raise ValueError("SingleKeyCausalLattice versions must not carry dependencies")

    @classmethod
    def of(cls, vector_clock: VectorClock, values: Iterable[bytes]) -> SingleKeyCausalLattice:
        """A lattice holding one version."""
        return cls.from_versions((CausalVersion(vector_clock, _NO_DEPENDENCIES, frozenset(values)),))

    @classmethod
    def from_versions(cls, versions: Iterable[CausalVersion]) -> Self:
        """Builds the lattice from any versions, combining equal clocks and pruning dominated ones."""
        return cls(_normalise(versions))

    def merge(self, other: SingleKeyCausalLattice) -> SingleKeyCausalLattice:
        """Keeps every version not strictly dominated by another, combining versions with equal clocks."""
        if self.versions == other.versions:
            return self
        return SingleKeyCausalLattice.from_versions(self.versions | other.versions)


@dataclass(frozen=True, slots=True)
class MultiKeyCausalLattice(_VersionSet):
    """A multi-value register whose versions also record the versions of other keys they depend on.

    Attributes:
        versions: The concurrent versions, an antichain (see the module docstring).
    """

    versions: frozenset[CausalVersion] = frozenset()

    def __post_init__(self) -> None:
        self._check_versions()

    @classmethod
    def of(
        cls,
        vector_clock: VectorClock,
        values: Iterable[bytes],
        dependencies: Mapping[str, VectorClock] | MapLattice[str, VectorClock] | None = None,
        origin: str = "",
    ) -> MultiKeyCausalLattice:
        """A lattice holding one version (written by request ``origin``)."""
        if dependencies is None:
            deps = _NO_DEPENDENCIES
        elif isinstance(dependencies, MapLattice):
            deps = dependencies
        else:
            deps = MapLattice.of(dependencies)
        return cls.from_versions((CausalVersion(vector_clock, deps, frozenset(values), origin),))

    @classmethod
    def from_versions(cls, versions: Iterable[CausalVersion]) -> Self:
        """Builds the lattice from any versions, combining equal clocks and pruning dominated ones."""
        return cls(_normalise(versions))

    @property
    def dependencies(self) -> MapLattice[str, VectorClock]:
        """The key-wise join of every version's dependencies."""
        joined = _NO_DEPENDENCIES
        for version in self.versions:
            joined = joined.merge(version.dependencies)
        return joined

    def merge(self, other: MultiKeyCausalLattice) -> MultiKeyCausalLattice:
        """Keeps every version not strictly dominated by another, combining versions with equal clocks."""
        if self.versions == other.versions:
            return self
        return MultiKeyCausalLattice.from_versions(self.versions | other.versions)
