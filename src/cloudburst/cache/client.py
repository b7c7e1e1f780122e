"""A client of the node cache with the same calls and errors as :class:`~cloudburst.kvs.client.KvsClient`.

The cache speaks a KVS storage thread's protocol, so the KVS client's request matching, deadlines, retries and
error mapping apply unchanged; only routing differs (every key goes to the one cache endpoint, there is no routing
tier to ask: :class:`KvsClient`'s ``fixed_endpoint``). :class:`NodeCacheClient` exposes only the calls an executor
needs, so code written against it can take either client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cloudburst.clock import Clock
from cloudburst.kvs.client import KvsClient
from cloudburst.lattices import Lattice
from cloudburst.protocol.codec import StorableLattice
from cloudburst.retry import RetryPolicy
from cloudburst.transport.security import SecurityConfig


class NodeCacheClient:
    """A blocking client of the node cache. Safe to share between threads (calls are serialized).

    Args:
        endpoint: The cache's request endpoint, e.g. ``tcp://10.0.0.5:7160``.
        host: The local address the cache can push responses to.
        timeout: Default deadline of each call, in seconds.
        retry: Attempt timeout and back-off; a resent request is harmless, since every write is a lattice merge.
        clock: Time source for deadlines.
        security: CURVE keys; ``None``: plaintext.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        host: str,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        security: SecurityConfig | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._client = KvsClient(
            endpoint, host=host, timeout=timeout, retry=retry, clock=clock, fixed_endpoint=True, security=security
        )

    def __enter__(self) -> NodeCacheClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def response_address(self) -> str:
        """Where the cache pushes this client's responses."""
        return self._client.response_address

    def close(self) -> None:
        """Closes the client's sockets."""
        self._client.close()

    @property
    def last_cached(self) -> frozenset[str]:
        """The keys of the last read the cache answered from its memory."""
        return self._client.last_cached

    def get(self, key: str, *, timeout: float | None = None) -> StorableLattice | None:
        """The lattice stored under ``key``, or ``None`` if there is none.

        Raises:
            DeadlineExceeded: No answer before the deadline.
            KvsError: The cache could not get an answer from the KVS (``TIMEOUT`` after retries).
            DecodeError: The payload is corrupt.
        """
        return self._client.get(key, timeout=timeout)

    def get_many(self, keys: Iterable[str], *, timeout: float | None = None) -> dict[str, StorableLattice | None]:
        """The lattices stored under ``keys`` (``None`` for missing ones), in one round trip to the cache.

        Raises:
            DeadlineExceeded: No answer for some key before the deadline.
            DecodeError: A payload is corrupt.
        """
        return self._client.get_many(keys, timeout=timeout)

    def put(self, key: str, lattice: Lattice, *, timeout: float | None = None) -> None:
        """Merges ``lattice`` into ``key``; returns once the KVS (through the cache) has acknowledged it.

        Raises:
            LatticeTypeMismatch: The key holds a lattice of another type.
            DeadlineExceeded: No acknowledgement before the deadline.
            EncodeError: The lattice has no wire form.
        """
        self._client.put(key, lattice, timeout=timeout)

    def put_many(self, items: Mapping[str, Lattice], *, timeout: float | None = None) -> None:
        """Merges several keys; returns once the KVS (through the cache) has acknowledged all of them.

        Raises:
            LatticeTypeMismatch: A key holds a lattice of another type (the other keys are still written).
            DeadlineExceeded: Some key was not acknowledged before the deadline.
            EncodeError: A lattice has no wire form.
        """
        self._client.put_many(items, timeout=timeout)
