"""The storage-engine interface, and the in-memory engine that is its reference twin.

An engine stores, per key, a lattice type and a serialized payload. Writes are merges: the engine combines the
incoming lattice with the stored one, atomically per key, so concurrent writers never lose an update. Reads hand
back the stored payload untouched, so a GET never decodes or re-encodes a value.

Every engine passes the same conformance suite (``tests/unit/test_storage_engines.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cloudburst.errors import LatticeTypeMismatch
from cloudburst.protocol.codec import StorableLattice, decode_lattice, encode_lattice
from cloudburst.protocol.messages import LatticeType


@dataclass(frozen=True, slots=True)
class StoredValue:
    """A key's stored lattice, still serialized."""

    lattice_type: LatticeType
    payload: bytes


class StorageEngine(Protocol):
    """Where a KVS node keeps its data."""

    def get_many(self, keys: Sequence[str]) -> list[StoredValue | None]:
        """The stored values of ``keys``, ``None`` for a missing key, in the order asked."""
        ...

    def merge_many(self, items: Sequence[tuple[str, StorableLattice]]) -> list[LatticeTypeMismatch | None]:
        """Merges each lattice into its key, durably once this returns.

        Items are applied in order, so two items for one key are both merged. An item whose lattice type
        differs from the stored one is skipped and reported; the other items still apply.

        Returns:
            Per item, ``None`` when merged, or the mismatch that stopped it.
        """
        ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Removes ``keys`` (missing ones are ignored), durably once this returns.

        Only for the node's own bookkeeping (acknowledged trigger firings); lattices are never deleted, since a
        deleted key would accept any older write again.
        """
        ...

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """Every stored key that starts with ``prefix``, sorted; including keys that read as missing.

        Lets a node rebuild in-memory indexes over a family of keys (the caches' key-set reports) after a restart.
        """
        ...

    def close(self) -> None:
        """Releases the engine's resources; further calls are invalid."""
        ...


def merge_into(key: str, stored: StoredValue | None, incoming: StorableLattice) -> StoredValue | LatticeTypeMismatch:
    """The merge every engine that merges outside the store applies.

    Returns:
        The new stored value, or the mismatch when ``incoming`` is of another lattice type than ``stored``.
    """
    incoming_type, incoming_payload = encode_lattice(incoming)
    if stored is None:
        return StoredValue(incoming_type, incoming_payload)
    if stored.lattice_type != incoming_type:
        return LatticeTypeMismatch(key, stored.lattice_type.name, incoming_type.name)
    current = decode_lattice(stored.lattice_type, stored.payload, f"stored value of {key!r}")
    merged = current.merge(incoming)  # type: ignore[arg-type]
    if merged == current:
        return stored
    return StoredValue(incoming_type, encode_lattice(merged)[1])


class MemoryEngine:
    """A non-durable engine in a dict: the reference behaviour, and fast for tests."""

    def __init__(self) -> None:
        self._data: dict[str, StoredValue] = {}

    def get_many(self, keys: Sequence[str]) -> list[StoredValue | None]:
        """See :meth:`StorageEngine.get_many`."""
        return [self._data.get(key) for key in keys]

    def merge_many(self, items: Sequence[tuple[str, StorableLattice]]) -> list[LatticeTypeMismatch | None]:
        """See :meth:`StorageEngine.merge_many`."""
        outcomes: list[LatticeTypeMismatch | None] = []
        for key, lattice in items:
            result = merge_into(key, self._data.get(key), lattice)
            if isinstance(result, LatticeTypeMismatch):
                outcomes.append(result)
            else:
                self._data[key] = result
                outcomes.append(None)
        return outcomes

    def delete_many(self, keys: Sequence[str]) -> None:
        """See :meth:`StorageEngine.delete_many`."""
        for key in keys:
            self._data.pop(key, None)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """See :meth:`StorageEngine.keys_with_prefix`."""
        return sorted(key for key in self._data if key.startswith(prefix))

    def close(self) -> None:
        """Drops the data."""
        self._data.clear()
