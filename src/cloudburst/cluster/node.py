"""One executor node: a node cache and its executors as supervised child processes.

:class:`NodeGroup` is what a local cluster runs per node and what ``cloudburst node`` runs on its own (through
:class:`NodeServer`): the cache starts first, then the executors, which use it. A crashed executor is restarted
within a budget; one that exited with code 0 has departed (a drain) and stays down, because whoever drained it
(the management service) has already stopped counting on it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import zmq

from cloudburst.cluster.child import ChildProcess
from cloudburst.cluster.serve import serve_until_signalled
from cloudburst.config import NodeConfig, RuntimePorts
from cloudburst.errors import DeadlineExceeded
from cloudburst.protocol import codec
from cloudburst.protocol.runtime_messages import ExecutorType, ThreadStatus
from cloudburst.transport.zmq import PushSocketCache

logger = logging.getLogger(__name__)

#: Seconds between two supervision rounds of a node run by ``cloudburst node``.
SUPERVISE_EVERY = 0.2
#: How much of a crashed executor's output goes into the supervisor's log.
_CRASH_LOG_TAIL = 2000


class RestartBudget:
    """Allows at most ``limit`` restarts within a sliding ``window`` of seconds (pure: time is passed in)."""

    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window = window
        self._restarts: list[float] = []

    def allow(self, now: float) -> bool:
        """Whether one more restart is allowed now; records it if so."""
        self._restarts = [t for t in self._restarts if now - t < self._window]
        if len(self._restarts) >= self._limit:
            return False
        self._restarts.append(now)
        return True


def node_outcome(exit_codes: list[int | None], given_up: set[int]) -> int | None:
    """Whether a node is over, and with which exit code, from its executors' exit codes (pure).

    Args:
        exit_codes: Each executor's exit code by tid, ``None`` while it runs.
        given_up: The tids no longer restarted (crash loops).

    Returns:
        ``None`` while some executor runs or will be restarted; 0 once every executor departed (exited with code
        0); 1 once every executor is down and some of them crashed beyond their restart budget.
    """
    if any(code is None or (code != 0 and tid not in given_up) for tid, code in enumerate(exit_codes)):
        return None
    return 0 if all(code == 0 for code in exit_codes) else 1


class NodeGroup:
    """One node's processes: its cache and its executors (by tid), with the executors' restart budgets.

    Args:
        config: The node's address, where its executors report, how many there are and their restart budget.
        workdir: Where the children's ready files and logs go.
    """

    def __init__(self, config: NodeConfig, workdir: Path) -> None:
        self.config = config
        self._workdir = workdir
        self.cache = ChildProcess(
            [
                "cache",
                "--host",
                config.host,
                "--kvs",
                config.kvs_routing,
                *(["--management", config.management] if config.management else []),
                *self._security_args(),
            ],
            workdir,
            self._name(),
        )
        self.executors: list[ChildProcess] = []
        self._budgets = [RestartBudget(config.max_restarts, config.restart_window) for _ in config.tids]
        self._cache_budget = RestartBudget(config.max_restarts, config.restart_window)
        self._cache_given_up = False
        self._given_up: set[int] = set()
        #: The cache's endpoints (``requests``, ``invalidations``, ``causal``, ...), once started.
        self.cache_endpoints: dict[str, str] = {}
        #: Set by a local provisioner's drain: no executor of the node is restarted any more, whatever its exit.
        self.draining = False
        #: Crashed executors whose loss the schedulers were told of, until they are restarted.
        self._reported: set[int] = set()
        self._loss_context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._loss_push: PushSocketCache | None = None

    def _security_args(self) -> list[str]:
        security = self.config.security
        return security.role_arguments() if security is not None else []

    def _name(self, tid: int | None = None) -> str:
        return f"cache@{self.config.host}" if tid is None else f"executor-{tid}@{self.config.host}"

    def start(self) -> None:
        """Starts the cache, then the executors, each once the previous one listens.

        Raises:
            DeadlineExceeded: A process did not start (nothing of the node is left running).
        """
        try:
            self.cache_endpoints = json.loads(self.cache.start())
            for tid in self.config.tids:
                executor = ChildProcess(self._executor_args(tid), self._workdir, self._name(tid))
                self.executors.append(executor)
                executor.start()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "node %s up: a cache and %d executors (%d GPU)",
            self.config.host,
            len(self.executors),
            self.config.gpu_executors,
        )

    def _executor_args(self, tid: int) -> list[str]:
        config, cache = self.config, self.cache_endpoints
        return [
            "executor",
            "--host",
            config.host,
            "--tid",
            str(tid),
            *(arg for scheduler in config.schedulers for arg in ("--scheduler", scheduler)),
            "--kvs",
            config.kvs_routing,
            "--cache",
            cache["requests"],
            "--cache-invalidations",
            cache["invalidations"],
            "--cache-causal",
            cache["causal"],
            "--report-period",
            str(config.report_period),
            *(["--management", config.management] if config.management else []),
            *(["--gpu"] if config.is_gpu(tid) else []),
            *self._security_args(),
        ]

    def supervise(self, now: float) -> list[int]:
        """Restarts the executors that crashed, within their budgets; call it periodically.

        Args:
            now: Monotonic time, in seconds.

        Returns:
            The tids of the executors restarted now.
        """
        self._supervise_cache(now)
        restarted = []
        # Exit code 0 is a finished departure (a drain), not a crash: it is not undone; nor is a draining node's
        # executor brought back.
        crashed = [
            (tid, executor, code)
            for tid, executor in enumerate(self.executors)
            if (code := executor.exit_code()) is not None and code != 0 and not self.draining
        ]
        for tid, _, _ in crashed:
            if tid not in self._given_up and tid not in self._reported:
                self._report_loss(tid)
        for tid, executor, code in crashed:
            if tid in self._given_up:
                continue
            name, tail = executor.name, executor.log_text()[-_CRASH_LOG_TAIL:]
            if not self._budgets[tid].allow(now):
                self._given_up.add(tid)
                logger.error("%s keeps crashing (exit code %s); not restarting it again:\n%s", name, code, tail)
                continue
            logger.warning("%s exited with code %s; restarting it. Its output ends with:\n%s", name, code, tail)
            executor.stop()
            self._reported.discard(tid)
            executor.start()
            restarted.append(tid)
        return restarted

    def _report_loss(self, tid: int) -> None:
        """Tells the schedulers at once that executor ``tid``'s process died, as its last status would have (not
        running): the requests it held run again elsewhere now, not after its restart and first report."""
        if self._loss_push is None:
            self._loss_context = zmq.Context()
            self._loss_push = PushSocketCache(self._loss_context, linger_ms=0, security=self.config.security)
        kind = ExecutorType.GPU if self.config.is_gpu(tid) else ExecutorType.CPU
        notice = codec.encode_scheduler_message(
            ThreadStatus(self.config.host, tid, running=False, type=kind, crashed=True)
        )
        for scheduler in self.config.schedulers:
            self._loss_push.send(RuntimePorts().scheduler_internal_endpoint(scheduler), notice)
        self._reported.add(tid)

    def _supervise_cache(self, now: float) -> None:
        """Restarts a crashed cache on its ports; executors reconnect by themselves.

        Nothing acknowledged is lost with it (writes go through to the KVS before they are acknowledged), and the
        executors drop their local copies when the new cache's invalidation stream starts over.
        """
        code = self.cache.exit_code()
        if code is None or self.draining or self._cache_given_up:
            return
        tail = self.cache.log_text()[-_CRASH_LOG_TAIL:]
        if not self._cache_budget.allow(now):
            self._cache_given_up = True
            logger.error("%s keeps crashing (exit code %s); not restarting it again:\n%s", self.cache.name, code, tail)
            return
        logger.warning("%s exited with code %s; restarting it. Its output ends with:\n%s", self.cache.name, code, tail)
        self.cache.stop()
        try:
            self.cache_endpoints = json.loads(self.cache.start())
        except DeadlineExceeded as error:
            logger.error("%s did not come back: %s", self.cache.name, error)  # tried again next time, within budget

    def outcome(self) -> int | None:
        """The node's exit code once it is over (see :func:`node_outcome`), else ``None``."""
        return node_outcome([executor.exit_code() for executor in self.executors], self._given_up)

    def departed(self) -> bool:
        """Whether every executor has exited."""
        return all(executor.exit_code() is not None for executor in self.executors)

    def terminate_executors(self) -> None:
        """Asks every executor to stop without waiting, so that several nodes stop in parallel."""
        for executor in self.executors:
            executor.terminate()

    def stop(self) -> None:
        """Stops the executors, then the cache."""
        for executor in self.executors:
            executor.stop()
        self.cache.stop()
        if self._loss_push is not None and self._loss_context is not None:
            self._loss_push.close()
            self._loss_context.term()
            self._loss_push = self._loss_context = None

    def pids(self) -> list[int]:
        """The running processes: the cache, then the executors by tid."""
        return [child.pid for child in (self.cache, *self.executors) if child.running()]

    def executor_pids(self) -> list[int]:
        """The executors' process ids, by tid."""
        return [executor.pid for executor in self.executors]


class NodeServer:
    """``cloudburst node``: a node group in the foreground, supervised until it is stopped or has drained.

    Its processes start on construction, as a server's sockets bind on construction.

    Args:
        config: The node.
        workdir: Where the children's ready files and logs go; ``None``: a temporary directory removed on close.

    Raises:
        DeadlineExceeded: A process of the node did not start (nothing of the node is left running).
    """

    def __init__(self, config: NodeConfig, workdir: Path | None = None) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="cloudburst-node-")
            workdir = Path(self._scratch.name)
        self.workdir = workdir
        self.group = NodeGroup(config, workdir)
        self._stopping = False
        try:
            self.group.start()
        except BaseException:
            self._cleanup()
            raise

    def ready_info(self) -> str:
        """The node's address, its cache's endpoints and its executors' tids, as JSON."""
        return json.dumps(
            {
                "host": self.group.config.host,
                "cache": self.group.cache_endpoints,
                "executors": list(self.group.config.tids),
            }
        )

    def serve_forever(self) -> int:
        """Supervises the executors until :meth:`stop`, or until none is left to run.

        Returns:
            0 when stopped or once every executor has departed; 1 once every executor is down and some crashed
            beyond their restart budget (a node that cannot run functions should be seen as failed).
        """
        while not self._stopping:
            self.group.supervise(time.monotonic())
            outcome = self.group.outcome()
            if outcome is not None:
                if outcome == 0:
                    logger.info("every executor of node %s has departed; the node exits", self.group.config.host)
                else:
                    logger.error("no executor of node %s is left running; the node exits", self.group.config.host)
                return outcome
            time.sleep(SUPERVISE_EVERY)
        return 0

    def stop(self) -> None:
        """Makes :meth:`serve_forever` return; safe from a signal handler."""
        self._stopping = True

    def close(self) -> None:
        """Stops what is left of the node and removes the temporary work directory."""
        self.group.terminate_executors()
        self._cleanup()

    def _cleanup(self) -> None:
        self.group.stop()
        if self._scratch is not None:
            self._scratch.cleanup()


def run_node(config: NodeConfig, workdir: Path | None = None, ready_file: Path | None = None) -> int:
    """Runs a node in the foreground until SIGTERM or SIGINT, or until all its executors have departed.

    Args:
        config: The node.
        workdir: Where the children's logs go; ``None``: a temporary directory removed on exit.
        ready_file: Written once the cache and every executor listen.

    Returns:
        The process exit code (see :meth:`NodeServer.serve_forever`).

    Raises:
        DeadlineExceeded: A process of the node did not start.
    """
    return serve_until_signalled(NodeServer(config, workdir), ready_file)
