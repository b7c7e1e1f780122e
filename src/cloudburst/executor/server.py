"""The executor's network shell: ZeroMQ sockets and user code around :class:`~cloudburst.executor.state.ExecutorState`.

One thread serves everything, as in the original: executors are processes (the GIL), and a node runs several. Each
turn drains up to :data:`MAX_TURN` control messages, hands them to the state as one event (so ready requests of a
batching function in that turn form one batch), and executes the returned instructions in order. Loading a function
and running user code happen inline; their outcomes go straight back to the state, and the instructions that come
of them run before the rest of the turn's, so a result is sent on as soon as it exists.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import zmq

from cloudburst.cache.client import NodeCacheClient
from cloudburst.cache.session_client import CausalCacheClient
from cloudburst.clock import Clock, SystemClock, TimestampGenerator, writer_id_for
from cloudburst.cluster.serve import serve_until_signalled
from cloudburst.config import ExecutorConfig
from cloudburst.errors import CloudburstError, DecodeError
from cloudburst.executor.causal import WriterCounter
from cloudburst.executor.causal_io import CausalDataClient
from cloudburst.executor.interrupts import Interrupter
from cloudburst.executor.local_tier import LocalReadTier
from cloudburst.executor.runtime import FunctionRuntime
from cloudburst.executor.sentinel import Sentinel
from cloudburst.executor.state import (
    DagRunDoneEvent,
    EncodedResult,
    ExecutorEvent,
    ExecutorInstruction,
    ExecutorState,
    ExitInstruction,
    FunctionLoadedEvent,
    FunctionLoadFailedEvent,
    ListSchedulersInstruction,
    LoadFunctionInstruction,
    OneShotDoneEvent,
    OutgoingMessage,
    RequestsReceivedEvent,
    RunDagInstruction,
    RunOneShotInstruction,
    SchedulersListedEvent,
    SendInstruction,
    StartEvent,
    StoreResultInstruction,
    TickEvent,
    UnloadFunctionInstruction,
)
from cloudburst.executor.user_library import UserLibrary
from cloudburst.kvs.client import DataClient, KvsClient
from cloudburst.lattices import Lattice, LwwLattice, SetLattice
from cloudburst.management.client import SchedulerListClient
from cloudburst.protocol import codec
from cloudburst.protocol.runtime_messages import CallResult, DagTrigger, EncodedValue, ExecutorRequest
from cloudburst.protocol.trigger_messages import TriggerAck
from cloudburst.telemetry.metrics import ExecutorMetrics, MetricsEndpoint
from cloudburst.telemetry.reporter import TelemetryReporter
from cloudburst.transport.endpoints import ReplyPolicy
from cloudburst.transport.guard import RejectLog, ReplyGate
from cloudburst.transport.security import denied_handshakes, new_context
from cloudburst.transport.zmq import PushSocketCache, bind, drain, pull_socket

logger = logging.getLogger(__name__)

#: Control messages taken per turn: the original's BATCH_SIZE_MAX, which bounds a batch and keeps turns short.
MAX_TURN = 20
#: Largest accepted control message (a schedule carries every function's arguments).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_POLL_MS = 50
#: How often the state hears the time when idle: reports, expiry and the departure grace are decided from it.
_TICK_SECONDS = 0.05
#: Seconds a result store sent without waiting may stay unanswered before it is written again (and waited for).
STORE_ACK_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class _PendingStore:
    key: str
    lattice: Lattice
    sent_at: float


class ExecutorServer:
    """One executor: its control and inbox sockets, its KVS client, its user code, served by one loop.

    Args:
        config: Identity, ports, schedulers, KVS and limits.
        clock: Time source of the state machine and of run durations (tests may inject one).
        own_process: The executor is a process of its own, which may end itself when interrupted user code does
            not stop (its node restarts it); an executor embedded in another program never does.

    Raises:
        TransportError: A port cannot be bound (another executor with this tid on this host?).
    """

    def __init__(self, config: ExecutorConfig, clock: Clock | None = None, *, own_process: bool = False) -> None:
        self.config = config
        self._clock = clock or SystemClock()
        self._context = new_context(config.security)
        self._rejected = RejectLog()
        self._reply_gate = ReplyGate(ReplyPolicy.for_bind_host(config.host))
        self._stopping = False
        self.exit_code = 0
        security = config.security
        self.metrics = MetricsEndpoint(
            config.host, config.ports.metrics_executor + config.tid, f"executor {config.host}:{config.tid}"
        )
        self._control = pull_socket(self._context, MAX_MESSAGE_BYTES, security)
        self._push = PushSocketCache(self._context, security=security)
        #: Asks the management service for the scheduler list, when there is one.
        self._scheduler_list: SchedulerListClient | None = None
        self._kvs: KvsClient | None = None
        #: Result stores sent without waiting, by KVS request id, until the KVS answers.
        self._stores: dict[str, _PendingStore] = {}
        self._cache: NodeCacheClient | None = None
        self._local_tier: LocalReadTier | None = None
        self._library: UserLibrary | None = None
        self._sessions: CausalCacheClient | None = None
        causal: CausalDataClient | None = None
        incarnation = uuid.uuid4().hex
        try:
            bind(self._control, config.host, config.ports.executor_control + config.tid)
            if config.management:
                self._scheduler_list = SchedulerListClient(self._context, config.management, config.ports, security)
            self._kvs = KvsClient(config.kvs_routing, host=config.host, timeout=config.kvs_timeout, security=security)
            if config.cache_address:
                # User data goes through the node's cache; function bodies and results go to the KVS directly
                # (results are read once, elsewhere, and would only churn the cache).
                self._cache = NodeCacheClient(
                    config.cache_address, host=config.host, timeout=config.kvs_timeout, security=security
                )
            data: DataClient = self._cache or self._kvs
            if self._cache is not None and config.cache_invalidations:
                self._local_tier = LocalReadTier(
                    self._cache, config.cache_invalidations, self._context, security=security
                )
                data = self._local_tier
            if self._cache is not None and config.cache_causal:
                self._sessions = CausalCacheClient(host=config.host, timeout=config.kvs_timeout, security=security)
                # The incarnation keeps a restarted executor from reusing clock entries of its earlier life.
                counter = WriterCounter(f"{config.host}:{config.tid}:{incarnation[:8]}")
                causal = CausalDataClient(config.cache_causal, self._sessions, self._cache, counter, config.kvs_timeout)
            self._timestamps = TimestampGenerator(writer_id_for(f"{config.host}:{config.tid}"))
            self._library = UserLibrary(
                config, data, self._context, self._push, self._timestamps, causal, store=self._kvs
            )
        except BaseException:
            self.close()
            raise
        # Ending the process is only for an executor that is one (not for one embedded in a test or a program).
        self._interrupter = Interrupter(self._clock, config.stop_grace if own_process else None)
        try:
            self._sentinel = Sentinel(config, self._context, self._interrupter, self._clock, may_exit=own_process)
        except BaseException:
            self.close()
            raise
        self.runtime = FunctionRuntime(config, self._kvs, self._library, causal=causal, interrupter=self._interrupter)
        self.state = ExecutorState(config, incarnation)
        node = f"{config.host}:{config.tid}"
        #: Trace hops go to the management service, when there is one.
        self._telemetry = (
            TelemetryReporter(self._push, config.ports.management_endpoint(config.management), node)
            if config.management
            else None
        )
        self._metrics = ExecutorMetrics(
            self.metrics.registry,
            pending=lambda: len(self.state.pending_requests()),
            utilization=lambda: self.state.status().utilization,
        )
        self.metrics.start()

    @property
    def control_endpoint(self) -> str:
        """Where schedulers and other executors reach this executor."""
        return self.config.ports.executor_control_endpoint(self.config.host, self.config.tid)

    @property
    def rejected_messages(self) -> int:
        """How many malformed control messages or undeliverable sends the executor has dropped."""
        return self._rejected.total

    @property
    def denied_handshakes(self) -> int:
        """How many CURVE handshakes the executor refused (unauthorized client keys)."""
        return denied_handshakes(self._context)

    def ready_info(self) -> str:
        """Where the executor listens, for the ready file its supervisor waits for."""
        return json.dumps({"host": self.config.host, "tid": self.config.tid, "control": self.control_endpoint})

    def stop(self) -> None:
        """Asks :meth:`serve_forever` to return after the current turn; safe from a signal handler or another thread."""
        self._stopping = True

    def serve_forever(self) -> int:
        """Serves until :meth:`stop` or until a self-depart has drained.

        Returns:
            The exit code: 0.
        """
        poller = zmq.Poller()
        poller.register(self._control, zmq.POLLIN)
        if self._scheduler_list is not None:
            poller.register(self._scheduler_list.socket, zmq.POLLIN)
        logger.info("executor %s:%d serving on %s", self.config.host, self.config.tid, self.control_endpoint)
        self._interrupter.attach()
        self._sentinel.start()
        self._feed(StartEvent())
        self._sentinel.publish(self.state.status(), self.state.schedulers())
        next_tick = self._clock.now() + _TICK_SECONDS
        while not self._stopping:
            ready = dict(poller.poll(_POLL_MS))
            if self._control in ready:
                requests = self._drain()
                if requests:
                    self._feed(RequestsReceivedEvent(tuple(requests)))
            # Asked only when it has answered: reading an empty socket costs an exception per request served.
            if self._scheduler_list is not None and self._scheduler_list.socket in ready:
                answers = self._scheduler_list.answers(self._rejected)
                if answers:
                    self._feed(SchedulersListedEvent(answers[-1]))
            if not self._stopping and self._clock.now() >= next_tick:
                self._feed(TickEvent())
                # What the sentinel reports while user code holds the loop: a tick old at most, and not built per run.
                self._sentinel.publish(self.state.status(), self.state.schedulers())
                self._settle_stores()
                self._report_hops()
                next_tick = self._clock.now() + _TICK_SECONDS
        self._settle_stores(flush=True)
        self._report_hops()
        return self.exit_code

    def close(self) -> None:
        """Closes sockets, the KVS client and the metrics endpoint."""
        sentinel = getattr(self, "_sentinel", None)
        if sentinel is not None:
            sentinel.close()
        self.metrics.close()
        if self._library is not None:
            self._library.close()
        self._push.close()
        self._control.close()
        if self._scheduler_list is not None:
            self._scheduler_list.close()
        if self._kvs is not None:
            self._kvs.close()
        if self._local_tier is not None:
            self._local_tier.close()
        if self._cache is not None:
            self._cache.close()
        if self._sessions is not None:
            self._sessions.close()
        self._context.term()

    # -- the loop ----------------------------------------------------------------------------------------------

    def _drain(self) -> list[ExecutorRequest]:
        requests: list[ExecutorRequest] = []
        for data in drain(self._control, MAX_TURN):
            try:
                requests.append(codec.decode_executor_request(data))
            except DecodeError as error:
                self._rejected("a control message", str(error))
        return requests

    def _feed(self, event: ExecutorEvent) -> None:
        """Hands ``event`` to the state and executes what it asks, including what follows from runs and loads."""
        pending = deque(self.state.handle(event, self._clock.now()))
        while pending:
            follow_up = self._execute(pending.popleft())
            if follow_up is not None:
                # What a finished run asks for (its results) goes before the rest of the turn's work.
                pending.extendleft(reversed(self.state.handle(follow_up, self._clock.now())))

    def _execute(self, instruction: ExecutorInstruction) -> ExecutorEvent | None:
        if isinstance(instruction, SendInstruction):
            self._send(instruction.address, instruction.message)
        elif isinstance(instruction, RunDagInstruction):
            assert self._library is not None
            started = self._clock.now()
            outcomes = self.runtime.run_dag(instruction)
            duration = self._clock.now() - started
            wall = self._clock.wall_ns() / 1e9
            return DagRunDoneEvent(instruction.run_id, outcomes, duration, wall, self._library.take_reads())
        elif isinstance(instruction, RunOneShotInstruction):
            assert self._library is not None
            started = self._clock.now()
            outcome = self.runtime.run_one_shot(instruction.call)
            duration = self._clock.now() - started
            wall = self._clock.wall_ns() / 1e9
            return OneShotDoneEvent(instruction.run_id, outcome, duration, wall, self._library.take_reads())
        elif isinstance(instruction, StoreResultInstruction):
            self._store(instruction.key, instruction.result)
        elif isinstance(instruction, LoadFunctionInstruction):
            started = self._clock.now()
            try:
                self.runtime.load_pinned(instruction.name)
            except CloudburstError as error:
                return FunctionLoadFailedEvent(instruction.name, error, self._clock.now() - started)
            return FunctionLoadedEvent(instruction.name, self._clock.now() - started)
        elif isinstance(instruction, UnloadFunctionInstruction):
            self.runtime.unload_pinned(instruction.name)
        elif isinstance(instruction, ListSchedulersInstruction):
            if self._scheduler_list is not None:
                self._scheduler_list.ask()
        elif isinstance(instruction, ExitInstruction):
            self.exit_code = instruction.code
            self._stopping = True
        return None

    def _report_hops(self) -> None:
        """Counts the runs recorded since the last turn in the metrics and sends their hops on."""
        hops = self.state.take_hops()
        if hops:
            self._metrics.observe(hops)
            if self._telemetry is not None:
                self._telemetry.send(hops)

    def _send(self, address: str, message: OutgoingMessage) -> None:
        try:
            if isinstance(message, DagTrigger):
                data = codec.encode_executor_request(message)
            elif isinstance(message, CallResult):
                data = codec.encode_call_result(message)
            elif isinstance(message, EncodedValue):
                data = codec.encode_encoded_value(message)
            elif isinstance(message, TriggerAck):
                data = codec.encode_trigger_ack(message)
            else:
                data = codec.encode_scheduler_message(message)
            # Results go to a caller's reply address, bound by a CURVE client; the rest to other roles' ports.
            reply = isinstance(message, CallResult | EncodedValue)
            self._push.send(self._reply_gate.check(address), data, reply=reply)
        except CloudburstError as error:
            self._rejected(f"a {type(message).__name__} for {address!r}", str(error))

    def _store(self, key: str, result: EncodedResult) -> None:
        """Stores a result without waiting for the KVS, so the next request does not wait for the write either.

        Whoever reads the result waits for the key to appear (a reference does, a future falls back to it only
        after its notification), so a store settled a moment later is never read as missing.
        """
        lattice: Lattice
        if result.set_members is not None:
            lattice = SetLattice(frozenset(result.set_members))
        else:
            lattice = LwwLattice(self._timestamps(), codec.encode_encoded_value(result.value))
        assert self._kvs is not None
        request_id = self._kvs.put_nowait({key: lattice})
        if request_id is None:
            self._store_now(key, lattice)
        else:
            self._stores[request_id] = _PendingStore(key, lattice, self._clock.now())

    def _store_now(self, key: str, lattice: Lattice) -> None:
        assert self._kvs is not None
        try:
            self._kvs.put(key, lattice)
        except CloudburstError as error:
            # Nothing to retry into: the caller's deadline will tell it. Keep serving everyone else.
            logger.error("could not store the result under %r: %s", key, error)

    def _settle_stores(self, *, flush: bool = False) -> None:
        """Takes the KVS's answers to stores sent without waiting; writes again, and waits, for any not stored.

        Args:
            flush: Wait for every outstanding store (before exiting), up to :data:`STORE_ACK_TIMEOUT`.
        """
        if not self._stores or self._kvs is None:
            return
        give_up = self._clock.now() + STORE_ACK_TIMEOUT
        while True:
            for request_id, failed in self._kvs.settle().items():
                store = self._stores.pop(request_id, None)
                if store is not None and failed:
                    self._store_now(store.key, store.lattice)
            if not flush or not self._stores or self._clock.now() >= give_up:
                break
            time.sleep(0.001)
        cutoff = self._clock.now() - STORE_ACK_TIMEOUT
        for request_id in [r for r, store in self._stores.items() if flush or store.sent_at < cutoff]:
            store = self._stores.pop(request_id)
            self._store_now(store.key, store.lattice)


def run_executor(config: ExecutorConfig, ready_file: Path | None = None) -> int:
    """Runs an executor in the foreground until SIGTERM/SIGINT or a completed self-depart.

    Args:
        config: The executor's configuration.
        ready_file: Written (atomically) once the executor's sockets are bound.

    Returns:
        The process exit code: 0.

    Raises:
        TransportError: A port cannot be bound.
    """
    return serve_until_signalled(ExecutorServer(config, own_process=True), ready_file)
