"""The Redis / Redis Cluster storage engine: the lattice merge runs inside Redis, atomically per key.

Many KVS processes (on many machines) can share one Redis or Redis Cluster without losing updates: LWW,
priority, set and ordered-set merges are Lua scripts that read, merge and write a key in one atomic step on the
server, and give exactly the Python lattices' result, tie-breaks included. The causal lattices, whose merge is
too rich for Lua, are merged here in Python and written back by a compare-and-set script that fails if the key
changed since it was read; the merge is then redone on the new value (optimistic concurrency, bounded).

URLs, key and value layout, and the failure behaviour are described in ``docs/storage.md``; the scripts are in
:mod:`cloudburst.kvs.redis_lua`, pipelining and retries in :mod:`cloudburst.kvs.redis_connection`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from cloudburst.errors import DecodeError, LatticeTypeMismatch, StorageUnavailable
from cloudburst.kvs.engine import StoredValue, merge_into
from cloudburst.kvs.redis_connection import KeyCommand, RedisConnection, RedisSettings
from cloudburst.kvs.redis_lua import COMPARE_AND_SET, GET, MERGE_REGISTER, MERGE_SET, Script
from cloudburst.lattices import (
    LwwLattice,
    MultiKeyCausalLattice,
    OrderedSetLattice,
    PriorityLattice,
    SetLattice,
    SingleKeyCausalLattice,
)
from cloudburst.protocol.codec import StorableLattice, encode_lattice
from cloudburst.protocol.messages import LatticeType

#: Attempts at a compare-and-set merge before giving up on a key that other writers keep changing.
MAX_CAS_ATTEMPTS = 64

_LATTICE_TYPES: dict[type, LatticeType] = {
    LwwLattice: LatticeType.LWW,
    SetLattice: LatticeType.SET,
    OrderedSetLattice: LatticeType.ORDERED_SET,
    PriorityLattice: LatticeType.PRIORITY,
    SingleKeyCausalLattice: LatticeType.SINGLE_CAUSAL,
    MultiKeyCausalLattice: LatticeType.MULTI_CAUSAL,
}
_MERGE_SCRIPTS: dict[LatticeType, Script] = {
    LatticeType.LWW: MERGE_REGISTER,
    LatticeType.PRIORITY: MERGE_REGISTER,
    LatticeType.SET: MERGE_SET,
    LatticeType.ORDERED_SET: MERGE_SET,
}
_GLOB_SPECIAL = frozenset(b"\\*?[]")


@dataclass(slots=True)
class _Merge:
    """The items of one batch for one key and one lattice type, joined into one lattice (merge is associative)."""

    key: str
    lattice_type: LatticeType
    lattice: StorableLattice
    items: list[int] = field(default_factory=list)


class RedisEngine:
    """A storage engine on a Redis server or a Redis Cluster.

    Args:
        url: ``redis://host:port[/db]`` or ``redis+cluster://host:port[,host:port...]``, with the options of
            :meth:`~cloudburst.kvs.redis_connection.RedisSettings.from_url`.

    Raises:
        ConfigError: The URL is invalid.
        StorageUnavailable: Redis could not be reached before the deadline.
        KvsError: Redis refused to load the engine's scripts.
    """

    def __init__(self, url: str) -> None:
        self.settings = RedisSettings.from_url(url)
        #: Compare-and-set merges that lost a race with another writer and were redone (a contention figure).
        self.conflicts = 0
        self._prefix = self.settings.prefix.encode()
        self._redis = RedisConnection(self.settings)

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode()

    def get_many(self, keys: Sequence[str]) -> list[StoredValue | None]:
        """See :meth:`cloudburst.kvs.engine.StorageEngine.get_many`; one pipeline per node.

        Raises:
            StorageUnavailable: Redis did not answer before the deadline.
            DecodeError: A stored value is not in the engine's layout.
        """
        replies = self._redis.execute([KeyCommand.run(GET, self._key(key)) for key in keys], "GET")
        return [None if raw is None else _stored_value(key, raw) for key, raw in zip(keys, replies, strict=True)]

    def merge_many(self, items: Sequence[tuple[str, StorableLattice]]) -> list[LatticeTypeMismatch | None]:
        """See :meth:`cloudburst.kvs.engine.StorageEngine.merge_many`.

        Items for the same key and lattice type are joined first (merge is associative, so the result is that of
        merging them one by one), which leaves at most one write per key and type: one pipeline per node, plus
        one read before it when the batch holds causal lattices. A key written with several lattice types takes
        one such round per type, in the order the types first appear, so the first one decides an absent key's
        type as it would applied in order.

        Raises:
            StorageUnavailable: Some write was not acknowledged before the deadline (it may or may not have been
                applied; retrying is safe), or a causal merge kept conflicting with other writers.
            KvsError: Redis refused a write.
            EncodeError: A lattice has no KVS wire form.
        """
        outcomes: list[LatticeTypeMismatch | None] = [None] * len(items)
        for merges in _rounds(items):
            self._merge_round(merges, outcomes)
        return outcomes

    def _merge_round(self, merges: list[_Merge], outcomes: list[LatticeTypeMismatch | None]) -> None:
        """Merges at most one lattice per key; ``outcomes`` gets every type mismatch."""
        scripted = [merge for merge in merges if merge.lattice_type in _MERGE_SCRIPTS]
        causal = [merge for merge in merges if merge.lattice_type not in _MERGE_SCRIPTS]
        commands = [self._merge_command(merge) for merge in scripted]
        for _ in range(MAX_CAS_ATTEMPTS):
            swaps = self._prepare_swaps(causal, outcomes)
            replies = self._redis.execute(commands + [command for _, command in swaps], "PUT")
            for merge, reply in zip(scripted, replies, strict=False):
                if reply != 0:
                    _mismatch(merge, _stored_type(merge.key, reply), outcomes)
            # A swap answered 0 lost a race with another writer: merge again into what that writer stored.
            causal = [merge for (merge, _), reply in zip(swaps, replies[len(scripted) :], strict=True) if reply == 0]
            self.conflicts += len(causal)
            if not causal:
                return
            scripted, commands = [], []
        keys = ", ".join(repr(merge.key) for merge in causal)
        raise StorageUnavailable(f"PUT of {keys}: still changed by other writers after {MAX_CAS_ATTEMPTS} attempts")

    def _merge_command(self, merge: _Merge) -> KeyCommand:
        type_byte = bytes([merge.lattice_type])
        if isinstance(merge.lattice, SetLattice | OrderedSetLattice):
            return KeyCommand.run(MERGE_SET, self._key(merge.key), type_byte, *merge.lattice.values)
        return KeyCommand.run(MERGE_REGISTER, self._key(merge.key), type_byte, encode_lattice(merge.lattice)[1])

    def _prepare_swaps(
        self, merges: list[_Merge], outcomes: list[LatticeTypeMismatch | None]
    ) -> list[tuple[_Merge, KeyCommand]]:
        """Reads the keys and merges in Python; returns a compare-and-set for every key whose value changes."""
        if not merges:
            return []
        raws = self._redis.execute([KeyCommand.run(GET, self._key(merge.key)) for merge in merges], "PUT")
        swaps: list[tuple[_Merge, KeyCommand]] = []
        for merge, raw in zip(merges, raws, strict=True):
            stored = None if raw is None else _stored_value(merge.key, raw)
            result = merge_into(merge.key, stored, merge.lattice)
            if isinstance(result, LatticeTypeMismatch):
                _mismatch(merge, LatticeType[result.stored], outcomes)
            elif result is not stored:
                expected = b"" if raw is None else _as_bytes(merge.key, raw)
                new = bytes([result.lattice_type]) + result.payload
                swaps.append((merge, KeyCommand.run(COMPARE_AND_SET, self._key(merge.key), expected, new)))
        return swaps

    def delete_many(self, keys: Sequence[str]) -> None:
        """See :meth:`cloudburst.kvs.engine.StorageEngine.delete_many`; one pipeline per node.

        Raises:
            StorageUnavailable: Some delete was not acknowledged before the deadline.
        """
        self._redis.execute([KeyCommand(self._key(key), ("DEL", self._key(key))) for key in set(keys)], "DELETE")

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """See :meth:`cloudburst.kvs.engine.StorageEngine.keys_with_prefix`; scans every master.

        Raises:
            StorageUnavailable: Some master could not be scanned before the deadline.
        """
        pattern = _glob_escape(self._key(prefix)) + b"*"
        return sorted(name[len(self._prefix) :].decode() for name in self._redis.scan(pattern))

    def flush(self) -> None:
        """Deletes every key of the engine's Redis database, on every master (for tests).

        Raises:
            StorageUnavailable: Some master could not be flushed before the deadline.
        """
        self._redis.flush()

    def close(self) -> None:
        """Closes the connections."""
        self._redis.close()


def _rounds(items: Sequence[tuple[str, StorableLattice]]) -> Iterator[list[_Merge]]:
    """Groups ``items`` by key and lattice type; round ``r`` holds each key's ``r``-th type in order of appearance."""
    by_key: dict[str, dict[LatticeType, _Merge]] = {}
    for index, (key, lattice) in enumerate(items):
        lattice_type = _lattice_type(lattice)
        merges = by_key.setdefault(key, {})
        merge = merges.get(lattice_type)
        if merge is None:
            merges[lattice_type] = _Merge(key, lattice_type, lattice, [index])
        else:
            merge.lattice = merge.lattice.merge(lattice)  # type: ignore[arg-type]
            merge.items.append(index)
    per_key = [list(merges.values()) for merges in by_key.values()]
    for depth in range(max(map(len, per_key), default=0)):
        yield [merges[depth] for merges in per_key if len(merges) > depth]


def _lattice_type(lattice: StorableLattice) -> LatticeType:
    lattice_type = _LATTICE_TYPES.get(type(lattice))
    # Anything else has no wire form; encoding it raises the same EncodeError the other engines raise.
    return lattice_type if lattice_type is not None else encode_lattice(lattice)[0]


def _mismatch(merge: _Merge, stored: LatticeType, outcomes: list[LatticeTypeMismatch | None]) -> None:
    for index in merge.items:
        outcomes[index] = LatticeTypeMismatch(merge.key, stored.name, merge.lattice_type.name)


def _as_bytes(key: str, reply: object) -> bytes:
    if not isinstance(reply, bytes) or not reply:
        raise DecodeError(f"stored value of {key!r}", f"unexpected reply from Redis: {reply!r}")
    return reply


def _stored_type(key: str, reply: object) -> LatticeType:
    """The lattice type a merge script reported as stored (a one-byte reply)."""
    raw = _as_bytes(key, reply)
    if len(raw) != 1:
        raise DecodeError(f"stored type of {key!r}", f"unexpected reply from Redis: {reply!r}")
    return _lattice_type_of(key, raw[0])


def _stored_value(key: str, reply: object) -> StoredValue:
    """A stored value from the engine's layout: one lattice-type byte, then the payload."""
    raw = _as_bytes(key, reply)
    return StoredValue(_lattice_type_of(key, raw[0]), raw[1:])


def _lattice_type_of(key: str, type_byte: int) -> LatticeType:
    try:
        return LatticeType(type_byte)
    except ValueError:
        raise DecodeError(f"stored value of {key!r}", f"unknown lattice type {type_byte}") from None


def _glob_escape(literal: bytes) -> bytes:
    """``literal`` as a Redis glob pattern that matches only itself."""
    return b"".join(b"\\" + bytes([c]) if c in _GLOB_SPECIAL else bytes([c]) for c in literal)
