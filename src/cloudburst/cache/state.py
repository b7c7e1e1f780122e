"""The node cache's decisions, free of sockets, clocks and the KVS: events in, instructions out.

One cache runs per node and is shared by the node's executors. It keeps recently used keys' lattices (still
serialized, as the KVS stores them) so that reads are answered next to the executors. The server feeds
:class:`CacheState` the executors' requests, the KVS's pushed updates, the outcomes of the fetches and writes it
asked for, and ticks, each with the current monotonic time; it executes the instructions it gets back.

Reads. A GET is answered at once when every key is cached (or known missing). Otherwise the keys not yet being
fetched go out in one :class:`CacheFetchInstruction`; a key already being fetched for another request is not fetched
again, so concurrent readers of one missing key share one KVS round trip. The GET is answered when all its keys are
resolved. A key the KVS reports missing is remembered as missing for ``negative_ttl``, so readers spinning on a key
that does not exist yet do not hammer the KVS as they did in the original; a push or a local PUT of the key forgets
that at once.

Writes. A PUT is merged into the cached copy at once, so later reads through this node see it, and goes to the
KVS as written (the incoming lattice, not the merged one: the KVS merges). The writer is acknowledged only when the
KVS acknowledges, and a KVS error (such as a lattice type mismatch) reaches the writer; on a mismatch the cached copy
is dropped, since it was merged on a false assumption. A PUT of a key that is not cached is not inserted: the cache
would hold only the written part of a value the KVS may hold more of (a set, say). It does not need to be, because
the writer waits for the KVS's acknowledgement, after which a read fetches the merged value.

Freshness (the original's caches could serve a stale value for tens of seconds). The KVS pushes every change of a
key to the caches that reported holding it. So the cache reports its full key set (the KVS replaces the set on each
report) at most once per ``report_interval`` after the set changed, and in full every ``refresh_interval``
regardless, so a restarted KVS relearns it. A push merges into the cached copy (a type change replaces it; a value
that reads as missing, such as an LWW with an empty value, drops it and remembers the key as missing). A push or a
PUT for a key being fetched is held and merged into the fetched value, so a fetch answered from before that change
does not leave a stale copy the KVS will not push again.

Metadata keys (``ANNA_METADATA|...``) are never cached: reads of them always go to the KVS and writes pass through.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import assert_never

from cloudburst.cache.policy import EvictionPolicy, LruEvictionPolicy
from cloudburst.errors import ConfigError, DecodeError
from cloudburst.keys import cache_key_set_key, is_metadata_key
from cloudburst.kvs.engine import StoredValue
from cloudburst.kvs.state import reads_as_missing
from cloudburst.protocol.codec import StorableLattice, decode_lattice, encode_lattice
from cloudburst.protocol.messages import AnnaError, LatticeType

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """How big the node cache may grow and how it keeps the KVS informed.

    Attributes:
        max_keys: The most keys cached (the original's 1000).
        max_bytes: The most payload bytes cached; a value larger than this is answered but not kept.
        negative_ttl: Seconds a key the KVS reported missing is answered as missing without asking again.
        report_interval: The least seconds between two key-set reports, so a burst of inserts costs one report.
        refresh_interval: Seconds between full key-set reports sent even without a change, so a restarted KVS
            relearns which keys to push here.
        max_negative_keys: The most keys remembered as missing; the oldest is forgotten first.
        max_pending_gets: The most GETs waiting for the KVS at once; past it a GET with a miss fails at once with
            ``TIMEOUT`` (a flood of requests must not exhaust memory).
        max_pending_writes: The most PUTs waiting for the KVS at once; past it a PUT fails at once with ``TIMEOUT``.
        validate: Run :meth:`CacheState.validate` after every event (tests and debugging; it costs a full scan).
    """

    max_keys: int = 1000
    max_bytes: int = 256 * 2**20
    negative_ttl: float = 0.1
    report_interval: float = 0.1
    refresh_interval: float = 5.0
    max_negative_keys: int = 10_000
    max_pending_gets: int = 65_536
    max_pending_writes: int = 65_536
    validate: bool = False

    def __post_init__(self) -> None:
        for name in ("max_keys", "max_bytes", "max_negative_keys", "max_pending_gets", "max_pending_writes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CacheConfig.{name} must be at least 1")
        for name in ("negative_ttl", "report_interval", "refresh_interval"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"CacheConfig.{name} must be a non-negative number of seconds")


@dataclass(frozen=True, slots=True)
class CacheKeyResult:
    """One key's outcome: its value when ``error`` is ``NO_ERROR``, else ``None``.

    Used both for the KVS's answer to a fetch and for the cache's answer to a GET.
    """

    key: str
    error: AnnaError
    value: StoredValue | None = None
    #: Answered from the cache's memory (a cached value, or a key remembered as missing).
    cached: bool = False


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """A snapshot of the cache's counters and sizes.

    Attributes:
        hits: GET keys answered from a cached value.
        negative_hits: GET keys answered as missing from the negative cache, without the KVS.
        misses: GET keys that needed the KVS (joining a fetch already under way counts too).
        evictions: Keys evicted to fit the bounds.
        pushes_applied: Pushed updates merged into a cached (or fetching) key.
        pushes_ignored: Pushed updates for keys not cached.
        keys: Keys cached now.
        bytes_held: Payload bytes cached now.
        negative_keys: Keys remembered as missing now (some may have expired but not been purged yet).
        pending_gets: GETs waiting for the KVS.
        pending_fetches: Keys being fetched.
        pending_writes: PUTs waiting for the KVS's acknowledgement.
    """

    hits: int
    negative_hits: int
    misses: int
    evictions: int
    pushes_applied: int
    pushes_ignored: int
    keys: int
    bytes_held: int
    negative_keys: int
    pending_gets: int
    pending_fetches: int
    pending_writes: int


# -- events ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheGetEvent:
    """An executor reads ``keys``; ``request_id`` is opaque here and handed back in the reply."""

    request_id: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CachePutEvent:
    """An executor writes one lattice (serialized) under ``key``."""

    request_id: str
    key: str
    lattice_type: LatticeType
    payload: bytes


@dataclass(frozen=True, slots=True)
class CachePushEvent:
    """The KVS pushed ``key``'s full merged lattice after a change."""

    key: str
    lattice_type: LatticeType
    payload: bytes


@dataclass(frozen=True, slots=True)
class CacheFetchDoneEvent:
    """The KVS answered a :class:`CacheFetchInstruction`.

    The server must always feed this event back, also on failure (each key with its error, ``TIMEOUT`` when the
    KVS did not answer); a key of the fetch missing from ``results`` counts as ``TIMEOUT``.
    """

    fetch_id: int
    results: tuple[CacheKeyResult, ...]


@dataclass(frozen=True, slots=True)
class CacheWriteDoneEvent:
    """The KVS answered a :class:`CacheWriteInstruction`; ``detail`` explains an error to the writer."""

    write_id: int
    error: AnnaError
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CacheTickEvent:
    """Time passed: purge expired negative entries and send a due key-set report."""


CacheEvent = CacheGetEvent | CachePutEvent | CachePushEvent | CacheFetchDoneEvent | CacheWriteDoneEvent | CacheTickEvent


# -- instructions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheGetReplyInstruction:
    """Answer a GET: one result per distinct key asked, in the order first asked."""

    request_id: str
    results: tuple[CacheKeyResult, ...]


@dataclass(frozen=True, slots=True)
class CachePutReplyInstruction:
    """Answer a PUT; ``NO_ERROR`` means the KVS acknowledged it."""

    request_id: str
    key: str
    error: AnnaError
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CacheFetchInstruction:
    """GET ``keys`` from the KVS, then feed back a :class:`CacheFetchDoneEvent` with ``fetch_id``."""

    fetch_id: int
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CacheWriteInstruction:
    """PUT this lattice to the KVS, then feed back a :class:`CacheWriteDoneEvent` with ``write_id``."""

    write_id: int
    key: str
    lattice_type: LatticeType
    payload: bytes


@dataclass(frozen=True, slots=True)
class CacheReportInstruction:
    """PUT the cache's full key set under ``report_key`` (an LWW of a ``StringSet``, timestamped by the server).

    The KVS replaces this cache's subscription with ``keys`` (an empty set unsubscribes it). Reports are not
    acknowledged to the state; a lost one is repaired by the next periodic refresh.
    """

    report_key: str
    keys: tuple[str, ...]


CacheInstruction = (
    CacheGetReplyInstruction
    | CachePutReplyInstruction
    | CacheFetchInstruction
    | CacheWriteInstruction
    | CacheReportInstruction
)


# -- internal records ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _PendingGet:
    """A GET waiting for fetched keys; ``results`` holds the keys resolved so far."""

    request_id: str
    keys: tuple[str, ...]
    results: dict[str, CacheKeyResult]
    waiting: set[str]


@dataclass(slots=True)
class _Fetch:
    """A key being fetched: which fetch carries it, which GETs wait, and changes seen meanwhile.

    ``overlay`` is the merge of every PUT and push of the key since the fetch went out; it is merged into the
    fetched value so that a fetch answered from before those changes does not leave a stale copy behind.
    """

    fetch_id: int
    waiters: set[int] = field(default_factory=set)
    overlay: StorableLattice | None = None


@dataclass(frozen=True, slots=True)
class _PendingWrite:
    request_id: str
    key: str


class CacheState:
    """The node cache's state machine.

    Args:
        node_ip: The node's ip, which names the key the key-set reports are written under.
        config: Bounds and intervals.
        policy: Chooses eviction victims; least recently used by default.
    """

    def __init__(self, node_ip: str, config: CacheConfig | None = None, policy: EvictionPolicy | None = None) -> None:
        self.config = config or CacheConfig()
        self.policy: EvictionPolicy = policy or LruEvictionPolicy()
        self.report_key = cache_key_set_key(node_ip)
        # Least recently used first: the order *is* the LRU order, so it cannot disagree with the entries.
        self._entries: OrderedDict[str, StoredValue] = OrderedDict()
        self._bytes = 0
        # Key -> expiry time. The TTL is constant and time only moves forward, so insertion order is expiry order.
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._gets: dict[int, _PendingGet] = {}
        self._fetching: dict[str, _Fetch] = {}
        self._fetches: dict[int, tuple[str, ...]] = {}
        self._writes: dict[int, _PendingWrite] = {}
        self._ids = itertools.count(1)
        # Dirty at start: the first report tells the KVS this (possibly restarted) cache holds nothing yet.
        self._dirty = True
        self._last_report: float | None = None
        self._hits = 0
        self._negative_hits = 0
        self._misses = 0
        self._evictions = 0
        self._pushes_applied = 0
        self._pushes_ignored = 0

    # -- public surface ----------------------------------------------------------------------------------------

    def handle(self, event: CacheEvent, now: float) -> list[CacheInstruction]:
        """Applies one event at monotonic time ``now`` and returns what the server must do, in order."""
        out: list[CacheInstruction] = []
        if isinstance(event, CacheGetEvent):
            self._on_get(event, now, out)
        elif isinstance(event, CachePutEvent):
            self._on_put(event, now, out)
        elif isinstance(event, CachePushEvent):
            self._on_push(event, now)
        elif isinstance(event, CacheFetchDoneEvent):
            self._on_fetch_done(event, now, out)
        elif isinstance(event, CacheWriteDoneEvent):
            self._on_write_done(event, out)
        elif isinstance(event, CacheTickEvent):
            self._purge_negative(now)
        else:
            assert_never(event)
        self._maybe_report(now, out)
        if self.config.validate:
            self.validate()
        return out

    def get_cached(self, key: str) -> StoredValue | None:
        """The cached value of ``key`` without touching its recency (for tests and debugging)."""
        return self._entries.get(key)

    def cached_keys(self) -> tuple[str, ...]:
        """The cached keys, least recently used first."""
        return tuple(self._entries)

    def statistics(self) -> CacheStatistics:
        """A snapshot of the counters and sizes, for status reports."""
        return CacheStatistics(
            hits=self._hits,
            negative_hits=self._negative_hits,
            misses=self._misses,
            evictions=self._evictions,
            pushes_applied=self._pushes_applied,
            pushes_ignored=self._pushes_ignored,
            keys=len(self._entries),
            bytes_held=self._bytes,
            negative_keys=len(self._negative),
            pending_gets=len(self._gets),
            pending_fetches=len(self._fetching),
            pending_writes=len(self._writes),
        )

    def validate(self) -> None:
        """Checks the invariants that tie the structures together.

        Raises:
            AssertionError: An invariant does not hold (a bug in this class).
        """

        def check(condition: bool, message: str) -> None:
            if not condition:
                raise AssertionError(message)

        config = self.config
        check(sum(len(v.payload) for v in self._entries.values()) == self._bytes, "cached sizes do not add up")
        check(len(self._entries) <= config.max_keys, "more keys cached than max_keys")
        check(self._bytes <= config.max_bytes, "more bytes cached than max_bytes")
        check(len(self._negative) <= config.max_negative_keys, "too many negative entries")
        check(len(self._gets) <= config.max_pending_gets, "too many pending gets")
        check(len(self._writes) <= config.max_pending_writes, "too many pending writes")
        for key in self._entries:
            check(not is_metadata_key(key), f"metadata key {key!r} is cached")
            check(key not in self._negative, f"{key!r} is both cached and negative")
            check(key not in self._fetching, f"{key!r} is both cached and being fetched")
        expiries = list(self._negative.values())
        check(expiries == sorted(expiries), "negative entries are out of expiry order")
        fetched_keys: set[str] = set()
        for fetch_id, keys in self._fetches.items():
            check(bool(keys), f"fetch {fetch_id} has no outstanding keys")
            for key in keys:
                check(key not in fetched_keys, f"{key!r} is in two fetches")
                fetched_keys.add(key)
                check(
                    key in self._fetching and self._fetching[key].fetch_id == fetch_id,
                    f"{key!r} of fetch {fetch_id} is not filed as fetching by it",
                )
        check(fetched_keys == set(self._fetching), "keys being fetched do not match the fetches")
        for key, fetch in self._fetching.items():
            for get_id in fetch.waiters:
                check(get_id in self._gets, f"fetch of {key!r} waits for a finished get {get_id}")
                check(key in self._gets[get_id].waiting, f"get {get_id} is not waiting for {key!r}")
        for get_id, pending in self._gets.items():
            check(bool(pending.waiting), f"get {get_id} waits for nothing but was not answered")
            check(pending.waiting.isdisjoint(pending.results), f"get {get_id} has a key both resolved and waiting")
            check(pending.waiting | set(pending.results) == set(pending.keys), f"get {get_id} lost a key")
            for key in pending.waiting:
                check(get_id in self._fetching[key].waiters, f"get {get_id} waits for {key!r} with no fetch")

    # -- reads -------------------------------------------------------------------------------------------------

    def _on_get(self, event: CacheGetEvent, now: float, out: list[CacheInstruction]) -> None:
        keys = tuple(dict.fromkeys(event.keys))
        results: dict[str, CacheKeyResult] = {}
        missing: list[str] = []
        for key in keys:
            cached = None if is_metadata_key(key) else self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                results[key] = CacheKeyResult(key, AnnaError.NO_ERROR, cached, cached=True)
            elif self._is_negative(key, now):
                self._negative_hits += 1
                results[key] = CacheKeyResult(key, AnnaError.KEY_DNE, cached=True)
            else:
                self._misses += 1
                missing.append(key)
        if not missing:
            out.append(CacheGetReplyInstruction(event.request_id, tuple(results[key] for key in keys)))
            return
        if len(self._gets) >= self.config.max_pending_gets:
            logger.warning("%d gets are waiting for the KVS; failing get %s", len(self._gets), event.request_id)
            for key in missing:
                results[key] = CacheKeyResult(key, AnnaError.TIMEOUT)
            out.append(CacheGetReplyInstruction(event.request_id, tuple(results[key] for key in keys)))
            return
        get_id = next(self._ids)
        self._gets[get_id] = _PendingGet(event.request_id, keys, results, set(missing))
        new = tuple(key for key in missing if key not in self._fetching)
        if new:
            fetch_id = next(self._ids)
            self._fetches[fetch_id] = new
            for key in new:
                self._fetching[key] = _Fetch(fetch_id)
            out.append(CacheFetchInstruction(fetch_id, new))
        for key in missing:
            self._fetching[key].waiters.add(get_id)

    def _on_fetch_done(self, event: CacheFetchDoneEvent, now: float, out: list[CacheInstruction]) -> None:
        keys = self._fetches.pop(event.fetch_id, None)
        if keys is None:
            logger.warning("ignoring the answer to unknown fetch %d", event.fetch_id)
            return
        answers = {result.key: result for result in event.results}
        completed: list[int] = []
        for key in keys:
            fetch = self._fetching.pop(key)
            answer = answers.get(key, CacheKeyResult(key, AnnaError.TIMEOUT))
            result = self._resolve(key, answer, fetch.overlay, now)
            for get_id in sorted(fetch.waiters):
                pending = self._gets[get_id]
                pending.results[key] = result
                pending.waiting.discard(key)
                if not pending.waiting:
                    completed.append(get_id)
        for get_id in completed:
            pending = self._gets.pop(get_id)
            out.append(CacheGetReplyInstruction(pending.request_id, tuple(pending.results[k] for k in pending.keys)))

    def _resolve(self, key: str, answer: CacheKeyResult, overlay: StorableLattice | None, now: float) -> CacheKeyResult:
        """Turns the KVS's answer for a fetched key, plus changes seen meanwhile, into the reply, caching it."""
        lattice: StorableLattice | None = None
        if answer.error == AnnaError.NO_ERROR and answer.value is not None:
            try:
                lattice = decode_lattice(answer.value.lattice_type, answer.value.payload, f"fetched value of {key!r}")
            except DecodeError:
                logger.warning("the KVS returned a corrupt value for %r", key, exc_info=True)
                return CacheKeyResult(key, AnnaError.LATTICE)
            if overlay is not None and type(overlay) is type(lattice):
                lattice = lattice.merge(overlay)  # type: ignore[arg-type]
        elif answer.error == AnnaError.KEY_DNE:
            # A write or push seen while fetching is newer than "missing".
            lattice = overlay
        else:
            return CacheKeyResult(key, answer.error)
        if lattice is None or reads_as_missing(lattice):
            self._remember_missing(key, now)
            return CacheKeyResult(key, AnnaError.KEY_DNE)
        value = answer.value if overlay is None and answer.value is not None else StoredValue(*encode_lattice(lattice))
        if not is_metadata_key(key):
            self._insert(key, value)
        return CacheKeyResult(key, AnnaError.NO_ERROR, value)

    # -- writes ------------------------------------------------------------------------------------------------

    def _on_put(self, event: CachePutEvent, now: float, out: list[CacheInstruction]) -> None:
        key = event.key

        def reject(error: AnnaError, detail: str) -> None:
            out.append(CachePutReplyInstruction(event.request_id, key, error, detail))

        try:
            incoming = decode_lattice(event.lattice_type, event.payload, f"written value of {key!r}")
        except DecodeError as error:
            reject(AnnaError.LATTICE, str(error))
            return
        if len(self._writes) >= self.config.max_pending_writes:
            reject(AnnaError.TIMEOUT, "too many writes are waiting for the KVS")
            return
        if not is_metadata_key(key):
            cached = self._entries.get(key)
            fetch = self._fetching.get(key)
            if cached is not None:
                if cached.lattice_type != event.lattice_type:
                    reject(AnnaError.LATTICE, f"{key!r} holds a {cached.lattice_type.name} lattice")
                    return
                self._entries.move_to_end(key)
                self._merge_entry(key, cached, incoming, now, negative_if_missing=False)
            elif fetch is not None:
                if fetch.overlay is not None and type(fetch.overlay) is not type(incoming):
                    reject(AnnaError.LATTICE, f"{key!r} was just written as another lattice type")
                    return
                merged = incoming if fetch.overlay is None else fetch.overlay.merge(incoming)  # type: ignore[arg-type]
                fetch.overlay = merged
            self._negative.pop(key, None)
        write_id = next(self._ids)
        self._writes[write_id] = _PendingWrite(event.request_id, key)
        out.append(CacheWriteInstruction(write_id, key, event.lattice_type, event.payload))

    def _on_write_done(self, event: CacheWriteDoneEvent, out: list[CacheInstruction]) -> None:
        pending = self._writes.pop(event.write_id, None)
        if pending is None:
            logger.warning("ignoring the acknowledgement of unknown write %d", event.write_id)
            return
        if event.error == AnnaError.LATTICE:
            # The local merge assumed the cached type was the KVS's; it was not, so the copy cannot be trusted.
            self._drop(pending.key)
            fetch = self._fetching.get(pending.key)
            if fetch is not None:
                fetch.overlay = None
        out.append(CachePutReplyInstruction(pending.request_id, pending.key, event.error, event.detail))

    # -- pushes ------------------------------------------------------------------------------------------------

    def _on_push(self, event: CachePushEvent, now: float) -> None:
        key = event.key
        if is_metadata_key(key):
            return
        cached = self._entries.get(key)
        fetch = self._fetching.get(key)
        if cached is None and fetch is None:
            # Not held, so nothing to update; but the key exists (or was just deleted) in the KVS now.
            self._negative.pop(key, None)
            self._pushes_ignored += 1
            return
        try:
            incoming = decode_lattice(event.lattice_type, event.payload, f"pushed value of {key!r}")
        except DecodeError:
            logger.warning("ignoring a corrupt push for %r", key, exc_info=True)
            return
        self._pushes_applied += 1
        if cached is not None:
            if cached.lattice_type != event.lattice_type:
                # The KVS is authoritative on the type: its value replaces ours.
                self._store(key, incoming, now, negative_if_missing=True)
            else:
                self._merge_entry(key, cached, incoming, now, negative_if_missing=True)
        elif fetch is not None:
            if fetch.overlay is None or type(fetch.overlay) is not type(incoming):
                fetch.overlay = incoming
            else:
                fetch.overlay = fetch.overlay.merge(incoming)  # type: ignore[arg-type]

    # -- entry bookkeeping -------------------------------------------------------------------------------------

    def _merge_entry(
        self, key: str, cached: StoredValue, incoming: StorableLattice, now: float, *, negative_if_missing: bool
    ) -> None:
        current = decode_lattice(cached.lattice_type, cached.payload, f"cached value of {key!r}")
        merged = current.merge(incoming)  # type: ignore[arg-type]
        if merged != current:
            self._store(key, merged, now, negative_if_missing=negative_if_missing)

    def _store(self, key: str, lattice: StorableLattice, now: float, *, negative_if_missing: bool) -> None:
        """Caches ``lattice`` unless it reads as missing (a deletion), then optionally remembering it as missing."""
        if reads_as_missing(lattice):
            self._drop(key)
            if negative_if_missing:
                self._remember_missing(key, now)
            return
        self._insert(key, StoredValue(*encode_lattice(lattice)))

    def _insert(self, key: str, value: StoredValue) -> None:
        """Caches ``value`` (in place if ``key`` is cached, keeping its recency), then evicts to fit the bounds."""
        old = self._entries.get(key)
        if old is None:
            self._dirty = True
            self._bytes += len(value.payload)
        else:
            self._bytes += len(value.payload) - len(old.payload)
        self._entries[key] = value
        self._negative.pop(key, None)
        config = self.config
        lru_order = ((k, len(v.payload)) for k, v in self._entries.items())
        for victim in self.policy.victims(
            lru_order, len(self._entries), self._bytes, config.max_keys, config.max_bytes
        ):
            self._drop(victim)
            self._evictions += 1

    def _drop(self, key: str) -> None:
        value = self._entries.pop(key, None)
        if value is not None:
            self._bytes -= len(value.payload)
            self._dirty = True

    def _remember_missing(self, key: str, now: float) -> None:
        if is_metadata_key(key):
            return
        self._drop(key)
        self._negative.pop(key, None)
        self._negative[key] = now + self.config.negative_ttl
        while len(self._negative) > self.config.max_negative_keys:
            self._negative.popitem(last=False)

    def _is_negative(self, key: str, now: float) -> bool:
        expiry = self._negative.get(key)
        if expiry is None:
            return False
        if expiry > now:
            return True
        del self._negative[key]
        return False

    def _purge_negative(self, now: float) -> None:
        while self._negative:
            key, expiry = next(iter(self._negative.items()))
            if expiry > now:
                break
            del self._negative[key]

    # -- key-set reports ---------------------------------------------------------------------------------------

    def _maybe_report(self, now: float, out: list[CacheInstruction]) -> None:
        last = self._last_report
        if last is not None:
            since = now - last
            due = since >= self.config.refresh_interval or (self._dirty and since >= self.config.report_interval)
            if not due:
                return
        out.append(CacheReportInstruction(self.report_key, tuple(sorted(self._entries))))
        self._last_report = now
        self._dirty = False
