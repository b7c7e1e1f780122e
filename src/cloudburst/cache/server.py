"""The node cache's network shell: ZeroMQ sockets and a KVS client around :class:`~cloudburst.cache.state.CacheState`.

Executors speak to the cache exactly as they speak to a KVS storage thread (``KeyRequest`` in, ``KeyResponse``
pushed to the request's ``response_address``), so one client implementation serves both. The KVS pushes every
change of a key this cache reported holding to the update port (7150, where the KVS expects it). All decisions
live in the state; this loop moves bytes and runs the KVS round trips the state asks for.

Causal reads (SINGLE and MULTI) arrive on the causal port (7180) and reads and releases of the versions kept for a
session on the session port (7250); the decisions are :mod:`cloudburst.cache.causal`'s, see docs/consistency.md.

This first version performs KVS fetches and writes synchronously inside the loop: simple and correct, at the cost
of serializing the node's misses. The state already shares one fetch among concurrent readers of a key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from prometheus_client.core import Metric

from cloudburst.cache.causal import (
    CausalCut,
    KeptVersion,
    SessionVersions,
    SessionVersionsConfig,
    satisfies,
    superseded_versions,
)
from cloudburst.cache.state import (
    CacheConfig,
    CacheEvent,
    CacheFetchDoneEvent,
    CacheFetchInstruction,
    CacheGetEvent,
    CacheGetReplyInstruction,
    CacheInstruction,
    CacheKeyResult,
    CachePushEvent,
    CachePutEvent,
    CachePutReplyInstruction,
    CacheReportInstruction,
    CacheState,
    CacheTickEvent,
    CacheWriteDoneEvent,
    CacheWriteInstruction,
)
from cloudburst.clock import Clock, SystemClock, TimestampGenerator, writer_id_for
from cloudburst.cluster.serve import serve_until_signalled
from cloudburst.config import RuntimePorts
from cloudburst.errors import CloudburstError, DecodeError, LatticeTypeMismatch, TransportError
from cloudburst.kvs.client import KvsClient
from cloudburst.lattices import LwwLattice, MultiKeyCausalLattice, VectorClock
from cloudburst.protocol import codec
from cloudburst.protocol.causal_messages import (
    CausalKeyResult,
    CausalReadRequest,
    CausalReadResponse,
    SessionVersionResponse,
)
from cloudburst.protocol.messages import (
    AnnaError,
    ConsistencyType,
    KeyRequest,
    KeyResponse,
    KeyTuple,
    LatticeType,
    RequestType,
)
from cloudburst.protocol.runtime_messages import KeyVersion
from cloudburst.protocol.telemetry_messages import CacheReport
from cloudburst.retry import RetryPolicy
from cloudburst.telemetry.metrics import CallbackCollector, MetricsEndpoint, counter, gauge
from cloudburst.telemetry.reporter import TelemetryReporter
from cloudburst.transport.endpoints import ReplyPolicy
from cloudburst.transport.guard import RejectLog, ReplyGate
from cloudburst.transport.security import SecurityConfig, curve_server, new_context
from cloudburst.transport.zmq import PushSocketCache, bind, drain, pull_socket

logger = logging.getLogger(__name__)

#: Where executors send requests (the original's cache request port).
DEFAULT_REQUEST_PORT = 7160
#: Where the KVS pushes updates of cached keys; the KVS assumes this port.
DEFAULT_UPDATE_PORT = 7150
#: Where the cache publishes the keys whose value may have changed, so executors drop their local copies.
DEFAULT_INVALIDATION_PORT = 7170
#: Where executors send causal reads (``CausalRequest``).
DEFAULT_CAUSAL_PORT = 7180
#: Where any executor reads or releases the versions kept for a session (the original's ``KeyVersionRequest`` port).
DEFAULT_SESSION_PORT = 7250
#: Messages taken from one socket per turn, so neither executors nor pushes can starve the other.
MAX_BATCH = 256
#: Largest message accepted, so garbage cannot exhaust memory.
MAX_MESSAGE_BYTES = 64 * 2**20
#: Seconds between ticks (negative-cache purge, key-set reports).
TICK_INTERVAL = 0.05
#: Seconds between two reports of the cache's figures to the management service.
TELEMETRY_PERIOD = 1.0
#: Seconds one KVS round trip may block the loop before the affected keys are answered ``TIMEOUT``.
DEFAULT_KVS_TIMEOUT = 2.0
#: Seconds to wait before re-reading a key the KVS does not yet hold recent enough for a causal read.
CAUSAL_REREAD_PAUSE = 0.001


@dataclass(slots=True)
class _PendingReply:
    """One executor request waiting for the state's answers; a PUT is split into one state request per tuple."""

    request_type: RequestType
    response_address: str
    response_id: str
    keys: tuple[str, ...] = ()
    tuples: list[KeyTuple | None] = field(default_factory=list)
    remaining: int = 0
    #: The requester reads big payloads from frames of their own (``KeyRequest.payload_frames``).
    payload_frames: bool = False


@dataclass(slots=True)
class _CausalReadScratch:
    """What one causal read has learned so far.

    Attributes:
        deadline: When the read gives up on the KVS.
        known: The freshest value of each key seen (``None``: missing).
        errors: Keys that cannot be answered, and why.
        complete: Joined clocks of values read from the KVS itself, which hold every version up to them.
    """

    deadline: float
    known: dict[str, MultiKeyCausalLattice | None] = field(default_factory=dict)
    errors: dict[str, AnnaError] = field(default_factory=dict)
    complete: dict[str, VectorClock] = field(default_factory=dict)


class CacheServer:
    """The node cache: one request socket, one update socket, one loop.

    Args:
        node_ip: The node's ip: the cache binds here, and the KVS pushes to it and names its key-set report by it.
        kvs_routing: The KVS routing endpoint, e.g. ``tcp://10.0.0.1:6450``.
        request_port: The executors' request port; 0 picks a free port.
        update_port: The port the KVS pushes updates to; 0 picks a free port (only useful in tests, as the KVS
            pushes to a fixed port).
        config: Cache bounds and report intervals.
        clock: Time source for the state and the report timestamps.
        kvs_timeout: Deadline of each KVS round trip, which blocks the loop.
        kvs_retry: Retry policy of the KVS client.
        security: CURVE keys (a role's); ``None``: plaintext.
        management: The management service's report endpoint, which gets the cache's figures every
            :data:`TELEMETRY_PERIOD`; ``None``: no reports.
        metrics_port: The Prometheus endpoint's port; 0 picks a free one.
    """

    def __init__(
        self,
        node_ip: str,
        kvs_routing: str,
        *,
        request_port: int = DEFAULT_REQUEST_PORT,
        update_port: int = DEFAULT_UPDATE_PORT,
        invalidation_port: int = DEFAULT_INVALIDATION_PORT,
        causal_port: int = DEFAULT_CAUSAL_PORT,
        session_port: int = DEFAULT_SESSION_PORT,
        config: CacheConfig | None = None,
        sessions: SessionVersionsConfig | None = None,
        clock: Clock | None = None,
        kvs_timeout: float = DEFAULT_KVS_TIMEOUT,
        kvs_retry: RetryPolicy | None = None,
        security: SecurityConfig | None = None,
        management: str | None = None,
        metrics_port: int = RuntimePorts().metrics_cache,
    ) -> None:
        self.node_ip = node_ip
        self.metrics = MetricsEndpoint(node_ip, metrics_port, f"cache {node_ip}")
        self.metrics.registry.register(CallbackCollector(self._metric_families))
        self._clock = clock or SystemClock()
        self.state = CacheState(node_ip, config or CacheConfig())
        self._timestamps = TimestampGenerator(writer_id_for(f"cache@{node_ip}"), self._clock)
        self._context = new_context(security)
        self._replies = PushSocketCache(self._context, security=security)
        self._reply_gate = ReplyGate(ReplyPolicy.for_bind_host(node_ip))
        self._rejected = RejectLog()
        self._stopping = False
        self._closed = False
        self._requests = pull_socket(self._context, MAX_MESSAGE_BYTES, security)
        # The KVS pushes updates to the address the cache reports, as it pushes replies.
        self._updates = pull_socket(self._context, MAX_MESSAGE_BYTES, security, pushed_by_address=True)
        self._causal = pull_socket(self._context, MAX_MESSAGE_BYTES, security)
        self._session_requests = pull_socket(self._context, MAX_MESSAGE_BYTES, security)
        self.sessions = SessionVersions(sessions)
        self.cut = CausalCut()
        self._invalidations = self._context.socket(zmq.PUB)
        self._invalidations.setsockopt(zmq.LINGER, 0)
        curve_server(self._invalidations, security)
        self._invalidation_sequence = 0
        self._reported: frozenset[str] = frozenset()
        try:
            self.request_address = f"tcp://{node_ip}:{bind(self._requests, node_ip, request_port)}"
            self.update_address = f"tcp://{node_ip}:{bind(self._updates, node_ip, update_port)}"
            port = bind(self._invalidations, node_ip, invalidation_port)
            self.invalidation_address = f"tcp://{node_ip}:{port}"
            self.causal_address = f"tcp://{node_ip}:{bind(self._causal, node_ip, causal_port)}"
            self.session_address = f"tcp://{node_ip}:{bind(self._session_requests, node_ip, session_port)}"
        except TransportError:
            for socket in (self._requests, self._updates, self._invalidations, self._causal, self._session_requests):
                socket.close()
            self._replies.close()
            self._context.term()
            raise
        self._kvs = KvsClient(kvs_routing, host=node_ip, timeout=kvs_timeout, retry=kvs_retry, security=security)
        self._kvs_timeout = kvs_timeout
        self._pending: dict[str, tuple[_PendingReply, int]] = {}
        #: Answers of the state to reads the loop made on its own behalf (causal reads), by internal id.
        self._captured: dict[str, tuple[CacheKeyResult, ...]] = {}
        self._next_id = 0
        self._last_tick = self._clock.now()
        self._telemetry = TelemetryReporter(self._replies, management, f"cache:{node_ip}") if management else None
        self._last_report = self._last_tick
        self.metrics.start()

    @property
    def rejected_messages(self) -> int:
        """How many malformed or refused messages the cache has dropped."""
        return self._rejected.total

    def ready_info(self) -> str:
        """The bound addresses, for the ready file a supervisor waits for."""
        return json.dumps(
            {
                "requests": self.request_address,
                "updates": self.update_address,
                "invalidations": self.invalidation_address,
                "causal": self.causal_address,
                "sessions": self.session_address,
            }
        )

    def report(self) -> CacheReport:
        """The cache's figures as the management service gets them."""
        stats = self.state.statistics()
        return CacheReport(self.node_ip, stats.hits, stats.misses, stats.negative_hits, stats.keys, stats.bytes_held)

    def _metric_families(self) -> list[Metric]:
        stats = self.state.statistics()
        return [
            counter("cloudburst_cache_hits", "GET keys answered from a cached value.", stats.hits),
            counter("cloudburst_cache_misses", "GET keys that needed the KVS.", stats.misses),
            counter(
                "cloudburst_cache_negative_hits", "GET keys answered as missing without the KVS.", stats.negative_hits
            ),
            counter("cloudburst_cache_evictions", "Keys evicted to fit the cache's bounds.", stats.evictions),
            gauge("cloudburst_cache_keys", "Keys cached now.", stats.keys),
            gauge("cloudburst_cache_bytes", "Payload bytes cached now.", stats.bytes_held),
            gauge("cloudburst_cache_pending_gets", "GETs waiting for the KVS.", stats.pending_gets),
        ]

    def stop(self) -> None:
        """Asks :meth:`serve_forever` to return; safe from a signal handler or another thread."""
        self._stopping = True

    def serve_forever(self) -> None:
        """Serves requests and pushes until :meth:`stop`, ticking about every :data:`TICK_INTERVAL`."""
        poller = zmq.Poller()
        poller.register(self._requests, zmq.POLLIN)
        poller.register(self._updates, zmq.POLLIN)
        poller.register(self._causal, zmq.POLLIN)
        poller.register(self._session_requests, zmq.POLLIN)
        logger.info("cache serving: requests %s, updates %s", self.request_address, self.update_address)
        # Tick at once: the first key-set report tells a (possibly restarted) KVS this cache holds nothing yet.
        self._feed(CacheTickEvent())
        while not self._stopping:
            ready = dict(poller.poll(int(TICK_INTERVAL * 1000)))
            # Pushes first: a read answered in this turn should see every change the KVS already announced.
            if self._updates in ready:
                self._serve_updates()
            if self._requests in ready:
                self._serve_requests()
            if self._session_requests in ready:
                self._serve_session_requests()
            if self._causal in ready:
                self._serve_causal_reads()
            now = self._clock.now()
            if now - self._last_tick >= TICK_INTERVAL:
                self._last_tick = now
                self._feed(CacheTickEvent())
                self.sessions.expire(now)
                self._publish(())  # a heartbeat: subscribers learn the sequence and that nothing was lost
                if self._telemetry is not None and now - self._last_report >= TELEMETRY_PERIOD:
                    self._last_report = now
                    self._telemetry.send((), self.report())

    def close(self) -> None:
        """Closes sockets and the KVS client; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.metrics.close()
        self._kvs.close()
        self._replies.close()
        self._requests.close()
        self._updates.close()
        self._invalidations.close()
        self._causal.close()
        self._session_requests.close()
        self._context.term()

    # -- input -------------------------------------------------------------------------------------------------

    def _serve_updates(self) -> None:
        for data in drain(self._updates, MAX_BATCH):
            try:
                request = codec.decode_key_request(data)
            except DecodeError as error:
                self._rejected("update port", str(error))
                continue
            if request.type != RequestType.PUT:
                self._rejected("update port", f"a push must be a PUT, not {request.type.name}")
                continue
            for item in request.tuples:
                self._feed(CachePushEvent(item.key, item.lattice_type, item.payload))
            self._publish(item.key for item in request.tuples)

    def _serve_requests(self) -> None:
        for data in drain(self._requests, MAX_BATCH):
            try:
                request = codec.decode_key_request(data)
            except DecodeError as error:
                self._rejected("request port", str(error))
                continue
            if request.type == RequestType.RT_UNSPECIFIED:
                self._rejected("request port", "KeyRequest.type is unset (neither GET nor PUT)")
                continue
            if not request.response_address:
                # Without an address nobody waits for the answer, but a PUT is still worth writing through.
                if request.type == RequestType.GET:
                    continue
            else:
                try:
                    self._reply_gate.check(request.response_address)
                except TransportError as error:
                    self._rejected("request port", str(error))
                    continue
            self._accept(request)

    def _accept(self, request: KeyRequest) -> None:
        """Files ``request`` as pending and feeds it to the state: one GET event, or one PUT event per tuple."""
        keys = tuple(item.key for item in request.tuples)
        pending = _PendingReply(
            request.type, request.response_address, request.request_id, keys, payload_frames=request.payload_frames
        )
        pending.tuples = [None] * len(request.tuples)
        if not request.tuples:
            self._send(pending)
            return
        if request.type == RequestType.GET:
            pending.remaining = 1
            internal = self._new_id()
            self._pending[internal] = (pending, -1)
            self._feed(CacheGetEvent(internal, keys))
            return
        pending.remaining = len(request.tuples)
        for index, item in enumerate(request.tuples):
            internal = self._new_id()
            self._pending[internal] = (pending, index)
            self._feed(CachePutEvent(internal, item.key, item.lattice_type, item.payload))
        self._publish(item.key for item in request.tuples)

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    # -- causal sessions ---------------------------------------------------------------------------------------

    def _serve_causal_reads(self) -> None:
        for data in drain(self._causal, MAX_BATCH):
            try:
                request = codec.decode_causal_read_request(data)
                # Checked before the read, which may cost KVS round trips, rather than only when replying.
                self._reply_gate.check(request.response_address)
            except (DecodeError, TransportError) as error:
                self._rejected("causal port", str(error))
                continue
            if request.consistency == ConsistencyType.NORMAL or not request.session_id:
                self._rejected("causal port", "a causal read needs a session id and consistency SINGLE or MULTI")
                continue
            response = self._causal_read(request)
            self._reply(request.response_address, codec.encode_causal_read_response(response))

    def _causal_read(self, request: CausalReadRequest) -> CausalReadResponse:
        """Answers a causal read per :mod:`cloudburst.cache.causal`."""
        multi = request.consistency == ConsistencyType.MULTI
        now = self._clock.now()
        keys = list(dict.fromkeys(request.keys + (request.future_read_set if multi else ())))
        bounds: dict[str, VectorClock] = {}
        for version in request.lower_bounds:
            bounds[version.key] = bounds.get(version.key, VectorClock()).merge(version.vector_clock)
        kept_now: list[KeyVersion] = []
        if multi:
            kept_now.extend(self._keep_writes(request, now))
        kept = self.sessions.get(request.session_id, keys, now) if multi else {}
        superseded = superseded_versions(kept, bounds)
        for key in superseded:
            del kept[key]
        scratch = _CausalReadScratch(now + self._kvs_timeout)
        self._read_causal_copies([key for key in keys if key not in kept], scratch)
        errors = scratch.errors
        chosen: dict[str, MultiKeyCausalLattice | None] = {}
        if multi:
            # The session's bounds first, then the freshest known version of every key read, each with its past.
            needs = list(bounds.items())
            needs += [(key, value.vector_clock) for key, value in scratch.known.items() if value is not None]
            self._cover(needs, scratch)
            for key in keys:
                held = kept.get(key)
                if held is None:
                    chosen[key] = self.cut.get(key)
                else:
                    chosen[key] = self._causal_value(key, held.payload) if held.payload else None
        else:
            for key in keys:
                chosen[key] = self._at_least(key, bounds.get(key, VectorClock()), scratch)
        results: list[CausalKeyResult] = []
        for key in keys:
            value = chosen.get(key)
            payload = b"" if value is None else codec.encode_lattice(value)[1]
            if multi and key not in errors:
                # A key read as missing is kept as missing (an empty payload), so it stays missing for the request
                # until the request writes it.
                clock = VectorClock() if value is None else value.vector_clock
                fresh = KeptVersion(payload, clock)
                held = self.sessions.keep(request.session_id, key, fresh, now, replace=key in superseded)
                payload = held.payload
                kept_now.append(KeyVersion(key, held.vector_clock))
            if key not in request.keys:
                continue
            if key in errors:
                results.append(CausalKeyResult(key, error=errors[key]))
            elif not payload:
                results.append(CausalKeyResult(key, error=AnnaError.KEY_DNE))
            else:
                results.append(CausalKeyResult(key, payload))
        return CausalReadResponse(request.request_id, tuple(results), self.session_address, tuple(kept_now))

    def _keep_writes(self, request: CausalReadRequest, now: float) -> list[KeyVersion]:
        """Keeps the versions the session just wrote for it (replacing what it kept): its later reads get them."""
        kept: list[KeyVersion] = []
        for written in request.keep:
            value = self._causal_value(written.key, written.payload)
            if value is None:
                self._rejected("causal port", f"a write to keep for {written.key!r} is not a causal value")
                continue
            version = KeptVersion(written.payload, value.vector_clock)
            self.sessions.keep(request.session_id, written.key, version, now, replace=True)
            kept.append(KeyVersion(written.key, value.vector_clock))
        return kept

    def _read_causal_copies(self, keys: list[str], scratch: _CausalReadScratch) -> None:
        """The cached copies of ``keys`` (fetched through the cache on a miss); non-causal values become errors."""
        if not keys:
            return
        internal = f"causal:{self._new_id()}"
        self._captured[internal] = ()
        self._feed(CacheGetEvent(internal, tuple(keys)))
        for result in self._captured.pop(internal):
            if result.value is not None:
                value = self._causal_value(result.key, result.value.payload, result.value.lattice_type)
                if value is None:
                    scratch.errors[result.key] = AnnaError.LATTICE
                else:
                    scratch.known[result.key] = value
            elif result.error == AnnaError.KEY_DNE:
                scratch.known[result.key] = None
            else:
                scratch.errors[result.key] = result.error

    def _cover(self, needs: list[tuple[str, VectorClock]], scratch: _CausalReadScratch) -> None:
        """Makes the cut cover every ``(key, clock)`` in ``needs``, with everything the admitted versions depend on.

        New versions are gathered into one chain, closed under dependencies together with the cut, and admitted
        at once: a timeline's newest version may depend on a post whose version depends on an older version of
        that timeline, so versions of one key can be needed on both sides of another's.
        """
        chain: dict[str, MultiKeyCausalLattice] = {}

        def covered(key: str, clock: VectorClock) -> bool:
            if self.cut.covers(key, clock):
                return True
            value = chain.get(key)
            return value is not None and satisfies(value, clock, complete=key in scratch.complete)

        errors = scratch.errors
        queue = [need for need in needs if not covered(*need)]
        while queue:
            key, clock = queue.pop()
            if key in errors or covered(key, clock):
                continue
            if self._clock.now() >= scratch.deadline:
                errors[key] = AnnaError.TIMEOUT
                continue
            candidate = self._at_least(key, clock, scratch, base=chain.get(key, self.cut.get(key)))
            if candidate is None:
                continue  # an error is recorded, or the key does not exist and nothing is needed of it
            chain[key] = candidate
            queue.extend(need for need in candidate.dependencies.items() if not covered(*need))
        # A version whose dependencies could not all be covered stays out (and so does its key's answer).
        while failed := [k for k, v in chain.items() if any(d in errors for d in v.dependencies)]:
            for key in failed:
                errors.setdefault(key, AnnaError.TIMEOUT)
                del chain[key]
        for key, value in chain.items():
            self.cut.admit(key, value, scratch.complete.get(key))

    def _at_least(
        self, key: str, clock: VectorClock, scratch: _CausalReadScratch, base: MultiKeyCausalLattice | None = None
    ) -> MultiKeyCausalLattice | None:
        """The freshest known value of ``key`` if it includes ``clock``; else re-read from the KVS until it does.

        Returns ``None`` when the key does not exist and ``clock`` is empty, or on an error (recorded in ``scratch``).
        """
        value = scratch.known.get(key)
        if base is not None:
            value = base if value is None else base.merge(value)
        if not clock or (value is not None and satisfies(value, clock, complete=False)):
            return value
        while True:
            try:
                fresh = self._kvs.get(key)
            except CloudburstError as error:
                logger.warning("causal re-read of %r from the KVS failed: %s", key, error)
                scratch.errors[key] = AnnaError.TIMEOUT
                return None
            if fresh is not None and not isinstance(fresh, MultiKeyCausalLattice):
                scratch.errors[key] = AnnaError.LATTICE
                return None
            if fresh is not None:
                lattice_type, payload = codec.encode_lattice(fresh)
                # As if pushed: a cached copy merges it, so the next reader need not go to the KVS again.
                self._feed(CachePushEvent(key, lattice_type, payload))
                value = fresh if value is None else value.merge(fresh)
                scratch.known[key] = value
                scratch.complete[key] = fresh.vector_clock
                if satisfies(value, clock, complete=True):
                    return value
            if self._clock.now() >= scratch.deadline:
                scratch.errors[key] = AnnaError.TIMEOUT
                return None
            # The KVS has not caught up (a write in flight to it): give it a moment rather than spinning.
            time.sleep(CAUSAL_REREAD_PAUSE)

    def _causal_value(
        self, key: str, payload: bytes, lattice_type: LatticeType = LatticeType.MULTI_CAUSAL
    ) -> MultiKeyCausalLattice | None:
        """The cached value as a causal lattice, or ``None`` when the key holds another kind of value."""
        if lattice_type != LatticeType.MULTI_CAUSAL:
            return None
        try:
            value = codec.decode_lattice(lattice_type, payload, f"cached value of {key!r}")
        except DecodeError as error:
            logger.warning("%s", error)
            return None
        return value if isinstance(value, MultiKeyCausalLattice) else None

    def _serve_session_requests(self) -> None:
        now = self._clock.now()
        for data in drain(self._session_requests, MAX_BATCH):
            try:
                request = codec.decode_session_version_request(data)
            except DecodeError as error:
                self._rejected("session port", str(error))
                continue
            if not request.keys:
                self.sessions.release(request.session_id)
                continue
            kept = self.sessions.get(request.session_id, request.keys, now)
            results = tuple(
                CausalKeyResult(key, kept[key].payload)
                if key in kept
                else CausalKeyResult(key, error=AnnaError.KEY_DNE)
                for key in request.keys
            )
            response = SessionVersionResponse(request.session_id, request.request_id, results)
            self._reply(request.response_address, codec.encode_session_version_response(response))

    def _reply(self, address: str, *frames: bytes) -> None:
        try:
            self._replies.send_multipart(self._reply_gate.check(address), frames, reply=True)
        except TransportError as error:
            self._rejected("reply", str(error))

    # -- the state and its instructions ------------------------------------------------------------------------

    def _feed(self, event: CacheEvent) -> None:
        """Applies ``event`` and executes the instructions, feeding the KVS's outcomes back until none are left."""
        queue: deque[CacheEvent] = deque([event])
        while queue:
            instructions = self.state.handle(queue.popleft(), self._clock.now())
            for instruction in instructions:
                done = self._execute(instruction)
                if done is not None:
                    queue.append(done)

    def _execute(self, instruction: CacheInstruction) -> CacheEvent | None:
        if isinstance(instruction, CacheGetReplyInstruction):
            self._on_get_reply(instruction)
        elif isinstance(instruction, CachePutReplyInstruction):
            self._on_put_reply(instruction)
        elif isinstance(instruction, CacheFetchInstruction):
            return self._fetch(instruction)
        elif isinstance(instruction, CacheWriteInstruction):
            return self._write(instruction)
        else:
            self._report(instruction)
        return None

    def _fetch(self, instruction: CacheFetchInstruction) -> CacheFetchDoneEvent:
        try:
            values = self._kvs.get_many_stored(instruction.keys)
        except CloudburstError as error:
            logger.warning("fetch of %d keys from the KVS failed: %s", len(instruction.keys), error)
            failed = tuple(CacheKeyResult(key, AnnaError.TIMEOUT) for key in instruction.keys)
            return CacheFetchDoneEvent(instruction.fetch_id, failed)
        results = []
        for key in instruction.keys:
            stored = values.get(key)
            if stored is None:
                results.append(CacheKeyResult(key, AnnaError.KEY_DNE))
            else:
                results.append(CacheKeyResult(key, AnnaError.NO_ERROR, stored))
        return CacheFetchDoneEvent(instruction.fetch_id, tuple(results))

    def _write(self, instruction: CacheWriteInstruction) -> CacheWriteDoneEvent:
        try:
            # The state decoded it already; decoding again gives the client the lattice it writes.
            lattice = codec.decode_lattice(instruction.lattice_type, instruction.payload, "written value")
            self._kvs.put(instruction.key, lattice)
        except LatticeTypeMismatch as error:
            return CacheWriteDoneEvent(instruction.write_id, AnnaError.LATTICE, str(error))
        except DecodeError as error:
            return CacheWriteDoneEvent(instruction.write_id, AnnaError.LATTICE, str(error))
        except CloudburstError as error:
            logger.warning("write-through of %r failed: %s", instruction.key, error)
            return CacheWriteDoneEvent(instruction.write_id, AnnaError.TIMEOUT, str(error))
        return CacheWriteDoneEvent(instruction.write_id, AnnaError.NO_ERROR)

    def _publish(self, keys: Iterable[str]) -> None:
        """Tells the node's executors which keys may have changed: ``[sequence, key, key, ...]``.

        Executors keep local copies of what they read and drop these keys; a gap in the sequence (a slow
        subscriber's messages dropped) makes them drop everything, so a lost message never leaves a stale copy.
        """
        self._invalidation_sequence += 1
        frames = [self._invalidation_sequence.to_bytes(8, "big"), *(key.encode() for key in keys)]
        # When no subscriber keeps up the message is dropped; the sequence gap tells them.
        with contextlib.suppress(zmq.Again):
            self._invalidations.send_multipart(frames, zmq.NOBLOCK)

    def _report(self, instruction: CacheReportInstruction) -> None:
        # Keys this cache no longer holds stop receiving KVS pushes, so executors must not keep copies of them.
        current = frozenset(instruction.keys)
        dropped = self._reported - current
        self._reported = current
        if dropped:
            self._publish(dropped)
        lattice = LwwLattice(self._timestamps(), codec.encode_string_set(instruction.keys))
        try:
            self._kvs.put(instruction.report_key, lattice)
        except CloudburstError as error:
            # Not fatal: the periodic refresh repeats the report.
            logger.warning("key-set report to the KVS failed: %s", error)

    def _on_get_reply(self, instruction: CacheGetReplyInstruction) -> None:
        if instruction.request_id in self._captured:
            self._captured[instruction.request_id] = instruction.results
            return
        filed = self._pending.pop(instruction.request_id, None)
        if filed is None:
            return
        pending, _ = filed
        by_key = {result.key: _result_tuple(result) for result in instruction.results}
        # The state answers each distinct key once; the reply repeats it for every time it was asked.
        pending.tuples = [by_key.get(key, KeyTuple(key, error=AnnaError.TIMEOUT)) for key in pending.keys]
        self._send(pending)

    def _on_put_reply(self, instruction: CachePutReplyInstruction) -> None:
        filed = self._pending.pop(instruction.request_id, None)
        if filed is None:
            return
        pending, index = filed
        pending.tuples[index] = KeyTuple(instruction.key, error=instruction.error)
        pending.remaining -= 1
        if pending.remaining == 0:
            self._send(pending)

    def _send(self, pending: _PendingReply) -> None:
        if not pending.response_address:
            return
        tuples = tuple(item for item in pending.tuples if item is not None)
        response = KeyResponse(pending.request_type, tuples, pending.response_id)
        self._reply(
            pending.response_address, *codec.encode_key_response(response, payload_frames=pending.payload_frames)
        )


def _result_tuple(result: CacheKeyResult) -> KeyTuple:
    if result.value is None:
        return KeyTuple(result.key, error=result.error, cached=result.cached)
    return KeyTuple(result.key, result.value.lattice_type, result.error, result.value.payload, cached=result.cached)


def run_cache(
    node_ip: str,
    kvs_routing: str,
    ready_file: Path | None = None,
    security: SecurityConfig | None = None,
    management: str | None = None,
) -> int:
    """Runs a node cache in the foreground until SIGTERM or SIGINT.

    Args:
        node_ip: The node's ip, where the cache binds its request and update ports.
        kvs_routing: The KVS routing endpoint.
        ready_file: Written with :meth:`CacheServer.ready_info` once bound.
        security: CURVE keys (a role's); ``None``: plaintext.
        management: The management service's host, which gets the cache's figures.

    Returns:
        The process exit code.
    """
    ports = RuntimePorts()
    report_to = ports.management_endpoint(management) if management else None
    server = CacheServer(node_ip, kvs_routing, security=security, management=report_to)
    return serve_until_signalled(server, ready_file)
