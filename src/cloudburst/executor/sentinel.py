"""The executor's sentinel: a thread that keeps watch while user code holds the executor's loop.

User code runs inline on the loop's thread, so while it runs nothing else there happens. The sentinel:

* takes cancellations on the executor's cancel port and hands them to the :class:`Interrupter`, which stops the
  running invocation if it serves the request, and remembers them so queued work for the request never starts;
* stops the running invocation once it is past its deadline;
* ends the process when an interrupted invocation has not stopped within the grace period (code stuck in C);
  the node's supervisor restarts the executor, as after any crash;
* reports the executor's last status to its schedulers every report period while an invocation runs, so a long
  call does not make the executor look dead (it used to drop out of ``cloudburst status``).
"""

from __future__ import annotations

import logging
import os
import threading

import zmq

from cloudburst.clock import Clock
from cloudburst.config import ExecutorConfig
from cloudburst.errors import CloudburstError, DecodeError
from cloudburst.executor.interrupts import Interrupter
from cloudburst.protocol import codec
from cloudburst.protocol.runtime_messages import ThreadStatus
from cloudburst.transport.guard import RejectLog
from cloudburst.transport.zmq import PushSocketCache, bind, pull_socket

logger = logging.getLogger(__name__)

#: The exit code of an executor ended because interrupted user code did not stop.
STUCK_EXIT_CODE = 75
#: How often the sentinel looks (seconds): the resolution of deadlines and of the grace period.
WATCH_EVERY = 0.05
#: Largest accepted cancellation message.
MAX_CANCEL_BYTES = 64 * 1024


class Sentinel:
    """See the module docstring.

    Args:
        config: The executor's configuration (its cancel port, report period and grace period).
        context: The ZeroMQ context the sentinel's sockets are made in.
        interrupter: Where invocations and interruptions meet.
        clock: Time source (monotonic for the grace period, wall for deadlines).
        may_exit: End the process when interrupted code does not stop (only for an executor that is a process of
            its own; otherwise the stuck invocation is only logged).

    Raises:
        TransportError: The cancel port cannot be bound.
    """

    def __init__(
        self,
        config: ExecutorConfig,
        context: zmq.Context[zmq.Socket[bytes]],
        interrupter: Interrupter,
        clock: Clock,
        *,
        may_exit: bool = False,
    ) -> None:
        self._config = config
        self._may_exit = may_exit
        self._warned_stuck = False
        self._interrupter = interrupter
        self._clock = clock
        self._rejected = RejectLog()
        self._cancels = pull_socket(context, MAX_CANCEL_BYTES, config.security)
        try:
            bind(self._cancels, config.host, config.ports.executor_cancel + config.tid, "the executor's cancel port")
        except BaseException:
            self._cancels.close()
            raise
        self._push = PushSocketCache(context, security=config.security)
        self._lock = threading.Lock()
        self._status: ThreadStatus | None = None
        self._schedulers: tuple[str, ...] = ()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cloudburst-sentinel", daemon=True)

    def start(self) -> None:
        """Starts watching."""
        self._thread.start()

    def publish(self, status: ThreadStatus, schedulers: tuple[str, ...]) -> None:
        """The executor's latest status and schedulers, reported while user code holds the loop."""
        with self._lock:
            self._status = status
            self._schedulers = schedulers

    def close(self) -> None:
        """Stops watching and closes the sentinel's sockets."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._cancels.close()
        self._push.close()

    def _watch(self) -> None:
        poller = zmq.Poller()
        poller.register(self._cancels, zmq.POLLIN)
        last_report = self._clock.now()
        while not self._stopping.is_set():
            if poller.poll(int(WATCH_EVERY * 1000)):
                self._take_cancellations()
            now = self._clock.now()
            self._interrupter.expire(self._clock.wall_ns() / 1e9, now)
            stuck = self._interrupter.stuck_since()
            if stuck is not None and now - stuck > self._config.stop_grace:
                self._stuck()
            if self._interrupter.busy_since() is not None and now - last_report >= self._config.report_period:
                self._report()
                last_report = now
            elif self._interrupter.busy_since() is None:
                last_report = now

    def _stuck(self) -> None:
        where = f"executor {self._config.host}:{self._config.tid}"
        if self._may_exit:
            logger.error(
                "%s: interrupted user code did not stop within %g s; exiting so that it restarts",
                where,
                self._config.stop_grace,
            )
            logging.shutdown()
            os._exit(STUCK_EXIT_CODE)
        if not self._warned_stuck:
            self._warned_stuck = True
            logger.error("%s: interrupted user code did not stop within %g s", where, self._config.stop_grace)

    def _take_cancellations(self) -> None:
        while True:
            try:
                data = self._cancels.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                request = codec.decode_cancel_request(data)
            except DecodeError as error:
                self._rejected("cancel port", str(error))
                continue
            if self._interrupter.cancel(request.request_id, self._clock.now()):
                logger.info("stopping the invocation of cancelled request %s", request.request_id)

    def _report(self) -> None:
        with self._lock:
            status, schedulers = self._status, self._schedulers
        if status is None:
            return
        data = codec.encode_scheduler_message(status)
        for host in schedulers:
            try:
                self._push.send(self._config.ports.scheduler_internal_endpoint(host), data)
            except CloudburstError as error:
                self._rejected(f"a status for {host}", str(error))
