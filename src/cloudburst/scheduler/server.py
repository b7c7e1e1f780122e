"""The scheduler's network shell: ZeroMQ sockets and a KVS client around :class:`~.state.SchedulerState`.

Public requests arrive on ROUTER sockets, one per port of the original protocol. A ROUTER talks to the original
clients' REQ sockets unchanged (a REQ request arrives as ``[identity, b"", payload]`` and is answered as
``[identity, b"", reply]``), and unlike a REP socket it can answer requests out of order: a DAG creation waits for
its pins without holding up anyone else (the original's loop stalled until each pin was answered). Executors, peers
and sink executors reach the scheduler on one PULL socket, each message in a typed envelope. KVS reads and writes
block the loop briefly; they occur on registrations, lookups of names this scheduler has not seen, recovery and the
once-per-report-period read of the caches' key sets (for locality), never on the call path of known work.

All logic lives in the state; this loop only moves bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import random
import uuid
from collections import deque
from pathlib import Path
from typing import assert_never

import zmq
from prometheus_client.core import CounterMetricFamily, Metric

from cloudburst.clock import Clock, SystemClock
from cloudburst.cluster.serve import serve_until_signalled
from cloudburst.config import SchedulerConfig
from cloudburst.errors import CloudburstError, DecodeError, InvalidRequest
from cloudburst.kvs.client import KvsClient
from cloudburst.management.client import SchedulerListClient
from cloudburst.protocol import codec
from cloudburst.protocol.errors import failure_response
from cloudburst.protocol.runtime_messages import (
    CallResult,
    CancelRequest,
    ClusterStatus,
    DagLease,
    DagSchedule,
    EncodedValue,
    ExecutorStatistics,
    FunctionCall,
    FunctionLease,
    GenericResponse,
    SchedulerStatus,
)
from cloudburst.protocol.telemetry_messages import TraceHop
from cloudburst.protocol.trigger_messages import TriggerAck
from cloudburst.protocol.versions import local_version_info
from cloudburst.scheduler.policy import PolicyOptions
from cloudburst.scheduler.state import (
    CancelEvent,
    ConnectEvent,
    ConnectReply,
    DagCallEvent,
    DagCreateEvent,
    DagDeleteEvent,
    DagLeaseEvent,
    FunctionCallEvent,
    FunctionCreateEvent,
    FunctionLeaseEvent,
    FunctionListEvent,
    FunctionListReply,
    InFlightQueryEvent,
    InFlightReply,
    InternalMessageEvent,
    KvsReadDoneEvent,
    KvsReadInstruction,
    KvsWriteDoneEvent,
    KvsWriteInstruction,
    ListSchedulersInstruction,
    PushedMessage,
    PushFailedEvent,
    PushInstruction,
    RecoverEvent,
    Reply,
    ReplyInstruction,
    SchedulerEvent,
    SchedulerInstruction,
    SchedulersListedEvent,
    SchedulerState,
    SchedulerTickEvent,
    StatusQueryEvent,
)
from cloudburst.telemetry.metrics import CallbackCollector, MetricsEndpoint, SchedulerMetrics
from cloudburst.telemetry.reporter import TelemetryReporter
from cloudburst.transport.endpoints import ReplyPolicy
from cloudburst.transport.guard import RejectLog, ReplyGate
from cloudburst.transport.security import curve_server, denied_handshakes, new_context
from cloudburst.transport.zmq import PushSocketCache, bind, drain, drain_multipart, split_envelope

logger = logging.getLogger(__name__)

#: Messages taken from one socket per turn: enough to amortize polling, few enough to stay fair between sockets.
MAX_BATCH = 256
#: Largest accepted message (a DAG call carries every function's arguments).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: Deadline of each KVS operation; the loop is blocked meanwhile, so it is kept short.
KVS_TIMEOUT = 5.0
_POLL_MS = 50
#: How often the state hears the time: pin timeouts are as precise as this, periodic work uses the report period.
_TICK_SECONDS = 0.05
#: Trace hops kept between two sends to the management service.
_MAX_PENDING_HOPS = 4096
#: How long closing a ROUTER may wait to flush replies already queued.
_REPLY_LINGER_MS = 200
#: Largest request the info port takes: its requests carry nothing, so anything big is garbage.
_INFO_MAX_REQUEST_BYTES = 4096


class _PublicPort(enum.Enum):
    """The public request ports, named after their ``RuntimePorts`` attribute."""

    CONNECT = "connect"
    FUNCTION_CREATE = "function_create"
    FUNCTION_CALL = "function_call"
    LIST = "list"
    DAG_CREATE = "dag_create"
    DAG_CALL = "dag_call"
    DAG_DELETE = "dag_delete"
    STATUS_QUERY = "status_query"
    FUNCTION_LEASE = "function_lease"
    CANCEL = "cancel"
    IN_FLIGHT = "in_flight"
    DAG_LEASE = "dag_lease"


def _text(payload: bytes, what: str) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(what, "not UTF-8 text") from None


def _decode_request(port: _PublicPort, request_id: int, payload: bytes) -> SchedulerEvent:
    """The event a request on ``port`` stands for.

    Raises:
        DecodeError: The payload is not what the port expects.
    """
    if port is _PublicPort.CONNECT:
        return ConnectEvent(request_id)
    if port is _PublicPort.FUNCTION_CREATE:
        return FunctionCreateEvent(request_id, codec.decode_function(payload))
    if port is _PublicPort.FUNCTION_CALL:
        return FunctionCallEvent(request_id, codec.decode_function_call(payload))
    if port is _PublicPort.LIST:
        return FunctionListEvent(request_id, _text(payload, "list prefix"))
    if port is _PublicPort.DAG_CREATE:
        return DagCreateEvent(request_id, codec.decode_dag(payload))
    if port is _PublicPort.DAG_CALL:
        return DagCallEvent(request_id, codec.decode_dag_call(payload))
    if port is _PublicPort.DAG_DELETE:
        return DagDeleteEvent(request_id, _text(payload, "DAG name"))
    if port is _PublicPort.FUNCTION_LEASE:
        return FunctionLeaseEvent(request_id, _text(payload, "function name"))
    if port is _PublicPort.CANCEL:
        return CancelEvent(request_id, codec.decode_cancel_request(payload).request_id)
    if port is _PublicPort.IN_FLIGHT:
        return InFlightQueryEvent(request_id, tuple(codec.decode_string_set(payload, "request keys")))
    if port is _PublicPort.DAG_LEASE:
        return DagLeaseEvent(request_id, _text(payload, "DAG name"))
    if port is _PublicPort.STATUS_QUERY:
        return StatusQueryEvent(request_id)
    assert_never(port)


def _encode_reply(reply: Reply) -> bytes:
    """The bytes of a reply, in the form the original clients read on each port."""
    if isinstance(reply, GenericResponse):
        return codec.encode_generic_response(reply)
    if isinstance(reply, ConnectReply):
        return reply.kvs_address.encode()
    if isinstance(reply, FunctionListReply):
        return codec.encode_string_set(reply.names)
    if isinstance(reply, InFlightReply):
        return codec.encode_string_set(reply.keys)
    if isinstance(reply, FunctionLease):
        return codec.encode_function_lease(reply)
    if isinstance(reply, DagLease):
        return codec.encode_dag_lease(reply)
    if isinstance(reply, ClusterStatus):
        return codec.encode_cluster_status(reply)
    assert_never(reply)


def _encode_pushed(message: PushedMessage) -> bytes:
    """The bytes of a pushed message: envelopes for executors and peers, bare results for callers."""
    if isinstance(message, SchedulerStatus | ExecutorStatistics):
        return codec.encode_scheduler_message(message)
    if isinstance(message, CallResult):
        return codec.encode_call_result(message)
    if isinstance(message, EncodedValue):
        return codec.encode_encoded_value(message)
    if isinstance(message, TriggerAck):
        return codec.encode_trigger_ack(message)
    if isinstance(message, CancelRequest):
        return codec.encode_cancel_request(message)
    return codec.encode_executor_request(message)


class SchedulerServer:
    """One scheduler: its public ROUTER sockets, its internal PULL socket, its KVS client, served by one loop.

    Args:
        config: Address, ports, KVS, peers, periods and the policy seed.
        clock: Time source of the state machine (tests may inject one).

    Raises:
        TransportError: A port cannot be bound (another scheduler on this host?).
    """

    def __init__(self, config: SchedulerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock or SystemClock()
        self._context = new_context(config.security)
        self._rejected = RejectLog()
        self._reply_gate = ReplyGate(ReplyPolicy.for_bind_host(config.host))
        self._push = PushSocketCache(self._context, security=config.security)
        self._stopping = False
        self._routers: dict[zmq.Socket[bytes], _PublicPort] = {}
        self._internal = self._socket(zmq.PULL, 0)
        #: Answers every request with the versions clients check theirs against (not a state-machine port).
        self._info = self._socket(zmq.ROUTER, _REPLY_LINGER_MS)
        self._info.setsockopt(zmq.MAXMSGSIZE, _INFO_MAX_REQUEST_BYTES)
        #: A restarted scheduler has forgotten the requests it placed: clients see it change and place them again.
        self.incarnation = uuid.uuid4().hex
        self._info_answer = dataclasses.replace(local_version_info(), incarnation=self.incarnation).encode()
        self._kvs: KvsClient | None = None
        #: Asks the management service for the scheduler list, when there is one.
        self._scheduler_list: SchedulerListClient | None = None
        #: Requests the state has not answered yet: request id -> (socket, routing envelope).
        self._waiting: dict[int, tuple[zmq.Socket[bytes], list[bytes]]] = {}
        self._next_request = 0
        #: Where the request being handled placed its functions (from the schedules and calls pushed for it).
        self._placed: dict[str, tuple[str, list[str]]] = {}
        #: Hops not yet sent to the management service.
        self._hops: deque[TraceHop] = deque(maxlen=_MAX_PENDING_HOPS)
        self.metrics = MetricsEndpoint(config.host, config.ports.metrics_scheduler, f"scheduler {config.host}")
        try:
            for port in _PublicPort:
                socket = self._socket(zmq.ROUTER, _REPLY_LINGER_MS)
                self._routers[socket] = port
                bind(socket, config.host, getattr(config.ports, port.value), f"the scheduler's {port.value} port")
            bind(self._internal, config.host, config.ports.scheduler_internal, "the scheduler's internal port")
            bind(self._info, config.host, config.ports.info, "the scheduler's info port")
            if config.management:
                self._scheduler_list = SchedulerListClient(
                    self._context, config.management, config.ports, config.security
                )
            self._kvs = KvsClient(config.kvs_routing, host=config.host, timeout=KVS_TIMEOUT, security=config.security)
        except BaseException:
            self.close()
            raise
        self.state = SchedulerState(
            config,
            random.Random(config.seed),
            new_id=lambda: str(uuid.uuid4()),
            options=PolicyOptions(mode=config.policy),
        )
        self._telemetry = None
        if config.management:
            endpoint = config.ports.management_endpoint(config.management)
            self._telemetry = TelemetryReporter(self._push, endpoint, f"scheduler:{config.host}")
        self._metrics = SchedulerMetrics(
            self.metrics.registry, executors=lambda: len(self.state.executors()), waiting=lambda: len(self._waiting)
        )
        self.metrics.registry.register(CallbackCollector(self._reexecution_metrics))
        self.metrics.start()

    def _reexecution_metrics(self) -> list[Metric]:
        counters = self.state.counters()
        family = CounterMetricFamily(
            "cloudburst_scheduler_reexecution",
            "Requests this scheduler placed again (lost with their executor, refused by a restarted one, or held "
            "until they could be placed), and what became of them.",
            labels=["outcome"],
        )
        for outcome, value in (
            ("lost", counters.requests_lost),
            ("rerun", counters.requests_rerun),
            ("failed", counters.requests_failed_lost),
            ("cancelled", counters.requests_cancelled),
            ("refused", counters.requests_refused),
            ("held", counters.requests_held),
        ):
            family.add_metric([outcome], value)
        return [family]

    def _socket(self, kind: int, linger_ms: int) -> zmq.Socket[bytes]:
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, linger_ms)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        curve_server(socket, self.config.security)
        return socket

    @property
    def internal_endpoint(self) -> str:
        """Where executors and peers reach this scheduler."""
        return self.config.ports.scheduler_internal_endpoint(self.config.host)

    @property
    def rejected_messages(self) -> int:
        """How many malformed messages or undeliverable sends the scheduler has dropped or refused."""
        return self._rejected.total

    @property
    def denied_handshakes(self) -> int:
        """How many CURVE handshakes the scheduler refused (unauthorized client keys); their messages were never
        received."""
        return denied_handshakes(self._context)

    def ready_info(self) -> str:
        """Where the scheduler listens, for the ready file its supervisor waits for."""
        ports = {port.value: getattr(self.config.ports, port.value) for port in _PublicPort}
        return json.dumps({"host": self.config.host, "ports": ports, "internal": self.internal_endpoint})

    def stop(self) -> None:
        """Asks :meth:`serve_forever` to return after the current turn; safe from a signal handler or a thread."""
        self._stopping = True

    def serve_forever(self) -> None:
        """Recovers the registry from the KVS, then serves until :meth:`stop`."""
        poller = zmq.Poller()
        for socket in self._routers:
            poller.register(socket, zmq.POLLIN)
        poller.register(self._internal, zmq.POLLIN)
        poller.register(self._info, zmq.POLLIN)
        if self._scheduler_list is not None:
            poller.register(self._scheduler_list.socket, zmq.POLLIN)
        logger.info("scheduler serving on %s (internal %s)", self.config.host, self.internal_endpoint)
        self._feed(RecoverEvent())
        next_tick = self._clock.now() + _TICK_SECONDS
        while not self._stopping:
            ready = dict(poller.poll(_POLL_MS))
            if self._internal in ready:
                self._serve_internal()
            if self._info in ready:
                self._serve_info()
            if self._scheduler_list is not None and self._scheduler_list.socket in ready:
                self._serve_scheduler_list(self._scheduler_list)
            for socket, port in self._routers.items():
                if socket in ready:
                    self._serve_router(socket, port)
            if self._clock.now() >= next_tick:
                self._feed(SchedulerTickEvent())
                self._report_hops()
                next_tick = self._clock.now() + _TICK_SECONDS

    def close(self) -> None:
        """Closes sockets and the KVS client; unanswered requests are dropped (their clients time out)."""
        self.metrics.close()
        self._waiting.clear()
        self._push.close()
        for socket in self._routers:
            socket.close()
        self._internal.close()
        self._info.close()
        if self._scheduler_list is not None:
            self._scheduler_list.close()
        if self._kvs is not None:
            self._kvs.close()
        self._context.term()

    # -- the loop ----------------------------------------------------------------------------------------------

    def _serve_router(self, socket: zmq.Socket[bytes], port: _PublicPort) -> None:
        for frames in drain_multipart(socket, MAX_BATCH):
            envelope, body = split_envelope(frames)
            self._next_request += 1
            request_id = self._next_request
            try:
                if len(body) != 1:
                    raise DecodeError(f"{port.value} request", f"expected one payload frame, got {len(body)}")
                event = _decode_request(port, request_id, body[0])
            except DecodeError as error:
                # A ROUTER must still answer, or the client's REQ socket stays stuck waiting.
                self._rejected(f"{port.value} port", str(error))
                self._send_reply(socket, envelope, _encode_reply(failure_response(InvalidRequest(error.message))))
                continue
            self._waiting[request_id] = (socket, envelope)
            started, wall = self._clock.now(), self._clock.wall_ns() / 1e9
            self._feed(event)
            duration = self._clock.now() - started
            self._metrics.requests.labels(port.value).inc()
            self._metrics.handling.labels(port.value).observe(duration)
            self._record_placements(wall, duration)

    def _serve_info(self) -> None:
        # Whatever was asked, the answer is the same: even a malformed request gets it, and nothing is rejected.
        for frames in drain_multipart(self._info, MAX_BATCH):
            envelope, _ = split_envelope(frames)
            self._send_reply(self._info, envelope, self._info_answer)

    def _serve_internal(self) -> None:
        for data in drain(self._internal, MAX_BATCH):
            try:
                message = codec.decode_scheduler_message(data)
            except DecodeError as error:
                self._rejected("internal port", str(error))
                continue
            # Continuations and trigger firings place requests too; their placements belong in traces.
            started, wall = self._clock.now(), self._clock.wall_ns() / 1e9
            self._feed(InternalMessageEvent(message))
            self._record_placements(wall, self._clock.now() - started)

    def _serve_scheduler_list(self, client: SchedulerListClient) -> None:
        answers = client.answers(self._rejected)
        if answers:
            self._feed(SchedulersListedEvent(answers[-1]))

    def _feed(self, event: SchedulerEvent) -> None:
        """Hands ``event`` to the state and executes what it asks, including what follows from KVS operations."""
        pending = deque(self._handle(event))
        while pending:
            follow_up = self._execute(pending.popleft())
            if follow_up is not None:
                # What a KVS outcome asks for belongs to the operation that asked for it: do it before the rest.
                pending.extendleft(reversed(self._handle(follow_up)))

    def _handle(self, event: SchedulerEvent) -> list[SchedulerInstruction]:
        try:
            return self.state.handle(event, self._clock.now(), self._clock.wall_ns())
        except Exception:
            # A bug must not take every client down with it (the original died on a KeyError); it is logged loudly
            # and the request it hit, if any, gets an answer.
            logger.exception("the scheduler failed to handle %s", type(event).__name__)
            request_id = getattr(event, "request_id", None)
            if isinstance(request_id, int):
                error = InvalidRequest(f"the scheduler failed on this {type(event).__name__}; see its log")
                return [ReplyInstruction(request_id, failure_response(error))]
            return []

    def _execute(self, instruction: SchedulerInstruction) -> SchedulerEvent | None:
        if isinstance(instruction, PushInstruction):
            self._note_placement(instruction)
            if not self._send(instruction.address, instruction.message):
                return PushFailedEvent(instruction.address, instruction.message)
        elif isinstance(instruction, ReplyInstruction):
            waiting = self._waiting.pop(instruction.request_id, None)
            if waiting is None:
                logger.error("no client waits for the reply to request %d", instruction.request_id)
            else:
                reply = instruction.reply
                if isinstance(reply, GenericResponse) and not reply.success:
                    self._metrics.failures.labels(self._routers[waiting[0]].value, reply.error.name).inc()
                self._send_reply(*waiting, _encode_reply(instruction.reply))
        elif isinstance(instruction, KvsReadInstruction):
            assert self._kvs is not None
            try:
                found = self._kvs.get_many(instruction.keys)
            except CloudburstError as error:
                return KvsReadDoneEvent(instruction.token, error=error)
            return KvsReadDoneEvent(instruction.token, lattices=found)
        elif isinstance(instruction, KvsWriteInstruction):
            assert self._kvs is not None
            try:
                self._kvs.put_many(instruction.items)
            except CloudburstError as error:
                return KvsWriteDoneEvent(instruction.token, error=error)
            return KvsWriteDoneEvent(instruction.token)
        elif isinstance(instruction, ListSchedulersInstruction) and self._scheduler_list is not None:
            self._scheduler_list.ask()
        return None

    def _note_placement(self, instruction: PushInstruction) -> None:
        """Remembers where the request being handled sent its functions, for its trace (whose detail
        :func:`cloudburst.management.telemetry.placed_functions` reads back)."""
        message = instruction.message
        if isinstance(message, DagSchedule) and message.id not in self._placed:
            order = [function.name for function in message.dag.functions]
            where = [f"{name} -> {message.locations[name]}" for name in order if name in message.locations]
            self._placed[message.id] = (message.dag.name, where)
        elif isinstance(message, FunctionCall) and message.response_key:
            self._placed[message.response_key] = ("", [f"{message.name} -> {instruction.address}"])

    def _record_placements(self, wall: float, duration: float) -> None:
        for request_id, (dag, where) in self._placed.items():
            self._hops.append(
                TraceHop(
                    request_id,
                    "scheduler",
                    self.config.host,
                    wall,
                    duration,
                    dag=dag,
                    detail=", ".join(where),
                    stages=len(where),
                )
            )
        self._placed.clear()

    def _report_hops(self) -> None:
        if self._hops and self._telemetry is not None:
            self._telemetry.send(list(self._hops))
        self._hops.clear()

    def _send_reply(self, socket: zmq.Socket[bytes], envelope: list[bytes], payload: bytes) -> None:
        try:
            socket.send_multipart([*envelope, payload], zmq.NOBLOCK)
        except zmq.ZMQError as error:
            # The client is gone or its queue is full; it will time out, which is all it could learn anyway.
            self._rejected("a reply", f"could not send: {error}")

    def _send(self, address: str, message: PushedMessage) -> bool:
        """Pushes ``message``; False when the destination's queue was full and it was dropped."""
        try:
            # Results go to a caller's reply address, bound by a CURVE client; the rest to other roles' ports.
            reply = isinstance(message, CallResult | EncodedValue)
            return self._push.send(self._reply_gate.check(address), _encode_pushed(message), reply=reply)
        except CloudburstError as error:
            self._rejected(f"a {type(message).__name__} for {address!r}", str(error))
            return True  # refused, not overloaded: nothing to tell anyone


def run_scheduler(config: SchedulerConfig, ready_file: Path | None = None) -> int:
    """Runs a scheduler in the foreground until SIGTERM or SIGINT.

    Args:
        config: The scheduler's configuration.
        ready_file: Written (atomically) once the scheduler's sockets are bound.

    Returns:
        The process exit code: 0.

    Raises:
        TransportError: A port cannot be bound.
    """
    return serve_until_signalled(SchedulerServer(config), ready_file)
