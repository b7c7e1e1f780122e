"""The executor's own copy of values it read through the node cache: a hit costs a dictionary lookup.

The node cache publishes, in sequence, every key whose value may have changed (a KVS push, a write by any of the
node's executors, a key it stopped holding). Before answering from its copies the tier drains those messages and
drops the named keys; a gap in the sequence means messages were lost, so it drops everything. Until it has heard
the cache once it keeps nothing, so a copy is never older than the invalidations it has seen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

import zmq

from cloudburst.kvs.client import DataClient
from cloudburst.lattices import Lattice
from cloudburst.protocol.codec import StorableLattice
from cloudburst.transport.security import SecurityConfig, curve_client

#: Values an executor keeps; the least recently used go first.
LOCAL_TIER_CAPACITY = 10_000


class LocalReadTier:
    """A :class:`~cloudburst.kvs.client.DataClient` that answers repeated reads from memory.

    Args:
        inner: The node cache client that misses and writes go to.
        invalidations: The node cache's invalidation endpoint (a PUB socket).
        context: The ZeroMQ context to open the subscription in.
        capacity: The most values kept.
        security: CURVE keys; ``None``: plaintext.
    """

    def __init__(
        self,
        inner: DataClient,
        invalidations: str,
        context: zmq.Context[zmq.Socket[bytes]],
        capacity: int = LOCAL_TIER_CAPACITY,
        security: SecurityConfig | None = None,
    ) -> None:
        self._inner = inner
        self._capacity = capacity
        self._values: OrderedDict[str, StorableLattice] = OrderedDict()
        #: The keys the last :meth:`get_many` answered from the local copies, and those the node cache answered
        #: from its memory (for request traces).
        self.last_hits: frozenset[str] = frozenset()
        self.last_cached: frozenset[str] = frozenset()
        self._sequence: int | None = None
        self._subscription = context.socket(zmq.SUB)
        self._subscription.setsockopt(zmq.LINGER, 0)
        self._subscription.setsockopt(zmq.SUBSCRIBE, b"")
        curve_client(self._subscription, security)
        self._subscription.connect(invalidations)
        # Polled before every read: ``zmq_poll`` on a prepared list costs a third of ``Socket.poll``, which builds a
        # ``Poller`` per call.
        self._poll_items = [(self._subscription, zmq.POLLIN)]

    def close(self) -> None:
        """Closes the subscription."""
        self._subscription.close()

    def _drain(self) -> None:
        while zmq.zmq_poll(self._poll_items, 0):
            frames = self._subscription.recv_multipart()
            sequence = int.from_bytes(frames[0], "big")
            if self._sequence is not None and sequence != self._sequence + 1:
                self._values.clear()  # messages were lost: any copy may be stale
            self._sequence = sequence
            for key in frames[1:]:
                self._values.pop(key.decode(), None)

    def get(self, key: str, *, timeout: float | None = None) -> StorableLattice | None:
        """See :meth:`cloudburst.kvs.client.KvsClient.get`."""
        return self.get_many([key], timeout=timeout)[key]

    def get_many(self, keys: Iterable[str], *, timeout: float | None = None) -> dict[str, StorableLattice | None]:
        """See :meth:`cloudburst.kvs.client.KvsClient.get_many`; answers from the local copies where it can."""
        keys = tuple(keys)  # walked twice when some must be fetched
        self._drain()
        kept = self._values
        found: dict[str, StorableLattice | None] = {}
        missing = []
        for key in keys:
            value = kept.get(key)
            if value is not None:
                kept.move_to_end(key)
                found[key] = value
            elif key not in missing:
                missing.append(key)
        self.last_hits = frozenset(found)
        self.last_cached = frozenset()
        if not missing:
            return found  # every key answered here, in the order asked
        fetched = self._inner.get_many(missing, timeout=timeout)
        self.last_cached = self._inner.last_cached
        if self._sequence is not None:  # only once the invalidation stream is known to be complete
            for key, value in fetched.items():
                if value is not None:
                    self._keep(key, value)
        return {key: found[key] if key in found else fetched[key] for key in dict.fromkeys(keys)}

    def _keep(self, key: str, value: StorableLattice) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self._capacity:
            self._values.popitem(last=False)

    def put(self, key: str, lattice: Lattice, *, timeout: float | None = None) -> None:
        """See :meth:`cloudburst.kvs.client.KvsClient.put`; the local copy is dropped (the merge lives below)."""
        self.put_many({key: lattice}, timeout=timeout)

    def put_many(self, items: Mapping[str, Lattice], *, timeout: float | None = None) -> None:
        """See :meth:`cloudburst.kvs.client.KvsClient.put_many`."""
        for key in items:
            self._values.pop(key, None)
        self._inner.put_many(items, timeout=timeout)
