"""The KVS node's request logic, free of sockets: requests in, responses out.

It owns the Anna request semantics (who answers which key, ``WRONG_THREAD``, ``KEY_DNE``, ``LATTICE``, address
invalidation) and leaves storage to an injected :class:`~cloudburst.kvs.engine.StorageEngine`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from cloudburst.errors import DecodeError, LatticeTypeMismatch
from cloudburst.kvs.engine import StorageEngine, StoredValue
from cloudburst.kvs.ring import HashRing
from cloudburst.lattices import LwwLattice, OrderedSetLattice, PriorityLattice
from cloudburst.protocol.codec import StorableLattice, decode_lattice
from cloudburst.protocol.messages import (
    AnnaError,
    KeyAddress,
    KeyAddressRequest,
    KeyAddressResponse,
    KeyRequest,
    KeyResponse,
    KeyTuple,
    LatticeType,
    RequestType,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageTopology:
    """Which storage thread of this node answers which key.

    Attributes:
        host: The host clients reach the storage threads at.
        ports: The storage port of each thread, indexed by thread id.
        replication: How many threads hold each key (the original's local replication factor).
    """

    host: str
    ports: tuple[int, ...]
    replication: int = 1
    _ring: HashRing[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.ports:
            raise ValueError("a storage node needs at least one thread")
        object.__setattr__(self, "_ring", HashRing(range(len(self.ports))))

    def owners(self, key: str) -> list[int]:
        """The thread ids responsible for ``key``, primary first."""
        return self._ring.owners(key, self.replication)

    def endpoint(self, tid: int) -> str:
        """The storage endpoint of thread ``tid``."""
        return f"tcp://{self.host}:{self.ports[tid]}"


def reads_as_missing(lattice: StorableLattice) -> bool:
    """Whether a stored lattice is empty and so reads as ``KEY_DNE`` (Anna's rule; ordered sets excepted).

    An LWW register holding an empty value is how a key is deleted: the newest write wins and reads as missing.
    """
    if isinstance(lattice, OrderedSetLattice):
        return False
    if isinstance(lattice, LwwLattice | PriorityLattice):
        return not lattice.value
    return not lattice.reveal()


class KvsState:
    """Answers address lookups and GET/PUT requests for one KVS node.

    Args:
        topology: The node's threads and which keys each owns.
        engine: Where the data lives.
    """

    def __init__(self, topology: StorageTopology, engine: StorageEngine) -> None:
        self.topology = topology
        self.engine = engine

    def handle_address_request(self, request: KeyAddressRequest) -> KeyAddressResponse:
        """Answers which storage endpoints hold each requested key (none for an empty key)."""
        return KeyAddressResponse(
            addresses=tuple(
                KeyAddress(key, tuple(self.topology.endpoint(t) for t in self.topology.owners(key)) if key else ())
                for key in request.keys
            ),
            response_id=request.request_id,
        )

    def handle_key_requests(self, tid: int, requests: Sequence[KeyRequest]) -> list[KeyResponse]:
        """Serves a batch of requests that arrived at thread ``tid``, one response per request, in order.

        All PUTs of the batch are merged first, in one engine call (one durable commit); then all GETs are read.
        Every request of the batch is answered only after both, so a reader never sees a write before the writer
        could, and a GET in the batch sees every PUT in it.
        """
        results: list[list[KeyTuple | None]] = []
        puts: list[tuple[str, StorableLattice]] = []
        put_slots: list[tuple[int, int, KeyTuple]] = []
        gets: list[str] = []
        get_slots: list[tuple[int, int, KeyTuple]] = []
        for r, request in enumerate(requests):
            row: list[KeyTuple | None] = []
            for t, item in enumerate(request.tuples):
                owners = self.topology.owners(item.key)
                invalidate = 0 < item.address_cache_size != len(owners)
                if tid not in owners:
                    row.append(KeyTuple(item.key, error=AnnaError.WRONG_THREAD, invalidate=invalidate))
                    continue
                answer = KeyTuple(item.key, item.lattice_type, invalidate=invalidate)
                if request.type == RequestType.GET:
                    gets.append(item.key)
                    get_slots.append((r, t, answer))
                    row.append(None)
                    continue
                lattice = self._decode_put(item)
                if lattice is None:
                    row.append(KeyTuple(item.key, item.lattice_type, AnnaError.LATTICE, invalidate=invalidate))
                    continue
                puts.append((item.key, lattice))
                put_slots.append((r, t, answer))
                row.append(None)
            results.append(row)
        if puts:
            for (r, t, answer), outcome in zip(put_slots, self.engine.merge_many(puts), strict=True):
                if isinstance(outcome, LatticeTypeMismatch):
                    logger.info("rejected a PUT: %s", outcome)
                    answer = KeyTuple(answer.key, answer.lattice_type, AnnaError.LATTICE, invalidate=answer.invalidate)
                results[r][t] = answer
        if gets:
            for (r, t, answer), stored in zip(get_slots, self.engine.get_many(gets), strict=True):
                results[r][t] = self._read_answer(answer, stored)
        return [
            KeyResponse(
                type=request.type,
                tuples=tuple(t for t in row if t is not None),
                response_id=request.request_id,
            )
            for request, row in zip(requests, results, strict=True)
        ]

    @staticmethod
    def _decode_put(item: KeyTuple) -> StorableLattice | None:
        if item.lattice_type == LatticeType.NONE:
            logger.info("rejected a PUT of %r: no lattice type", item.key)
            return None
        try:
            return decode_lattice(item.lattice_type, item.payload, f"PUT payload of {item.key!r}")
        except (DecodeError, ValueError) as error:
            logger.info("rejected a PUT: %s", error)
            return None

    @staticmethod
    def _read_answer(answer: KeyTuple, stored: StoredValue | None) -> KeyTuple:
        missing = KeyTuple(answer.key, error=AnnaError.KEY_DNE, invalidate=answer.invalidate)
        if stored is None or reads_as_missing(decode_lattice(stored.lattice_type, stored.payload, answer.key)):
            return missing
        return KeyTuple(answer.key, stored.lattice_type, payload=stored.payload, invalidate=answer.invalidate)
