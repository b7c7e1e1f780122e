"""The management service's shell: reports in, scaling actions out, around :class:`ManagementState`.

Executors send the management service the status and statistics reports they send their schedulers (the same
``SchedulerMessage`` envelope, on the management port). Once a second the loop ticks the state and carries out
what it decides: nodes come from and go back to a :class:`Provisioner` (local node process groups, or a
Kubernetes workload), replicas are pinned and unpinned by messages to the executors themselves. A new replica
needs no acknowledgement here: it shows in the executor's next status report, to the schedulers as to us.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol, assert_never

import zmq

from cloudburst.clock import Clock, SystemClock
from cloudburst.config import RuntimePorts
from cloudburst.errors import CloudburstError, DecodeError, TransportError
from cloudburst.management.policy import (
    AddNodesInstruction,
    DereplicateFunctionInstruction,
    DrainNodeInstruction,
    ManagementPolicyConfig,
    ReplicateFunctionInstruction,
)
from cloudburst.management.state import (
    ExecutorStatisticsEvent,
    ManagementEvent,
    ManagementInstruction,
    ManagementState,
    ManagementTickEvent,
    NodeDrainedEvent,
    NodeJoinedEvent,
    SchedulerStatisticsEvent,
    ThreadStatusEvent,
)
from cloudburst.protocol import codec
from cloudburst.protocol.runtime_messages import (
    ExecutorRequest,
    ExecutorStatistics,
    PinFunction,
    ThreadStatus,
    UnpinFunction,
)
from cloudburst.transport.guard import RejectLog
from cloudburst.transport.zmq import PushSocketCache, bind, drain, pull_socket

logger = logging.getLogger(__name__)

#: Seconds between ticks of the state.
TICK_INTERVAL = 1.0
#: Reports taken per turn.
MAX_BATCH = 512
#: Largest report accepted.
MAX_MESSAGE_BYTES = 4 * 2**20


class Provisioner(Protocol):
    """Where nodes (a node cache and its executors) come from and go back to."""

    def add_nodes(self, count: int) -> list[str]:
        """Starts ``count`` nodes; returns their addresses once they are up."""
        ...

    def drain(self, node: str) -> None:
        """Asks ``node``'s executors to depart: no new work, finish what they hold, exit."""
        ...

    def finished_drains(self) -> list[str]:
        """Nodes whose drain has completed since the last call (their machines are released)."""
        ...


class ManagementServer:
    """The management service: one report socket, one loop.

    Args:
        host: Where to bind the report port.
        provisioner: Starts and releases nodes.
        ports: The deployment's port layout (the report port and the executors' control ports).
        config: The scaling policies' thresholds.
        clock: Time source.

    Raises:
        TransportError: The report port cannot be bound.
    """

    def __init__(
        self,
        host: str,
        provisioner: Provisioner,
        *,
        ports: RuntimePorts | None = None,
        config: ManagementPolicyConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.host = host
        self.ports = ports or RuntimePorts()
        self.state = ManagementState(config or ManagementPolicyConfig())
        self._provisioner = provisioner
        self._clock = clock or SystemClock()
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._push = PushSocketCache(self._context)
        self._rejected = RejectLog()
        self._reports = pull_socket(self._context, MAX_MESSAGE_BYTES)
        try:
            self.report_address = f"tcp://{host}:{bind(self._reports, host, self.ports.management)}"
        except TransportError:
            self._reports.close()
            self._push.close()
            self._context.term()
            raise
        self._stopping = False
        self._closed = False

    @property
    def rejected_messages(self) -> int:
        """How many malformed or unexpected reports were dropped."""
        return self._rejected.total

    def stop(self) -> None:
        """Asks :meth:`serve_forever` to return; safe from another thread or a signal handler."""
        self._stopping = True

    def serve_forever(self) -> None:
        """Takes reports and ticks the policies until :meth:`stop`."""
        logger.info("management serving: reports on %s", self.report_address)
        last_tick = self._clock.now()
        while not self._stopping:
            if self._reports.poll(int(TICK_INTERVAL * 100)):
                for data in drain(self._reports, MAX_BATCH):
                    self._receive(data)
            now = self._clock.now()
            if now - last_tick >= TICK_INTERVAL:
                last_tick = now
                self.tick()

    def tick(self) -> None:
        """Learns of finished drains, then runs the policies and carries out their decisions."""
        for node in self._provisioner.finished_drains():
            self._feed(NodeDrainedEvent(node))
        self._feed(ManagementTickEvent())

    def close(self) -> None:
        """Closes the sockets; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._reports.close()
        self._push.close()
        self._context.term()

    def _receive(self, data: bytes) -> None:
        try:
            message = codec.decode_scheduler_message(data)
        except DecodeError as error:
            self._rejected("report port", str(error))
            return
        if isinstance(message, ThreadStatus):
            self._feed(ThreadStatusEvent(message))
        elif isinstance(message, ExecutorStatistics):
            scheduler = message.reporter.removeprefix("scheduler:")
            if scheduler != message.reporter:
                self._feed(SchedulerStatisticsEvent(scheduler, message))
            else:
                self._feed(ExecutorStatisticsEvent(message))
        else:
            self._rejected("report port", f"a {type(message).__name__} is not a report")

    def _feed(self, event: ManagementEvent) -> None:
        for instruction in self.state.handle(event, self._clock.now()):
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
            self._provisioner.drain(instruction.node)
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
