"""The node cache's causal decisions, pure: the causal cut, and the versions kept per session.

A causal read names its keys and the least version of each the session may see (what it already read or
wrote). Under SINGLE the cache answers from its cached copies, re-reading from the KVS a key whose copy is below
its bound. Under MULTI it answers from its :class:`CausalCut`: it first makes the cut cover the session's bounds,
then admits the freshest known version of each key read (after covering that version's dependencies), so the
answer is one causally consistent snapshot no older than anything the session saw. Covering a version means
finding one at least as new -- in the cut, among the cached copies (which the KVS keeps fresh by pushes), or in
the KVS, which holds every acknowledged version, since a version is written only after its dependencies were
acknowledged.

Under MULTI the cache then keeps the versions it returned -- and versions of the keys downstream functions
declared -- for the session (:class:`SessionVersions`), so those functions read exactly them, from any node.
Kept versions are released when the session ends, expire after a time to live when its end is never announced
(a failed request), and are bounded in number and bytes.

Read-your-writes wins over repeatable reads: a kept version below the session's bound for its key (the request
wrote the key since, or read a version that depends on a newer one) is superseded by the cut's version, which
covers the bound, and that one is kept instead (the original kept serving the first version, so a request did not
read its own writes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cloudburst.lattices import MultiKeyCausalLattice, VectorClock


def satisfies(value: MultiKeyCausalLattice, clock: VectorClock, *, complete: bool) -> bool:
    """Whether ``value`` includes a version at least ``clock``.

    One sibling must reach ``clock`` on its own: siblings whose clocks merely join to it may still lack the version
    needed (one written by an executor that later wrote one of the siblings without seeing the other). A value
    read from the KVS is ``complete`` (it holds every acknowledged version), so its joined clock suffices.
    """
    if complete:
        return value.vector_clock.dominates(clock)
    return any(version.vector_clock.dominates(clock) for version in value.versions)


@dataclass(slots=True)
class _CutEntry:
    value: MultiKeyCausalLattice
    #: The joined clock of the newest value merged in from the KVS (complete up to it).
    complete_clock: VectorClock


class CausalCut:
    """Versions closed under their dependencies: each version's dependencies are covered by the cut.

    Closure is kept by induction -- a version enters only once its direct dependencies are covered -- so the cut
    holds each version's whole causal past and any reads from it form a causally consistent snapshot. Versions
    record only their direct dependencies, so metadata stays proportional to what one request reads.

    The least recently used keys are dropped beyond ``max_keys``. That is safe: a key absent from the cut is
    covered again from the KVS, which holds every acknowledged version.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("a causal cut must hold at least one key")
        self.max_keys = max_keys
        self._entries: OrderedDict[str, _CutEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> MultiKeyCausalLattice | None:
        """The cut's version of ``key``, if it holds one."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.value

    def covers(self, key: str, clock: VectorClock) -> bool:
        """Whether the cut holds a version of ``key`` at least ``clock`` (an empty clock is always covered)."""
        if not clock:
            return True
        entry = self._entries.get(key)
        if entry is None:
            return False
        return entry.complete_clock.dominates(clock) or satisfies(entry.value, clock, complete=False)

    def uncovered_dependencies(self, value: MultiKeyCausalLattice) -> list[tuple[str, VectorClock]]:
        """The direct dependencies of ``value`` the cut does not cover yet."""
        return [(key, clock) for key, clock in value.dependencies.items() if not self.covers(key, clock)]

    def admit(self, key: str, value: MultiKeyCausalLattice, complete_clock: VectorClock | None = None) -> None:
        """Merges ``value`` into the cut; the caller has checked its dependencies are covered.

        Args:
            complete_clock: When ``value`` was just read from the KVS, its joined clock.
        """
        entry = self._entries.get(key)
        complete = complete_clock or VectorClock()
        if entry is None:
            self._entries[key] = _CutEntry(value, complete)
        else:
            entry.value = entry.value.merge(value)
            entry.complete_clock = entry.complete_clock.merge(complete)
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)


@dataclass(frozen=True, slots=True)
class KeptVersion:
    """A version kept for a session: its serialized ``MultiKeyCausalValue`` and its clock."""

    payload: bytes
    vector_clock: VectorClock


def superseded_versions(kept: Mapping[str, KeptVersion], bounds: Mapping[str, VectorClock]) -> set[str]:
    """The keys whose kept version is below the session's bound: read afresh, at least at the bound."""
    return {key for key, version in kept.items() if key in bounds and not version.vector_clock.dominates(bounds[key])}


@dataclass(slots=True)
class _Session:
    versions: dict[str, KeptVersion] = field(default_factory=dict)
    touched: float = 0.0
    size: int = 0


@dataclass(frozen=True, slots=True)
class SessionVersionsConfig:
    """Bounds of the kept versions.

    Attributes:
        ttl: Seconds a session's versions are kept after its last use when its end is never announced.
        max_sessions: The most sessions kept; the least recently used is dropped first.
        max_bytes: The most payload bytes kept over all sessions.
    """

    ttl: float = 60.0
    max_sessions: int = 100_000
    max_bytes: int = 256 * 2**20


class SessionVersions:
    """Versions kept per causal session (request id); see the module docstring."""

    def __init__(self, config: SessionVersionsConfig | None = None) -> None:
        self.config = config or SessionVersionsConfig()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._bytes = 0
        #: Sessions dropped before their end was announced (expired or evicted), for statistics.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def kept_bytes(self) -> int:
        """Payload bytes kept over all sessions."""
        return self._bytes

    def keep(
        self, session_id: str, key: str, version: KeptVersion, now: float, *, replace: bool = False
    ) -> KeptVersion:
        """Keeps ``version`` of ``key`` for the session unless one is kept already; returns the one kept.

        The first keep wins, so a session's reads of a key at one cache are repeatable, unless ``replace`` (the
        kept version was superseded by the session's own write).
        """
        session = self._touch(session_id, now, create=True)
        assert session is not None
        existing = session.versions.get(key)
        if existing is not None:
            if not replace:
                return existing
            session.size -= len(existing.payload)
            self._bytes -= len(existing.payload)
        session.versions[key] = version
        session.size += len(version.payload)
        self._bytes += len(version.payload)
        self._evict(now, protect=session_id)
        return version

    def get(self, session_id: str, keys: Iterable[str], now: float) -> dict[str, KeptVersion]:
        """The kept versions of ``keys`` (absent keys are left out)."""
        session = self._touch(session_id, now, create=False)
        if session is None:
            return {}
        return {key: session.versions[key] for key in keys if key in session.versions}

    def release(self, session_id: str) -> None:
        """Forgets the session: it ended."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._bytes -= session.size

    def expire(self, now: float) -> None:
        """Drops sessions unused for longer than the time to live."""
        self._evict(now, protect=None)

    def _touch(self, session_id: str, now: float, *, create: bool) -> _Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            if not create:
                return None
            session = self._sessions[session_id] = _Session()
        session.touched = now
        self._sessions.move_to_end(session_id)
        return session

    def _evict(self, now: float, protect: str | None) -> None:
        limit = self.config
        while self._sessions:
            oldest_id, oldest = next(iter(self._sessions.items()))
            over = len(self._sessions) > limit.max_sessions or self._bytes > limit.max_bytes
            if oldest_id == protect or not (over or now - oldest.touched > limit.ttl):
                return
            self.release(oldest_id)
            self.dropped += 1
