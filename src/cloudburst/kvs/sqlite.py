"""The embedded, durable storage engine: SQLite in write-ahead-log mode.

Why SQLite: it ships with Python, its WAL commit is a single append to one file, and recovery after a crash is
its job, not ours. One transaction covers a whole batch of merges, so the KVS server acknowledges a burst of PUTs
with one commit (group commit). ``docs/storage.md`` records the choice and the durability levels.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cloudburst.errors import LatticeTypeMismatch
from cloudburst.kvs.engine import StoredValue, merge_into
from cloudburst.protocol.codec import StorableLattice
from cloudburst.protocol.messages import LatticeType

#: ``NORMAL``: an acknowledged write survives the process being killed (the WAL append is done before the
#: acknowledgement). ``FULL``: it also survives power loss (the WAL is fsynced on every commit).
Durability = Literal["NORMAL", "FULL"]

#: Bytes of values the engine also keeps in memory (write-through, the least recently used dropped first): a GET
#: or a merge of a hot key then reads no blob back from SQLite, which copies it (an 8 MB value costs milliseconds).
READ_CACHE_BYTES = 256 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    lattice_type INTEGER NOT NULL,
    payload BLOB NOT NULL
)
"""


class SqliteEngine:
    """A durable engine in one SQLite database file.

    Args:
        path: The database file; its directory is created if missing.
        durability: See :data:`Durability`.
        cache_bytes: See :data:`READ_CACHE_BYTES` (the engine is the file's only writer, so its copies stay exact).
    """

    def __init__(self, path: Path, durability: Durability = "NORMAL", cache_bytes: int = READ_CACHE_BYTES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={durability}")
        self._db.execute(_SCHEMA)
        self._cache: OrderedDict[str, StoredValue] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0

    def get_many(self, keys: Sequence[str]) -> list[StoredValue | None]:
        """See :meth:`cloudburst.kvs.engine.StorageEngine.get_many`."""
        return [self._get(key) for key in keys]

    def _get(self, key: str) -> StoredValue | None:
        kept = self._cache.get(key)
        if kept is not None:
            self._cache.move_to_end(key)
            return kept
        row = self._db.execute("SELECT lattice_type, payload FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value = StoredValue(LatticeType(row[0]), row[1])
        self._keep(key, value)
        return value

    def _keep(self, key: str, value: StoredValue) -> None:
        """Keeps a committed value in memory, dropping the least recently used past the budget."""
        self._forget(key)
        if len(value.payload) > self._cache_bytes:
            return
        self._cache[key] = value
        self._cached_bytes += len(value.payload)
        while self._cached_bytes > self._cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped.payload)

    def _forget(self, key: str) -> None:
        dropped = self._cache.pop(key, None)
        if dropped is not None:
            self._cached_bytes -= len(dropped.payload)

    def merge_many(self, items: Sequence[tuple[str, StorableLattice]]) -> list[LatticeTypeMismatch | None]:
        """See :meth:`cloudburst.kvs.engine.StorageEngine.merge_many`; one transaction for the whole batch."""
        outcomes: list[LatticeTypeMismatch | None] = []
        written: dict[str, StoredValue] = {}
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for key, lattice in items:
                stored = written[key] if key in written else self._get(key)
                result = merge_into(key, stored, lattice)
                if isinstance(result, LatticeTypeMismatch):
                    outcomes.append(result)
                    continue
                outcomes.append(None)
                if result is not stored:
                    written[key] = result
            self._db.executemany(
                "INSERT OR REPLACE INTO kv (key, lattice_type, payload) VALUES (?, ?, ?)",
                [(key, int(value.lattice_type), value.payload) for key, value in written.items()],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for key, value in written.items():  # only once committed: the memory never holds what the file lacks
            self._keep(key, value)
        return outcomes

    def delete_many(self, keys: Sequence[str]) -> None:
        """See :meth:`cloudburst.kvs.engine.StorageEngine.delete_many`; one transaction."""
        if not keys:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("DELETE FROM kv WHERE key = ?", [(key,) for key in keys])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for key in keys:
            self._forget(key)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """See :meth:`cloudburst.kvs.engine.StorageEngine.keys_with_prefix`.

        A range scan on the primary key (``prefix <= key < successor``) rather than ``LIKE``, which would need
        escaping of ``%`` and ``_`` and cannot use the index.
        """
        upper = _prefix_successor(prefix)
        if upper is None:
            rows = self._db.execute("SELECT key FROM kv WHERE key >= ? ORDER BY key", (prefix,))
        else:
            rows = self._db.execute("SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, upper))
        return [row[0] for row in rows]

    def close(self) -> None:
        """Closes the database."""
        self._cache.clear()
        self._cached_bytes = 0
        self._db.close()


def _prefix_successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``; ``None`` when there is none.

    SQLite compares text bytewise in UTF-8, which orders like code points, so bumping the last code point that can
    be bumped gives the bound. Surrogates cannot be encoded and are skipped.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            bumped = last + 1
            chars.append(chr(0xE000 if 0xD800 <= bumped <= 0xDFFF else bumped))
            return "".join(chars)
    return None
