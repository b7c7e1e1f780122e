"""The KVS node's request logic, free of sockets: requests in, responses and cache pushes out.

It owns the Anna request semantics (who answers which key, ``WRONG_THREAD``, ``KEY_DNE``, ``LATTICE``, address
invalidation) and leaves storage to an injected :class:`~cloudburst.kvs.engine.StorageEngine`. It also keeps the
index of which node caches hold which keys (:mod:`cloudburst.kvs.subscriptions`) and, for every batch, says which
updates to push to them; the server only delivers them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from cloudburst.clock import Clock, SystemClock
from cloudburst.errors import DecodeError, LatticeTypeMismatch
from cloudburst.keys import (
    CACHE_KEY_SET_PREFIX,
    TRIGGER_DEAD_PREFIX,
    TRIGGER_FIRING_PREFIX,
    TRIGGER_PREFIX,
    is_metadata_key,
    reporting_cache,
)
from cloudburst.kvs.engine import StorageEngine, StoredValue
from cloudburst.kvs.ring import HashRing
from cloudburst.kvs.subscriptions import (
    DEFAULT_CACHE_UPDATE_PORT,
    DEFAULT_MAX_CACHES,
    DEFAULT_MAX_KEYS_PER_CACHE,
    CacheSubscriptions,
)
from cloudburst.kvs.triggers import DeadFiring, TriggerDispatch, TriggerOutbox, TriggerRegistry
from cloudburst.lattices import LwwLattice, OrderedSetLattice, PriorityLattice
from cloudburst.protocol import codec
from cloudburst.protocol.codec import StorableLattice, decode_lattice, decode_string_set
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
from cloudburst.protocol.trigger_messages import TriggerAck, TriggerFiring, TriggerSpec

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


def firing_key(firing_id: str) -> str:
    """Where a node keeps a run it owes until the run is acknowledged."""
    return TRIGGER_FIRING_PREFIX + firing_id


def _record(firing: TriggerFiring) -> LwwLattice:
    return LwwLattice(timestamp=0, value=codec.encode_trigger_firing(firing))


def _lww_bytes(key: str, stored: StoredValue | None) -> bytes:
    """The bytes an LWW-stored record holds (empty when missing or not LWW)."""
    if stored is None or stored.lattice_type != LatticeType.LWW:
        return b""
    lattice = decode_lattice(stored.lattice_type, stored.payload, f"stored value of {key!r}")
    return lattice.value if isinstance(lattice, LwwLattice) else b""


def reads_as_missing(lattice: StorableLattice) -> bool:
    """Whether a stored lattice is empty and so reads as ``KEY_DNE`` (Anna's rule; ordered sets excepted).

    An LWW register holding an empty value is how a key is deleted: the newest write wins and reads as missing.
    """
    if isinstance(lattice, OrderedSetLattice):
        return False
    if isinstance(lattice, LwwLattice | PriorityLattice):
        return not lattice.value
    return not lattice.reveal()


@dataclass(frozen=True, slots=True)
class Push:
    """An update to deliver to a node cache; no acknowledgement is expected.

    Attributes:
        address: The cache's update endpoint, ``tcp://<cache ip>:<cache update port>``.
        request: A PUT of the full merged lattice of each key the cache holds that the batch changed.
    """

    address: str
    request: KeyRequest


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What serving one batch produced.

    Attributes:
        responses: One response per request, in request order, for each request's ``response_address``.
        pushes: At most one push per subscribed cache.
        dispatches: The runs of storage triggers the batch's writes fired, for schedulers to place.
    """

    responses: tuple[KeyResponse, ...]
    pushes: tuple[Push, ...]
    dispatches: tuple[TriggerDispatch, ...] = ()


class KvsState:
    """Answers address lookups and GET/PUT requests for one KVS node, and says what to push to node caches.

    The cache subscriptions are rebuilt from the engine's stored key-set reports on construction, so a restarted
    node keeps pushing to the caches that reported before it went down.

    Args:
        topology: The node's threads and which keys each owns.
        engine: Where the data lives.
        cache_update_port: The port node caches receive pushed updates on.
        max_caches: The most caches subscribed at once (see :class:`CacheSubscriptions`).
        max_keys_per_cache: The most keys indexed for one cache.
        trigger_endpoint: Where executors acknowledge the runs of storage triggers this node fires.
        clock: Times trigger redeliveries.
        new_id: Names each fired run (unique across nodes and restarts).
    """

    def __init__(
        self,
        topology: StorageTopology,
        engine: StorageEngine,
        *,
        cache_update_port: int = DEFAULT_CACHE_UPDATE_PORT,
        max_caches: int = DEFAULT_MAX_CACHES,
        max_keys_per_cache: int = DEFAULT_MAX_KEYS_PER_CACHE,
        trigger_endpoint: str = "",
        clock: Clock | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.topology = topology
        self.engine = engine
        self.cache_update_port = cache_update_port
        self.subscriptions = CacheSubscriptions(max_caches, max_keys_per_cache)
        self.triggers = TriggerRegistry()
        self._clock = clock or SystemClock()
        self.outbox = TriggerOutbox(trigger_endpoint, new_id or (lambda: uuid.uuid4().hex))
        self._pushes_made = 0
        reports = engine.keys_with_prefix(CACHE_KEY_SET_PREFIX)
        if reports:
            self._apply_reports(reports)
            logger.info("restored the key sets of %d caches", len(self.subscriptions))
        self._apply_trigger_definitions(engine.keys_with_prefix(TRIGGER_PREFIX))
        self._restore_owed_runs()

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
        """The responses of :meth:`handle_batch`, for callers that deliver no cache pushes (tools, tests)."""
        return list(self.handle_batch(tid, requests).responses)

    def handle_batch(self, tid: int, requests: Sequence[KeyRequest]) -> BatchResult:
        """Serves a batch of requests that arrived at thread ``tid``: one response per request, in order, and pushes.

        All PUTs of the batch are merged first, in one engine call (one durable commit); then all GETs are read.
        Every request of the batch is answered only after both, so a reader never sees a write before the writer
        could, and a GET in the batch sees every PUT in it. Key-set reports merged in the batch update the
        subscriptions before the pushes are worked out, so a cache is pushed the writes that arrive with its report.
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
        merged: dict[str, None] = {}  # insertion-ordered set: pushes list keys in the order they were written
        written: list[KeyTuple] = []
        if puts:
            for (r, t, answer), outcome in zip(put_slots, self.engine.merge_many(puts), strict=True):
                if isinstance(outcome, LatticeTypeMismatch):
                    logger.info("rejected a PUT: %s", outcome)
                    answer = KeyTuple(answer.key, answer.lattice_type, AnnaError.LATTICE, invalidate=answer.invalidate)
                else:
                    merged[answer.key] = None
                    written.append(requests[r].tuples[t])
                results[r][t] = answer
        definitions = [key for key in merged if key.startswith(TRIGGER_PREFIX)]
        if definitions:
            self._apply_trigger_definitions(definitions)
        # Owed runs are stored before any write of the batch is acknowledged: an acknowledged write always gets its run.
        dispatches = self._fire(written) if self.triggers else ()
        if gets:
            for (r, t, answer), stored in zip(get_slots, self.engine.get_many(gets), strict=True):
                results[r][t] = self._read_answer(answer, stored)
        responses = tuple(
            KeyResponse(
                type=request.type,
                tuples=tuple(t for t in row if t is not None),
                response_id=request.request_id,
            )
            for request, row in zip(requests, results, strict=True)
        )
        return BatchResult(responses, self._pushes_for(list(merged)), dispatches)

    # -- storage triggers --------------------------------------------------------------------------------------

    def handle_trigger_acks(self, acks: Sequence[TriggerAck]) -> None:
        """Settles acknowledged runs: done ones are forgotten, ones failed for the last time are set aside as dead."""
        done: list[str] = []
        dead: list[DeadFiring] = []
        now = self._clock.now()
        for ack in acks:
            outcome = self.outbox.acknowledge(ack, now)
            if isinstance(outcome, DeadFiring):
                dead.append(outcome)
            elif outcome is not None:
                done.append(firing_key(outcome.id))
        self._bury(dead)
        if done:
            self.engine.delete_many(done)

    def due_trigger_runs(self) -> tuple[TriggerDispatch, ...]:
        """The runs to deliver again now (unacknowledged in time, or failed and past their pause)."""
        dispatches, dead = self.outbox.due(self._clock.now())
        self._bury(dead)
        return tuple(dispatches)

    def _fire(self, written: Sequence[KeyTuple]) -> tuple[TriggerDispatch, ...]:
        owed: list[tuple[TriggerFiring, TriggerSpec]] = [
            (self.outbox.fire(spec, item.key, item.lattice_type, item.payload), spec)
            for item in written
            if not is_metadata_key(item.key)
            for spec in self.triggers.matching(item.key)
        ]
        if not owed:
            return ()
        self.engine.merge_many([(firing_key(firing.id), _record(firing)) for firing, _ in owed])
        now = self._clock.now()
        return tuple(self.outbox.deliver(firing, spec, now) for firing, spec in owed)

    def _bury(self, dead: Sequence[DeadFiring]) -> None:
        if not dead:
            return
        for entry in dead:
            logger.error(
                "gave up on run %s of trigger %r for key %r after %d attempts: %s",
                entry.firing.id,
                entry.firing.trigger,
                entry.firing.key,
                entry.firing.attempt,
                entry.reason,
            )
        self.engine.merge_many(
            [(TRIGGER_DEAD_PREFIX + d.firing.id, _record(replace(d.firing, last_error=d.reason))) for d in dead]
        )
        self.engine.delete_many([firing_key(d.firing.id) for d in dead])

    def _apply_trigger_definitions(self, keys: Sequence[str]) -> None:
        """Registers, replaces or removes the triggers defined under ``keys``, from what the engine holds now."""
        for key, stored in zip(keys, self.engine.get_many(keys), strict=True):
            name = key[len(TRIGGER_PREFIX) :]
            definition = _lww_bytes(key, stored)
            if not definition:
                self.triggers.remove(name)
                continue
            try:
                spec = codec.decode_trigger_spec(definition, f"trigger definition {key!r}")
            except DecodeError as error:
                logger.warning("ignored a trigger definition: %s", error)
                self.triggers.remove(name)
                continue
            if spec.name != name:
                logger.warning("ignored trigger %r stored under %r", spec.name, key)
                continue
            self.triggers.put(spec)

    def _restore_owed_runs(self) -> None:
        keys = self.engine.keys_with_prefix(TRIGGER_FIRING_PREFIX)
        if not keys:
            return
        firings = []
        for key, stored in zip(keys, self.engine.get_many(keys), strict=True):
            try:
                firings.append(codec.decode_trigger_firing(_lww_bytes(key, stored)))
            except DecodeError as error:
                logger.error("dropped an unreadable owed run %r: %s", key, error)
        self._bury(self.outbox.restore(firings, self.triggers, self._clock.now()))
        logger.info("restored %d owed trigger runs", len(self.outbox))

    def push_address(self, ip: str) -> str:
        """The update endpoint of the cache on node ``ip`` (IPv6 addresses bracketed)."""
        host = f"[{ip}]" if ":" in ip else ip
        return f"tcp://{host}:{self.cache_update_port}"

    def _pushes_for(self, merged: list[str]) -> tuple[Push, ...]:
        """The pushes for the keys a batch merged: each cache gets one PUT of its keys' merged values.

        The values are read back from the engine rather than taken from the requests, so a cache receives the
        merge of every write so far, not one writer's fragment.
        """
        reports = [key for key in merged if key.startswith(CACHE_KEY_SET_PREFIX)]
        newly_held = self._apply_reports(reports) if reports else {}
        if not self.subscriptions:
            return ()
        pushed = [key for key in merged if not is_metadata_key(key) and self.subscriptions.caches_of(key)]
        # A cache fetched a newly reported key before it reported holding it; a write in between was never pushed
        # to it. Sending the current value of every newly held key closes that window.
        catch_up = sorted({key for keys in newly_held.values() for key in keys} - set(pushed))
        if not pushed and not catch_up:
            return ()
        by_cache: dict[str, list[KeyTuple]] = {}
        for key, stored in zip(pushed + catch_up, self.engine.get_many(pushed + catch_up), strict=True):
            if stored is None:  # never written, or deleted: nothing a cache could hold stale
                continue
            item = KeyTuple(key, stored.lattice_type, payload=stored.payload)
            targets = self.subscriptions.caches_of(key) if key in merged else ()
            for ip in sorted({*targets, *(ip for ip, keys in newly_held.items() if key in keys)}):
                by_cache.setdefault(ip, []).append(item)
        pushes = []
        for ip, tuples in by_cache.items():
            self._pushes_made += 1
            request = KeyRequest(
                RequestType.PUT, tuple(tuples), response_address="", request_id=f"push:{self._pushes_made}"
            )
            pushes.append(Push(self.push_address(ip), request))
        return tuple(pushes)

    def _apply_reports(self, keys: list[str]) -> dict[str, frozenset[str]]:
        """Replaces the subscriptions of the caches whose key-set reports are stored under ``keys``.

        The stored (merged) report is read rather than the incoming one, so a late report with an older timestamp
        cannot roll a cache's set back.

        Returns:
            Per cache ip, the keys it holds now and did not hold before.
        """
        newly_held: dict[str, frozenset[str]] = {}
        for key, stored in zip(keys, self.engine.get_many(keys), strict=True):
            ip = reporting_cache(key)
            if ip is None:
                logger.info("ignored a key-set report that names no cache: %r", key)
                continue
            reported = self._reported_keys(key, stored)
            if reported is not None:
                before = frozenset(self.subscriptions.keys_of(ip))
                self.subscriptions.replace(ip, reported)
                added = frozenset(self.subscriptions.keys_of(ip)) - before
                if added:
                    newly_held[ip] = added
        return newly_held

    @staticmethod
    def _reported_keys(key: str, stored: StoredValue | None) -> tuple[str, ...] | None:
        """The key set a stored report holds (empty when deleted), or ``None`` when it is not a valid report."""
        if stored is None:
            return ()
        if stored.lattice_type != LatticeType.LWW:
            logger.info("ignored the key-set report %r: it is a %s lattice, not LWW", key, stored.lattice_type.name)
            return None
        try:
            lattice = decode_lattice(stored.lattice_type, stored.payload, f"stored value of {key!r}")
            if not isinstance(lattice, LwwLattice):  # the codec decodes LWW payloads to LwwLattice; keep mypy sure
                return None
            return decode_string_set(lattice.value, f"key-set report {key!r}")
        except DecodeError as error:
            logger.info("ignored an undecodable key-set report: %s", error)
            return None

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
