"""The KVS node's network shell: ZeroMQ sockets around :class:`~cloudburst.kvs.state.KvsState`.

Speaks Anna's client protocol, so the original Anna and Cloudburst clients work unchanged: ``KeyAddressRequest``
on the routing port, ``KeyRequest`` on each storage thread's port, every response pushed to the request's
``response_address``, and every change of a key a node cache holds pushed to that cache's update port. All logic
lives in the state; this loop only moves bytes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import zmq
from prometheus_client import Counter, Histogram

from cloudburst.config import KvsConfig
from cloudburst.errors import CloudburstError, ConfigError, DecodeError, TransportError
from cloudburst.kvs.engine import MemoryEngine, StorageEngine
from cloudburst.kvs.sqlite import SqliteEngine
from cloudburst.kvs.state import KvsState, StorageTopology
from cloudburst.kvs.triggers import TriggerDispatch
from cloudburst.protocol import codec
from cloudburst.protocol.messages import KeyRequest, RequestType
from cloudburst.telemetry.metrics import LATENCY_BUCKETS, MetricsEndpoint
from cloudburst.transport.endpoints import ReplyPolicy
from cloudburst.transport.guard import RejectLog, ReplyGate
from cloudburst.transport.security import new_context
from cloudburst.transport.zmq import PushSocketCache, bind, drain, pull_socket

logger = logging.getLogger(__name__)

#: Requests taken from one socket per turn: large enough to group-commit bursts, small enough to stay fair.
MAX_BATCH = 256
_POLL_MS = 100


@dataclass(frozen=True, slots=True)
class KvsAddresses:
    """Where a running KVS node listens."""

    routing: str
    storage: tuple[str, ...]
    #: Where executors acknowledge the runs of storage triggers.
    triggers: str = ""

    def to_json(self) -> str:
        """The form written to a ready file."""
        return json.dumps({"routing": self.routing, "storage": list(self.storage), "triggers": self.triggers})

    @classmethod
    def from_json(cls, text: str) -> KvsAddresses:
        """Reads a ready file's content."""
        data = json.loads(text)
        return cls(routing=data["routing"], storage=tuple(data["storage"]), triggers=data.get("triggers", ""))


def open_engine(config: KvsConfig) -> StorageEngine:
    """The engine a config asks for: Redis at ``engine_url``, SQLite under ``data_dir``, or memory when neither.

    Raises:
        ConfigError: ``engine_url`` is not a Redis engine URL.
        StorageUnavailable: Redis could not be reached in time.
    """
    if config.engine_url is not None:
        # Imported here: redis-py is an optional dependency (the ``redis`` extra).
        try:
            from cloudburst.kvs.redis_engine import RedisEngine
        except ModuleNotFoundError as error:
            raise ConfigError(f"the Redis engine needs redis-py: pip install 'cloudburst[redis]' ({error})") from None
        return RedisEngine(config.engine_url)
    if config.data_dir is None:
        return MemoryEngine()
    return SqliteEngine(config.data_dir / "kvs.sqlite3", config.durability)


class KvsServer:
    """A KVS node: one routing socket and one socket per storage thread, served by one loop.

    Args:
        config: Ports, threads and storage.
        engine: Overrides the engine the config names (tests inject a memory engine).
    """

    def __init__(self, config: KvsConfig, engine: StorageEngine | None = None) -> None:
        self.config = config
        self._engine = engine if engine is not None else open_engine(config)
        self._context = new_context(config.security)
        self._replies = PushSocketCache(self._context, security=config.security)
        self._reply_gate = ReplyGate(ReplyPolicy.for_bind_host(config.host))
        self._rejected = RejectLog()
        self._stopping = False
        self.metrics = MetricsEndpoint(config.host, config.metrics_port, f"KVS {config.host}")
        self._requests = Counter(
            "cloudburst_kvs_requests", "Key requests, by type.", ["type"], registry=self.metrics.registry
        )
        self._latency = Histogram(
            "cloudburst_kvs_request_duration_seconds",
            "Time the storage engine took for the batch a request was handled in, by request type.",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=self.metrics.registry,
        )
        #: The two metrics' children by request type (a lookup per request would cost more than the counting).
        self._by_type: dict[RequestType, tuple[Counter, Histogram]] = {}
        self._routing = pull_socket(self._context, config.max_message_bytes, config.security)
        routing_port = bind(self._routing, config.host, config.routing_port)
        if config.routing_port:
            # One socket on every port: lookups are answered alike whichever port they reach.
            for extra in range(1, config.routing_ports):
                bind(self._routing, config.host, config.routing_port + extra, "a routing port of the KVS")
        self._storage: list[zmq.Socket[bytes]] = []
        ports: list[int] = []
        for tid in range(config.threads):
            socket = pull_socket(self._context, config.max_message_bytes, config.security)
            ports.append(bind(socket, config.host, config.storage_port + tid if config.storage_port else 0))
            self._storage.append(socket)
        self._acks = pull_socket(self._context, config.max_message_bytes, config.security)
        ack_port = bind(self._acks, config.host, config.trigger_port)
        host = config.advertise_host or config.host
        self.state = KvsState(
            StorageTopology(host, tuple(ports)),
            self._engine,
            cache_update_port=config.cache_update_port,
            max_caches=config.max_subscribed_caches,
            max_keys_per_cache=config.max_keys_per_cache,
            trigger_endpoint=f"tcp://{host}:{ack_port}",
        )
        self.addresses = KvsAddresses(
            routing=f"tcp://{host}:{routing_port}",
            storage=tuple(self.state.topology.endpoint(tid) for tid in range(config.threads)),
            triggers=self.state.outbox.acknowledge_to,
        )
        self.metrics.start()

    @property
    def rejected_messages(self) -> int:
        """How many malformed or refused messages the node has dropped."""
        return self._rejected.total

    def ready_info(self) -> str:
        """The bound addresses, for the ready file a supervisor waits for."""
        return self.addresses.to_json()

    def stop(self) -> None:
        """Asks :meth:`serve_forever` to return; safe from a signal handler or another thread."""
        self._stopping = True

    def serve_forever(self) -> None:
        """Serves requests until :meth:`stop`."""
        poller = zmq.Poller()
        poller.register(self._routing, zmq.POLLIN)
        poller.register(self._acks, zmq.POLLIN)
        for socket in self._storage:
            poller.register(socket, zmq.POLLIN)
        logger.info("KVS serving: routing %s, storage %s", self.addresses.routing, ", ".join(self.addresses.storage))
        while not self._stopping:
            ready = dict(poller.poll(_POLL_MS))
            if self._routing in ready:
                self._serve_routing()
            for tid, socket in enumerate(self._storage):
                if socket in ready:
                    self._serve_storage(tid, socket)
            if self._acks in ready:
                self._serve_acks()
            if self.state.outbox:
                self._dispatch(self.state.due_trigger_runs())

    def close(self) -> None:
        """Closes sockets, the engine and the metrics endpoint."""
        self.metrics.close()
        self._replies.close()
        self._routing.close()
        self._acks.close()
        for socket in self._storage:
            socket.close()
        self._context.term()
        self._engine.close()

    def _reply(self, where: str, address: str, frames: list[bytes], *, to_server: bool = False) -> None:
        if not address:
            return
        try:
            # A reply or cache address is bound by a CURVE client, a scheduler's port by a CURVE server.
            self._replies.send_multipart(self._reply_gate.check(address), frames, reply=not to_server)
        except TransportError as error:
            self._rejected(where, str(error))

    def _serve_routing(self) -> None:
        for data in drain(self._routing, MAX_BATCH):
            try:
                request = codec.decode_key_address_request(data)
            except DecodeError as error:
                self._rejected("routing", str(error))
                continue
            response = self.state.handle_address_request(request)
            self._reply("routing", request.response_address, [codec.encode_key_address_response(response)])

    def _serve_storage(self, tid: int, socket: zmq.Socket[bytes]) -> None:
        where = f"storage thread {tid}"
        requests: list[KeyRequest] = []
        for data in drain(socket, MAX_BATCH):
            try:
                request = codec.decode_key_request(data)
            except DecodeError as error:
                self._rejected(where, str(error))
                continue
            if request.type == RequestType.RT_UNSPECIFIED:
                self._rejected(where, "KeyRequest.type is unset (neither GET nor PUT)")
                continue
            requests.append(request)
        if not requests:
            return
        started = time.perf_counter()
        try:
            result = self.state.handle_batch(tid, requests)
        except CloudburstError as error:
            # A stored value that no longer decodes is corruption, not bad input: keep serving other keys.
            logger.error("failed a batch of %d requests on %s: %s", len(requests), where, error)
            return
        elapsed = time.perf_counter() - started
        for request in requests:
            counted = self._by_type.get(request.type)
            if counted is None:
                kind = request.type.name
                counted = self._by_type[request.type] = (self._requests.labels(kind), self._latency.labels(kind))
            counted[0].inc()
            counted[1].observe(elapsed)
        for request, response in zip(requests, result.responses, strict=True):
            frames = codec.encode_key_response(response, payload_frames=request.payload_frames)
            self._reply(where, request.response_address, frames)
        for push in result.pushes:
            # Cache addresses come from key-set reports, i.e. from the network: same policy as reply addresses.
            self._reply("cache push", push.address, [codec.encode_key_request(push.request)])
        self._dispatch(result.dispatches)

    def _serve_acks(self) -> None:
        acks = []
        for data in drain(self._acks, MAX_BATCH):
            try:
                acks.append(codec.decode_trigger_ack(data))
            except DecodeError as error:
                self._rejected("trigger port", str(error))
        if acks:
            self.state.handle_trigger_acks(acks)

    def _dispatch(self, dispatches: Sequence[TriggerDispatch]) -> None:
        for dispatch in dispatches:
            # An undeliverable run stays owed and is tried again (on the next scheduler) after its ack timeout.
            self._reply(
                "trigger dispatch", dispatch.address, [codec.encode_scheduler_message(dispatch.firing)], to_server=True
            )
