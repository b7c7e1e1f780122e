"""The management service's shell: reports and queries in, scaling actions out, around :class:`ManagementState`.

Ports (the original's numbers, :class:`~cloudburst.config.RuntimePorts`):

* ``management`` (7003, PULL): executors' status and statistics reports, and schedulers' call statistics, in the
  ``SchedulerMessage`` envelope executors send their schedulers.
* ``management_executors`` (7002, PULL): the message body is a reply address; the list of executor nodes (a
  ``StringSet`` of addresses) is pushed there. The original's Anna storage nodes ask this to find node caches.
* ``management_schedulers`` (7004, ROUTER, answering REQ clients): any request is answered with a ``StringSet`` of
  the scheduler hosts known (configured, or reporting recently). Schedulers and executors ask it every report
  period, so they find schedulers that started after them.
* ``management_drains`` (7005, ROUTER, answering REQ clients): the request is a node's address; the node is drained
  as an operator asked (:meth:`ManagementServer.drain_node`) and the answer is JSON: ``{"ok": true, "threads":
  [...]}`` or ``{"ok": false, "error": "..."}``. ``cloudburst drain`` sends it.
* ``dashboard`` (7080, HTTP): the web dashboard, its JSON API and the service's Prometheus metrics.

Once a second the loop ticks the state and carries out what it decides. Nodes come from and go back to a
:class:`Provisioner` (local node process groups, or a cloud's machines); the service itself tells a draining
node's executors to depart and, once they all have, asks the provisioner to release the node. Replicas are pinned
and unpinned by messages to the executors themselves; a new replica needs no acknowledgement here, it shows in the
executor's next status report, to the schedulers as to us.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol, assert_never

import zmq
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from cloudburst.clock import Clock, SystemClock
from cloudburst.cluster.serve import serve_until_signalled
from cloudburst.config import ManagementConfig, RuntimePorts
from cloudburst.errors import CloudburstError, DecodeError, InvalidRequest, ProvisioningError, TransportError
from cloudburst.management.dashboard import DashboardServer
from cloudburst.management.policy import (
    AddNodesInstruction,
    DereplicateFunctionInstruction,
    DrainNodeInstruction,
    NodeView,
    ReplicateFunctionInstruction,
)
from cloudburst.management.state import (
    DrainCancelledEvent,
    DrainRefusedInstruction,
    DrainRequestEvent,
    ExecutorStatisticsEvent,
    ManagementDecision,
    ManagementEvent,
    ManagementInstruction,
    ManagementState,
    ManagementTickEvent,
    NodeJoinedEvent,
    ReleaseNodeInstruction,
    SchedulerStatisticsEvent,
    ThreadStatusEvent,
)
from cloudburst.management.telemetry import TelemetryStore
from cloudburst.management.views import cluster_view, trace_view
from cloudburst.protocol import codec
from cloudburst.protocol.runtime_messages import (
    ExecutorRequest,
    ExecutorStatistics,
    PinFunction,
    SelfDepart,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.protocol.telemetry_messages import TelemetryReport
from cloudburst.telemetry.metrics import CallbackCollector, counter, gauge
from cloudburst.transport.endpoints import ReplyPolicy
from cloudburst.transport.guard import RejectLog, ReplyGate
from cloudburst.transport.security import curve_server, new_context
from cloudburst.transport.zmq import PushSocketCache, bind, drain, drain_multipart, pull_socket, split_envelope

logger = logging.getLogger(__name__)

#: Seconds between ticks of the state.
TICK_INTERVAL = 1.0
#: Messages taken from one socket per turn.
MAX_BATCH = 512
#: Largest report accepted.
MAX_MESSAGE_BYTES = 4 * 2**20
#: Largest query accepted (a reply address, or anything at all for the scheduler list).
MAX_QUERY_BYTES = 64 * 1024
_POLL_MS = 100
#: How long closing the query ROUTER may wait to flush answers already queued.
_REPLY_LINGER_MS = 200


class Provisioner(Protocol):
    """Where nodes (a node cache and its executors) come from and go back to."""

    def add_nodes(self, count: int) -> list[str]:
        """Starts ``count`` nodes; returns the addresses of those that are up (others join by reporting later)."""
        ...

    def drain(self, node: str) -> None:
        """``node`` is being drained: stop replacing its processes, and make it the first to go.

        Raises:
            CloudburstError: The drain cannot be carried out; the node then stays active.
        """
        ...

    def release(self, node: str) -> None:
        """``node`` has drained (its executors departed): release its machine."""
        ...


class NullProvisioner:
    """No machines to start or release: node decisions are logged and not carried out.

    Additions return no node (the state counts them as pending until ``node_join_timeout``), and drains are refused,
    so no executor is told to depart when nothing could replace it. Replica decisions are unaffected.
    """

    def add_nodes(self, count: int) -> list[str]:
        """Logs the decision; starts nothing."""
        logger.warning("no provisioner: not adding %d node(s)", count)
        return []

    def drain(self, node: str) -> None:
        """Refuses.

        Raises:
            ProvisioningError: Always: without a provisioner a drained node could not be released.
        """
        raise ProvisioningError(f"draining {node}", "there is no provisioner, so nodes are neither added nor released")

    def release(self, node: str) -> None:
        """Logs; there is no machine to release."""
        logger.warning("no provisioner: not releasing %s", node)


def send_self_depart(push: PushSocketCache, ports: RuntimePorts, node: str, tids: Iterable[int]) -> None:
    """Tells executors ``tids`` of ``node`` to depart: no new work, finish what they hold, report, exit.

    Raises:
        TransportError: An executor's endpoint is invalid.
    """
    payload = codec.encode_executor_request(SelfDepart())
    for tid in tids:
        push.send(ports.executor_control_endpoint(node, tid), payload)


class ManagementServer:
    """The management service: a report socket, two query sockets, one loop.

    The loop thread and :meth:`drain_node` (from any thread) share the state and the sockets that push to
    executors, under one lock; the query and report sockets belong to the loop alone.

    Args:
        config: Where to bind, the schedulers known from the start, the port layout and the policies' thresholds.
        provisioner: Starts and releases nodes.
        clock: Time source.

    Raises:
        TransportError: A port cannot be bound.
    """

    def __init__(self, config: ManagementConfig, provisioner: Provisioner, *, clock: Clock | None = None) -> None:
        self.config = config
        self.host = config.host
        self.ports = config.ports
        self.state = ManagementState(config.policy, schedulers=config.schedulers, autoscale=config.autoscale)
        #: Traces, errors, cache figures and series for the dashboard and ``cloudburst trace``.
        self.telemetry = TelemetryStore()
        self._registry = CollectorRegistry()
        self._registry.register(CallbackCollector(self._metric_families))
        self._provisioner = provisioner
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._context = new_context(config.security)
        self._push = PushSocketCache(self._context, security=config.security)
        self._rejected = RejectLog()
        self._reply_gate = ReplyGate(ReplyPolicy.for_bind_host(config.host))
        self._reports = pull_socket(self._context, MAX_MESSAGE_BYTES, config.security)
        self._executor_queries = pull_socket(self._context, MAX_QUERY_BYTES, config.security)
        self._scheduler_queries = self._context.socket(zmq.ROUTER)
        curve_server(self._scheduler_queries, config.security)
        self._scheduler_queries.setsockopt(zmq.LINGER, _REPLY_LINGER_MS)
        self._scheduler_queries.setsockopt(zmq.MAXMSGSIZE, MAX_QUERY_BYTES)
        self._drain_requests = self._context.socket(zmq.ROUTER)
        curve_server(self._drain_requests, config.security)
        self._drain_requests.setsockopt(zmq.LINGER, _REPLY_LINGER_MS)
        self._drain_requests.setsockopt(zmq.MAXMSGSIZE, MAX_QUERY_BYTES)
        self._stopping = False
        self._closed = False
        self.dashboard: DashboardServer | None = None
        try:
            host, ports = config.host, config.ports
            self.report_address = f"tcp://{host}:{bind(self._reports, host, ports.management)}"
            self.executors_address = f"tcp://{host}:{bind(self._executor_queries, host, ports.management_executors)}"
            schedulers_port = bind(self._scheduler_queries, host, ports.management_schedulers)
            self.schedulers_address = f"tcp://{host}:{schedulers_port}"
            self.drains_address = f"tcp://{host}:{bind(self._drain_requests, host, ports.management_drains)}"
            self.dashboard = DashboardServer(self, host, ports.dashboard)
        except TransportError:
            self.close()
            raise
        #: The dashboard's address (its JSON API and ``/metrics`` are under it).
        self.dashboard_url = self.dashboard.url
        self.dashboard.start()

    @property
    def rejected_messages(self) -> int:
        """How many malformed or unexpected reports and queries were dropped."""
        return self._rejected.total

    def ready_info(self) -> str:
        """Where the service listens, for the ready file its supervisor waits for."""
        return json.dumps(
            {
                "host": self.host,
                "reports": self.report_address,
                "executors": self.executors_address,
                "schedulers": self.schedulers_address,
                "drains": self.drains_address,
                "dashboard": self.dashboard_url,
            }
        )

    def nodes(self) -> Mapping[str, NodeView]:
        """The state's view of the nodes, safe to call from any thread."""
        with self._lock:
            return self.state.nodes()

    def schedulers(self) -> tuple[str, ...]:
        """The scheduler hosts the service lists, safe to call from any thread."""
        with self._lock:
            return self.state.schedulers()

    def decisions(self) -> tuple[ManagementDecision, ...]:
        """The state's recent decisions, safe to call from any thread."""
        with self._lock:
            return self.state.decisions()

    def stop(self) -> None:
        """Asks :meth:`serve_forever` to return; safe from another thread or a signal handler."""
        self._stopping = True

    def serve_forever(self) -> None:
        """Takes reports, answers queries and ticks the policies until :meth:`stop`."""
        poller = zmq.Poller()
        for socket in (self._reports, self._executor_queries, self._scheduler_queries, self._drain_requests):
            poller.register(socket, zmq.POLLIN)
        logger.info(
            "management serving: reports on %s, executor list on %s, scheduler list on %s",
            self.report_address,
            self.executors_address,
            self.schedulers_address,
        )
        last_tick = self._clock.now()
        while not self._stopping:
            ready = dict(poller.poll(_POLL_MS))
            with self._lock:
                if self._reports in ready:
                    for data in drain(self._reports, MAX_BATCH):
                        self._receive(data)
                if self._executor_queries in ready:
                    self._answer_executor_queries()
                if self._scheduler_queries in ready:
                    self._answer_scheduler_queries()
                if self._drain_requests in ready:
                    self._answer_drain_requests()
                now = self._clock.now()
                if now - last_tick >= TICK_INTERVAL:
                    last_tick = now
                    self.tick()

    def tick(self) -> None:
        """Ages the view, runs the policies and carries out their decisions."""
        with self._lock:
            self._feed(ManagementTickEvent())

    def drain_node(self, node: str) -> DrainNodeInstruction:
        """Drains ``node`` at an operator's request, whatever the policies think; safe from any thread.

        The node's executors are told to depart at once; the node is released once they all have.

        Returns:
            The drain carried out (the threads told to depart).

        Raises:
            InvalidRequest: The state refused (an unknown node, one already draining, or the active nodes would fall
                below ``min_nodes``); the message says which.
            CloudburstError: The provisioner could not start the drain; the node stays active.
        """
        with self._lock:
            drained: DrainNodeInstruction | None = None
            for instruction in self.state.handle(DrainRequestEvent(node), self._clock.now()):
                if isinstance(instruction, DrainRefusedInstruction):
                    raise InvalidRequest(f"cannot drain {node}: {instruction.reason}")
                if isinstance(instruction, DrainNodeInstruction):
                    drained = instruction
                    # The caller is told of a failed drain, not just the log.
                    logger.info("%s: %s", type(instruction).__name__, instruction.reason)
                    self._execute(instruction)
                else:
                    self._carry_out(instruction)
            assert drained is not None
            return drained

    def close(self) -> None:
        """Closes the sockets; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.dashboard is not None:
            self.dashboard.close()
        self._reports.close()
        self._executor_queries.close()
        self._scheduler_queries.close()
        self._drain_requests.close()
        self._push.close()
        self._context.term()

    # -- what people see (the dashboard's source; called from its threads) -------------------------------------

    def cluster_view(self) -> Mapping[str, object]:
        """The cluster as the dashboard shows it (the JSON of ``/api/cluster``)."""
        with self._lock:
            return cluster_view(self.state, self.telemetry, time.time(), self._clock.now())

    def trace_view(self, request_id: str) -> Mapping[str, object] | None:
        """One request's hops (the JSON of ``/api/traces/<id>``); ``None`` if it is not kept."""
        with self._lock:
            hops = self.telemetry.trace(request_id)
        return None if hops is None else trace_view(request_id, hops)

    def metrics_text(self) -> bytes:
        """The service's Prometheus metrics."""
        return generate_latest(self._registry)

    def _metric_families(self) -> list[Metric]:
        with self._lock:
            nodes = self.state.nodes()
            decisions = Counter(type(decision.instruction).__name__ for decision in self.state.decisions())
            hops = self.telemetry.hops_received
        by_state = GaugeMetricFamily(
            "cloudburst_nodes", "Executor nodes the service knows, by state.", labels=["state"]
        )
        for state in ("active", "draining"):
            by_state.add_metric([state], sum(1 for view in nodes.values() if view.draining == (state == "draining")))
        kinds = GaugeMetricFamily(
            "cloudburst_management_recent_decisions",
            "Scaling decisions in the recent history, by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(decisions.items()):
            kinds.add_metric([kind], count)
        return [
            by_state,
            gauge(
                "cloudburst_executor_threads",
                "Executor threads reporting.",
                sum(len(view.threads) for view in nodes.values()),
            ),
            kinds,
            counter("cloudburst_trace_hops_received", "Trace hops received from schedulers and executors.", hops),
            counter(
                "cloudburst_management_rejected_messages",
                "Malformed or unexpected messages dropped.",
                self.rejected_messages,
            ),
        ]

    # -- input -------------------------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        try:
            message = codec.decode_management_report(data)
        except DecodeError as error:
            self._rejected("report port", str(error))
            return
        if isinstance(message, TelemetryReport):
            self.telemetry.add(message, time.time())
        elif isinstance(message, ThreadStatus):
            self._feed(ThreadStatusEvent(message))
        elif isinstance(message, ExecutorStatistics):
            scheduler = message.reporter.removeprefix("scheduler:")
            if scheduler != message.reporter:
                self._feed(SchedulerStatisticsEvent(scheduler, message))
            else:
                self._feed(ExecutorStatisticsEvent(message))
        else:
            self._rejected("report port", f"a {type(message).__name__} is not a report")

    def _answer_executor_queries(self) -> None:
        for data in drain(self._executor_queries, MAX_BATCH):
            try:
                address = self._reply_gate.check(data.decode("utf-8"))
                self._push.send(address, codec.encode_string_set(tuple(self.state.nodes())), reply=True)
            except UnicodeDecodeError:
                self._rejected("executor list port", "the reply address is not UTF-8 text")
            except TransportError as error:
                self._rejected("executor list port", str(error))

    def _answer_scheduler_queries(self) -> None:
        answer = codec.encode_string_set(self.state.schedulers())
        for frames in drain_multipart(self._scheduler_queries, MAX_BATCH):
            # Any request is a question for the list (the original read none of it).
            envelope, _ = split_envelope(frames)
            try:
                self._scheduler_queries.send_multipart([*envelope, answer], zmq.NOBLOCK)
            except zmq.ZMQError as error:
                self._rejected("scheduler list port", f"could not answer: {error}")

    def _answer_drain_requests(self) -> None:
        for frames in drain_multipart(self._drain_requests, MAX_BATCH):
            envelope, body = split_envelope(frames)
            try:
                if len(body) != 1:
                    raise InvalidRequest(f"a drain request is one frame (a node's address), not {len(body)}")
                node = body[0].decode("utf-8").strip()
                drained = self.drain_node(node)
                answer: dict[str, object] = {"ok": True, "node": node, "threads": list(drained.threads)}
            except UnicodeDecodeError:
                self._rejected("drain port", "the node address is not UTF-8 text")
                answer = {"ok": False, "error": "the node address is not UTF-8 text"}
            except CloudburstError as error:
                answer = {"ok": False, "error": str(error)}
            try:
                self._drain_requests.send_multipart([*envelope, json.dumps(answer).encode()], zmq.NOBLOCK)
            except zmq.ZMQError as error:
                self._rejected("drain port", f"could not answer: {error}")

    # -- output ------------------------------------------------------------------------------------------------

    def _feed(self, event: ManagementEvent) -> None:
        for instruction in self.state.handle(event, self._clock.now()):
            self._carry_out(instruction)

    def _carry_out(self, instruction: ManagementInstruction) -> None:
        logger.info("%s: %s", type(instruction).__name__, instruction.reason)
        try:
            self._execute(instruction)
        except CloudburstError as error:
            # The policy sees the outcome in later reports (a node that never joins times out as pending).
            logger.error("could not carry out %s: %s", instruction, error)

    def _execute(self, instruction: ManagementInstruction) -> None:
        if isinstance(instruction, AddNodesInstruction):
            for node in self._provisioner.add_nodes(instruction.count):
                self._feed(NodeJoinedEvent(node))
        elif isinstance(instruction, DrainNodeInstruction):
            try:
                self._provisioner.drain(instruction.node)
            except CloudburstError:
                self._feed(DrainCancelledEvent(instruction.node))
                raise
            send_self_depart(self._push, self.ports, instruction.node, instruction.threads)
        elif isinstance(instruction, ReleaseNodeInstruction):
            self._provisioner.release(instruction.node)
        elif isinstance(instruction, DrainRefusedInstruction):
            pass  # logged by the caller; nothing to carry out
        elif isinstance(instruction, ReplicateFunctionInstruction):
            for ip, tid in instruction.candidates[: instruction.count]:
                pin = PinFunction(instruction.function, "", f"management-{uuid.uuid4().hex[:12]}")
                self._to_executor(ip, tid, pin)
        elif isinstance(instruction, DereplicateFunctionInstruction):
            for ip, tid in instruction.threads:
                self._to_executor(ip, tid, UnpinFunction(instruction.function))
        else:
            assert_never(instruction)

    def _to_executor(self, ip: str, tid: int, request: ExecutorRequest) -> None:
        self._push.send(self.ports.executor_control_endpoint(ip, tid), codec.encode_executor_request(request))


def run_management(config: ManagementConfig, provisioner: Provisioner, ready_file: Path | None = None) -> int:
    """Runs the management service in the foreground until SIGTERM or SIGINT.

    Args:
        config: The service's configuration.
        provisioner: Starts and releases nodes.
        ready_file: Written (atomically) once the sockets are bound.

    Returns:
        The process exit code: 0.

    Raises:
        TransportError: A port cannot be bound.
    """
    return serve_until_signalled(ManagementServer(config, provisioner), ready_file)
