"""A causal session: what one request has read and written, and what it may still see. Pure; no I/O.

A session spans one request (a DAG request or a one-shot call) and is named by the request id, so concurrent
requests of one client never share or release each other's versions (the original keyed them by client, B36).
It travels from function to function in the DAG triggers as :class:`SessionMetadata`:

* ``dependencies``: per key, the least version the session may see -- the join of every version it read and
  every version it wrote. Reading below it would go back in (causal) time. A cache serving the session first
  makes its causal cut cover these versions, and with them (the cut being closed) their whole causal past.
* ``version_locations``: per node cache, the exact versions that cache keeps for the session. Under MULTI a
  function re-reading a key the request already read gets that very version (repeatable read, where the original
  only promised "not older", B37), and the first read also keeps versions of the keys downstream functions declare
  (their references), consistent with it, so the whole request reads one causally consistent snapshot.

Writes (:meth:`CausalSession.new_version`) get a vector clock above everything the session knows of the key,
bumped in this executor's own entry (added if absent, which the original lost, B33), and under MULTI carry the
session's versions as direct dependencies, so readers elsewhere never see the write without its causes. Direct
dependencies suffice because caches admit a version to their cut only after its dependencies: metadata stays
proportional to what one request touched, not to history.

What MULTI cannot promise: a function reading a key that no earlier function read and the DAG did not declare may
find that the only version available depends on a newer version of a key the request read earlier. A direct such
dependency is detected (:class:`~cloudburst.errors.CausalConflict`); one through intermediate versions is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cloudburst.errors import CausalConflict
from cloudburst.lattices import MultiKeyCausalLattice, VectorClock
from cloudburst.protocol.messages import ConsistencyType
from cloudburst.protocol.runtime_messages import Arguments, KeyVersion


@dataclass(frozen=True, slots=True)
class SessionMetadata:
    """What a session hands downstream: kept versions by cache address, and the least versions it may see."""

    version_locations: Mapping[str, tuple[KeyVersion, ...]] = field(default_factory=dict)
    dependencies: tuple[KeyVersion, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "version_locations", MappingProxyType(dict(self.version_locations)))


@dataclass(frozen=True, slots=True)
class CausalContext:
    """Everything a causal DAG function needs besides its arguments.

    Attributes:
        consistency: SINGLE or MULTI.
        session_id: The request id.
        metadata: The upstream functions' session metadata, joined.
        future_arguments: The fixed arguments of every function downstream of this one, whose references are part
            of the future read set.
        declared_reads: Keys this function and those downstream declared they read (``DagCall.references``), the
            rest of the future read set.
        output_key: Where a sink writes its result as a causal value ("" for none).
        sink: Whether this function is a sink (it then ends the session).
    """

    consistency: ConsistencyType
    session_id: str
    metadata: SessionMetadata = SessionMetadata()
    future_arguments: tuple[Arguments, ...] = ()
    declared_reads: tuple[str, ...] = ()
    output_key: str = ""
    sink: bool = True


class WriterCounter:
    """This executor's counter in the vector clocks it writes; strictly increasing, so no two writes share a clock."""

    def __init__(self, writer_id: str) -> None:
        self.writer_id = writer_id
        self._last = 0

    def next(self, at_least: int) -> int:
        """A counter value above both ``at_least`` and every value handed out before."""
        self._last = max(self._last, at_least) + 1
        return self._last


def join_metadata(parts: Iterable[SessionMetadata]) -> SessionMetadata:
    """Joins fan-in triggers' metadata: locations united per address, dependencies joined per key."""
    locations: dict[str, dict[str, VectorClock]] = {}
    floors: dict[str, VectorClock] = {}
    for part in parts:
        for address, versions in part.version_locations.items():
            kept = locations.setdefault(address, {})
            for version in versions:
                kept[version.key] = kept.get(version.key, VectorClock()).merge(version.vector_clock)
        for version in part.dependencies:
            floors[version.key] = floors.get(version.key, VectorClock()).merge(version.vector_clock)
    return SessionMetadata(
        {address: _versions(kept) for address, kept in sorted(locations.items())},
        _versions(floors),
    )


def _versions(clocks: Mapping[str, VectorClock]) -> tuple[KeyVersion, ...]:
    return tuple(KeyVersion(key, clock) for key, clock in sorted(clocks.items()))


class CausalSession:
    """One request's causal bookkeeping on one executor (see the module docstring).

    Args:
        session_id: The request id.
        consistency: SINGLE or MULTI.
        metadata: What upstream functions handed on.
    """

    def __init__(self, session_id: str, consistency: ConsistencyType, metadata: SessionMetadata | None = None) -> None:
        if consistency == ConsistencyType.NORMAL:
            raise ValueError("a causal session needs consistency SINGLE or MULTI")
        self.session_id = session_id
        self.consistency = consistency
        #: Least version per key the session may see.
        self._floors: dict[str, VectorClock] = {}
        #: Key -> (cache version address, clock) of the version kept for the session (MULTI).
        self._kept: dict[str, tuple[str, VectorClock]] = {}
        #: Every cache address keeping something for the session, to release at the end.
        self._holders: set[str] = set()
        #: Versions this function already read, so a repeated read in one run costs nothing.
        self._read: dict[str, MultiKeyCausalLattice | None] = {}
        for address, versions in (metadata or SessionMetadata()).version_locations.items():
            self.note_kept(address, versions)
        for version in (metadata or SessionMetadata()).dependencies:
            self._raise_floor(version.key, version.vector_clock)

    @property
    def multi(self) -> bool:
        """Whether the session promises a consistent snapshot (MULTI) rather than per-key causality (SINGLE)."""
        return self.consistency == ConsistencyType.MULTI

    # -- reads -------------------------------------------------------------------------------------------------

    def already_read(self, keys: Iterable[str]) -> dict[str, MultiKeyCausalLattice | None]:
        """The values of ``keys`` this function has read already."""
        return {key: self._read[key] for key in keys if key in self._read}

    def kept_reads(self, keys: Iterable[str]) -> dict[str, list[str]]:
        """Keys whose exact version a cache keeps for the session, grouped by that cache's version address."""
        by_address: dict[str, list[str]] = {}
        if self.multi:
            for key in keys:
                if key in self._kept:
                    by_address.setdefault(self._kept[key][0], []).append(key)
        return by_address

    def lower_bounds(self, keys: Iterable[str]) -> tuple[KeyVersion, ...]:
        """The least versions of ``keys`` a read may return."""
        return tuple(KeyVersion(key, self._floors[key]) for key in sorted(set(keys)) if key in self._floors)

    def note_kept(self, address: str, versions: Iterable[KeyVersion]) -> None:
        """Records that the cache at ``address`` keeps ``versions`` for the session (its first keep of a key wins)."""
        self._holders.add(address)
        for version in versions:
            current = self._kept.get(version.key)
            # Fan-in may name one key kept at two caches; the newer version is the one the request must not go below.
            if current is None or not current[1].dominates(version.vector_clock):
                self._kept[version.key] = (address, version.vector_clock)

    def absorb(self, key: str, value: MultiKeyCausalLattice | None) -> None:
        """Accepts a version read for ``key``, raising the session's floors to it and to its dependencies.

        Raises:
            CausalConflict: (MULTI) the version depends on a newer version of a key the request already read.
        """
        if value is not None and self.multi:
            for dependency, clock in value.dependencies.items():
                seen = self._seen_clock(dependency)
                if dependency != key and seen is not None and not seen.dominates(clock):
                    raise CausalConflict(
                        f"the version of {key!r} available depends on a newer version of {dependency!r} than this "
                        f"request already read; declare {key!r} as a reference of the DAG so its first read keeps a "
                        "consistent version, or retry the request",
                        request_id=self.session_id,
                    )
        self._read[key] = value
        if value is not None:
            # Only the version itself: its dependencies are covered by the cut it came from, and through the floor
            # any cache serving this session later covers them too.
            self._raise_floor(key, value.vector_clock)

    def _seen_clock(self, key: str) -> VectorClock | None:
        if key in self._read:
            value = self._read[key]
            return value.vector_clock if value is not None else VectorClock()
        if key in self._kept:
            return self._kept[key][1]
        return None

    # -- writes ------------------------------------------------------------------------------------------------

    def new_version(self, key: str, payload: bytes, counter: WriterCounter) -> MultiKeyCausalLattice:
        """The version to write for ``key``: newer than anything the session knows of it, with its dependencies.

        Afterwards reads of ``key`` in this session see the write (or something newer), never an older kept version.
        """
        base = self._floors.get(key, VectorClock()).merge(self._seen_clock(key) or VectorClock())
        clock = base.as_dict()
        clock[counter.writer_id] = counter.next(base.get(counter.writer_id))
        vector_clock = VectorClock.of(clock)
        dependencies = {k: v for k, v in self._floors.items() if k != key} if self.multi else {}
        version = MultiKeyCausalLattice.of(vector_clock, (payload,), dependencies)
        self._read.pop(key, None)
        self._kept.pop(key, None)
        self._raise_floor(key, vector_clock)
        return version

    # -- hand-over ---------------------------------------------------------------------------------------------

    def metadata(self) -> SessionMetadata:
        """What downstream functions need: the kept versions and the floors."""
        locations: dict[str, dict[str, VectorClock]] = {}
        for key, (address, clock) in self._kept.items():
            locations.setdefault(address, {})[key] = clock
        for address in self._holders:
            locations.setdefault(address, {})
        return SessionMetadata(
            {address: _versions(kept) for address, kept in sorted(locations.items())}, _versions(self._floors)
        )

    def holders(self) -> tuple[str, ...]:
        """The caches keeping versions for the session, which the last function tells to release them."""
        return tuple(sorted(self._holders))

    def _raise_floor(self, key: str, clock: VectorClock) -> None:
        current = self._floors.get(key)
        self._floors[key] = clock if current is None else current.merge(clock)


def latest_value(value: MultiKeyCausalLattice) -> bytes:
    """One sibling, chosen the same way everywhere: the value of the version with the greatest clock in a fixed
    total order (sum of counters, then entries), the greatest value on a tie. Readers that must reconcile
    concurrent writes read every sibling instead."""
    version = max(
        value.versions,
        key=lambda v: (sum(counter for _, counter in v.vector_clock.entries), v.vector_clock.entries),
    )
    return max(version.values)
