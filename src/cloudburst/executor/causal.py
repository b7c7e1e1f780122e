"""A causal session: what one request has read and written, and what it may still see. Pure; no I/O.

A session spans one request (a DAG request or a one-shot call) and is named by the request id, so concurrent
requests of one client never share or release each other's versions (the original keyed them by client).
It travels from function to function in the DAG triggers as :class:`SessionMetadata`:

* ``dependencies``: per key, the least version the session may see -- the join of every version it read and
  wrote, and of the versions those depend on. Reading below it would go back in (causal) time. A cache serving
  the session makes its causal cut cover these versions, and with them (the cut being closed) their whole past.
* ``observed``: the keys whose version the request has fixed, by reading or writing them. For these the bound is
  that very version: a later read returns it, and a version depending on a newer one is a conflict.
* ``written``: the version of each key the request wrote last. Of concurrent siblings, ``causal_get`` returns one
  reaching it, so the request reads its own write even when a write it never saw is a sibling of it.
* ``version_locations``: per node cache, the exact versions that cache keeps for the session. Under MULTI a
  function re-reading a key the request already read gets that very version (repeatable read, where the original
  only promised "not older"), and the first read also keeps versions of the keys downstream functions declare
  (their references), consistent with it, so the whole request reads one causally consistent snapshot.

Read-your-writes wins over repeatable reads: after ``causal_put``, every read of the key in the request -- in the
writing function, downstream on the same node or on another -- returns the write (kept for the session by the
writer's node cache), never the version kept from before (the original served the kept one). A kept version below
the session's bound for its key is superseded, here and at the cache that kept it. So is a version kept for a
declared key that no function has read yet when a version read since depends on a newer one: nothing saw the
reserved version, so the request reads the newer one instead of failing.

Writes (:meth:`CausalSession.new_version`) get a vector clock above everything the session knows of the key,
bumped in this executor's own entry (added if absent, which the original lost), and under MULTI carry the
session's versions as direct dependencies, so readers elsewhere never see the write without its causes. Direct
dependencies suffice because caches admit a version to their cut only after its dependencies: metadata stays
proportional to what one request touched, not to history.

What MULTI cannot promise: a function reading a key that no earlier function read and the DAG did not declare may
find that the only version available depends on a newer version of a key the request observed. A direct such
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
    """What a session hands downstream: kept versions by cache address, the least versions it may see, the keys
    whose version it fixed (read or written), and its last write of each key it wrote."""

    version_locations: Mapping[str, tuple[KeyVersion, ...]] = field(default_factory=dict)
    dependencies: tuple[KeyVersion, ...] = ()
    observed: tuple[str, ...] = ()
    written: tuple[KeyVersion, ...] = ()

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
    observed: set[str] = set()
    written: dict[str, VectorClock] = {}
    for part in parts:
        for address, versions in part.version_locations.items():
            kept = locations.setdefault(address, {})
            for version in versions:
                kept[version.key] = kept.get(version.key, VectorClock()).merge(version.vector_clock)
        for version in part.dependencies:
            floors[version.key] = floors.get(version.key, VectorClock()).merge(version.vector_clock)
        observed.update(part.observed)
        for version in part.written:
            written[version.key] = written.get(version.key, VectorClock()).merge(version.vector_clock)
    return SessionMetadata(
        {address: _versions(kept) for address, kept in sorted(locations.items())},
        _versions(floors),
        tuple(sorted(observed)),
        _versions(written),
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
        #: Versions this function already read (or wrote), so a repeated read in one run costs nothing.
        self._read: dict[str, MultiKeyCausalLattice | None] = {}
        #: Keys whose version the request fixed: their floor is the version itself.
        self._observed: set[str] = set()
        upstream = metadata or SessionMetadata()
        #: The request's last write of each key it wrote.
        self._written: dict[str, VectorClock] = {version.key: version.vector_clock for version in upstream.written}
        for address, versions in upstream.version_locations.items():
            self.note_kept(address, versions)
        for version in upstream.dependencies:
            self._raise_floor(version.key, version.vector_clock)
        self._observed.update(upstream.observed)

    @property
    def multi(self) -> bool:
        """Whether the session promises a consistent snapshot (MULTI) rather than per-key causality (SINGLE)."""
        return self.consistency == ConsistencyType.MULTI

    # -- reads -------------------------------------------------------------------------------------------------

    def already_read(self, keys: Iterable[str]) -> dict[str, MultiKeyCausalLattice | None]:
        """The values of ``keys`` this function has read already."""
        return {key: self._read[key] for key in keys if key in self._read}

    def kept_reads(self, keys: Iterable[str]) -> dict[str, list[str]]:
        """Keys whose exact version a cache keeps for the session, grouped by that cache's version address.

        A kept version below the session's bound for its key is superseded (by the request's own write, or by a
        version it read since that depends on a newer one): such keys are read afresh, at least at the bound.
        """
        by_address: dict[str, list[str]] = {}
        if self.multi:
            for key in keys:
                kept = self._kept.get(key)
                if kept is not None and kept[1].dominates(self._floors.get(key, VectorClock())):
                    by_address.setdefault(kept[0], []).append(key)
        return by_address

    def own_write(self, key: str) -> VectorClock | None:
        """The version of ``key`` the request wrote last, if it wrote the key."""
        return self._written.get(key)

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
        """Accepts a version read for ``key``: the request has now observed it.

        Under MULTI its dependencies on keys the request has not observed become floors, so any later read of
        those keys, on any node, returns a version at least as new (an unread reserved version is superseded).

        Raises:
            CausalConflict: (MULTI) the version depends on a newer version of a key the request observed.
        """
        if value is not None and self.multi:
            raised: list[tuple[str, VectorClock]] = []
            for dependency, clock in value.dependencies.items():
                if dependency == key:
                    continue
                seen = self._seen_clock(dependency)
                if seen is None:
                    raised.append((dependency, clock))
                elif not seen.dominates(clock):
                    raise self._conflict(key, value, dependency, seen)
            for dependency, clock in raised:
                self._raise_floor(dependency, clock)
        self._read[key] = value
        self._observed.add(key)
        if value is not None:
            self._raise_floor(key, value.vector_clock)

    def _conflict(self, key: str, value: MultiKeyCausalLattice, dependency: str, seen: VectorClock) -> CausalConflict:
        ours = any(
            version.origin == self.session_id
            and dependency in version.dependencies
            and not seen.dominates(version.dependencies[dependency])
            for version in value.versions
        )
        if ours:
            return CausalConflict(
                f"the version of {key!r} available was written by this same request, in a branch of its DAG that ran "
                f"alongside this one, after a newer version of {dependency!r} than this branch read; a retry races "
                f"the same way: make the function reading {key!r} downstream of the one writing it, or read "
                f"{dependency!r} after that write",
                retryable=False,
                request_id=self.session_id,
            )
        return CausalConflict(
            f"the version of {key!r} available depends on a newer version of {dependency!r} than this request "
            f"already read; declare {key!r} as a reference of the DAG so its first read keeps a consistent version, "
            "or retry the request",
            request_id=self.session_id,
        )

    def _seen_clock(self, key: str) -> VectorClock | None:
        """The version of ``key`` the request fixed, or ``None`` if it has not observed the key."""
        if key in self._read:
            value = self._read[key]
            return value.vector_clock if value is not None else VectorClock()
        if key in self._observed:
            return self._floors.get(key, VectorClock())
        return None

    # -- writes ------------------------------------------------------------------------------------------------

    def new_version(self, key: str, payload: bytes, counter: WriterCounter) -> MultiKeyCausalLattice:
        """The version to write for ``key``: newer than anything the session knows of it, with its dependencies.

        Afterwards reads of ``key`` in this session see the write (or something newer), never an older kept version.
        """
        # Above every version of the key the session knows of, the unread kept one included.
        base = self._floors.get(key, VectorClock()).merge(self._seen_clock(key) or VectorClock())
        if key in self._kept:
            base = base.merge(self._kept[key][1])
        clock = base.as_dict()
        clock[counter.writer_id] = counter.next(base.get(counter.writer_id))
        vector_clock = VectorClock.of(clock)
        # The versions the request observed; what they depend on in turn is covered through them.
        dependencies = {k: v for k, v in self._floors.items() if k != key and k in self._observed} if self.multi else {}
        version = MultiKeyCausalLattice.of(
            vector_clock, (payload,), dependencies, self.session_id if self.multi else ""
        )
        # Read-your-writes: this function re-reads its write, others read it or newer (the floor).
        self._read[key] = version
        self._observed.add(key)
        self._written[key] = vector_clock
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
            {address: _versions(kept) for address, kept in sorted(locations.items())},
            _versions(self._floors),
            tuple(sorted(self._observed)),
            _versions(self._written),
        )

    def holders(self) -> tuple[str, ...]:
        """The caches keeping versions for the session, which the last function tells to release them."""
        return tuple(sorted(self._holders))

    def _raise_floor(self, key: str, clock: VectorClock) -> None:
        current = self._floors.get(key)
        self._floors[key] = clock if current is None else current.merge(clock)


def latest_value(value: MultiKeyCausalLattice, at_least: VectorClock | None = None) -> bytes:
    """One sibling, chosen the same way everywhere: the value of the version with the greatest clock in a fixed
    total order (sum of counters, then entries), the greatest value on a tie. Readers that must reconcile
    concurrent writes read every sibling instead.

    Args:
        value: The causal value.
        at_least: The reading request's own last write of the key: versions reaching it come first, so a request
            reads its own write rather than a concurrent sibling it never saw.
    """
    candidates = [v for v in value.versions if at_least and v.vector_clock.dominates(at_least)] or value.versions
    version = max(
        candidates,
        key=lambda v: (sum(counter for _, counter in v.vector_clock.entries), v.vector_clock.entries),
    )
    return max(version.values)
