"""The node cache's network shell: ZeroMQ sockets and a KVS client around :class:`~cloudburst.cache.state.CacheState`.

Executors speak to the cache exactly as they speak to a KVS storage thread (``KeyRequest`` in, ``KeyResponse``
pushed to the request's ``response_address``), so one client implementation serves both. The KVS pushes every
change of a key this cache reported holding to the update port (7150, where the KVS expects it). All decisions
live in the state; this loop moves bytes and runs the KVS round trips the state asks for.

This first version performs KVS fetches and writes synchronously inside the loop: simple and correct, at the cost
of serializing the node's misses. The state already shares one fetch among concurrent readers of a key.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

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
from cloudburst.errors import CloudburstError, DecodeError, LatticeTypeMismatch, TransportError
from cloudburst.kvs.client import KvsClient
from cloudburst.kvs.engine import StoredValue
from cloudburst.lattices import LwwLattice
from cloudburst.protocol import codec
from cloudburst.protocol.messages import AnnaError, KeyRequest, KeyResponse, KeyTuple, RequestType
from cloudburst.retry import RetryPolicy
from cloudburst.transport.endpoints import ReplyPolicy
from cloudburst.transport.guard import RejectLog, ReplyGate
from cloudburst.transport.zmq import PushSocketCache, bind, drain, pull_socket

logger = logging.getLogger(__name__)

#: Where executors send requests (the original's cache request port).
DEFAULT_REQUEST_PORT = 7160
#: Where the KVS pushes updates of cached keys; the KVS assumes this port.
DEFAULT_UPDATE_PORT = 7150
#: Where the cache publishes the keys whose value may have changed, so executors drop their local copies.
DEFAULT_INVALIDATION_PORT = 7170
#: Messages taken from one socket per turn, so neither executors nor pushes can starve the other.
MAX_BATCH = 256
#: Largest message accepted, so garbage cannot exhaust memory.
MAX_MESSAGE_BYTES = 64 * 2**20
#: Seconds between ticks (negative-cache purge, key-set reports).
TICK_INTERVAL = 0.05
#: Seconds one KVS round trip may block the loop before the affected keys are answered ``TIMEOUT``.
DEFAULT_KVS_TIMEOUT = 2.0


@dataclass(slots=True)
class _PendingReply:
    """One executor request waiting for the state's answers; a PUT is split into one state request per tuple."""

    request_type: RequestType
    response_address: str
    response_id: str
    keys: tuple[str, ...] = ()
    tuples: list[KeyTuple | None] = field(default_factory=list)
    remaining: int = 0


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
    """

    def __init__(
        self,
        node_ip: str,
        kvs_routing: str,
        *,
        request_port: int = DEFAULT_REQUEST_PORT,
        update_port: int = DEFAULT_UPDATE_PORT,
        invalidation_port: int = DEFAULT_INVALIDATION_PORT,
        config: CacheConfig | None = None,
        clock: Clock | None = None,
        kvs_timeout: float = DEFAULT_KVS_TIMEOUT,
        kvs_retry: RetryPolicy | None = None,
    ) -> None:
        self.node_ip = node_ip
        self._clock = clock or SystemClock()
        self.state = CacheState(node_ip, config or CacheConfig())
        self._timestamps = TimestampGenerator(writer_id_for(f"cache@{node_ip}"), self._clock)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._replies = PushSocketCache(self._context)
        self._reply_gate = ReplyGate(ReplyPolicy.for_bind_host(node_ip))
        self._rejected = RejectLog()
        self._stopping = False
        self._closed = False
        self._requests = pull_socket(self._context, MAX_MESSAGE_BYTES)
        self._updates = pull_socket(self._context, MAX_MESSAGE_BYTES)
        self._invalidations = self._context.socket(zmq.PUB)
        self._invalidations.setsockopt(zmq.LINGER, 0)
        self._invalidation_sequence = 0
        self._reported: frozenset[str] = frozenset()
        try:
            self.request_address = f"tcp://{node_ip}:{bind(self._requests, node_ip, request_port)}"
            self.update_address = f"tcp://{node_ip}:{bind(self._updates, node_ip, update_port)}"
            port = bind(self._invalidations, node_ip, invalidation_port)
            self.invalidation_address = f"tcp://{node_ip}:{port}"
        except TransportError:
            self._requests.close()
            self._updates.close()
            self._invalidations.close()
            self._replies.close()
            self._context.term()
            raise
        self._kvs = KvsClient(kvs_routing, host=node_ip, timeout=kvs_timeout, retry=kvs_retry)
        self._pending: dict[str, tuple[_PendingReply, int]] = {}
        self._next_id = 0
        self._last_tick = self._clock.now()

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
            }
        )

    def stop(self) -> None:
        """Asks :meth:`serve_forever` to return; safe from a signal handler or another thread."""
        self._stopping = True

    def serve_forever(self) -> None:
        """Serves requests and pushes until :meth:`stop`, ticking about every :data:`TICK_INTERVAL`."""
        poller = zmq.Poller()
        poller.register(self._requests, zmq.POLLIN)
        poller.register(self._updates, zmq.POLLIN)
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
            now = self._clock.now()
            if now - self._last_tick >= TICK_INTERVAL:
                self._last_tick = now
                self._feed(CacheTickEvent())
                self._publish(())  # a heartbeat: subscribers learn the sequence and that nothing was lost

    def close(self) -> None:
        """Closes sockets and the KVS client; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._kvs.close()
        self._replies.close()
        self._requests.close()
        self._updates.close()
        self._invalidations.close()
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
        pending = _PendingReply(request.type, request.response_address, request.request_id, keys)
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
            values = self._kvs.get_many(instruction.keys)
        except CloudburstError as error:
            logger.warning("fetch of %d keys from the KVS failed: %s", len(instruction.keys), error)
            failed = tuple(CacheKeyResult(key, AnnaError.TIMEOUT) for key in instruction.keys)
            return CacheFetchDoneEvent(instruction.fetch_id, failed)
        results = []
        for key in instruction.keys:
            lattice = values.get(key)
            if lattice is None:
                results.append(CacheKeyResult(key, AnnaError.KEY_DNE))
            else:
                results.append(CacheKeyResult(key, AnnaError.NO_ERROR, StoredValue(*codec.encode_lattice(lattice))))
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
        try:
            self._replies.send(self._reply_gate.check(pending.response_address), codec.encode_key_response(response))
        except TransportError as error:
            self._rejected("reply", str(error))


def _result_tuple(result: CacheKeyResult) -> KeyTuple:
    if result.value is None:
        return KeyTuple(result.key, error=result.error)
    return KeyTuple(result.key, result.value.lattice_type, result.error, result.value.payload)


def run_cache(node_ip: str, kvs_routing: str, ready_file: Path | None = None) -> int:
    """Runs a node cache in the foreground until SIGTERM or SIGINT.

    Args:
        node_ip: The node's ip, where the cache binds its request and update ports.
        kvs_routing: The KVS routing endpoint.
        ready_file: Written with :meth:`CacheServer.ready_info` once bound.

    Returns:
        The process exit code.
    """
    return serve_until_signalled(CacheServer(node_ip, kvs_routing), ready_file)
