"""Chaos for tests and benchmarks: a mixed load of DAG requests and one-shot calls from several client threads,
while a killer thread sends SIGKILL to the processes of a local cluster.

The load checks every result against the value it must have and records how each request ended and when, so a
test can demand that every request ended correctly and before its deadline, and a benchmark can report throughput
and tail latency with and without failures.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cloudburst.client.connection import Connection
from cloudburst.client.future import Future
from cloudburst.cluster.local import LocalCluster
from cloudburst.errors import CloudburstError, ExecutorLost

#: The 3-stage DAG and the one-shot function the load calls (see :func:`register_workload`).
PIPELINE = "chaos_pipeline"
SQUARE = "chaos_square"
_BASE_KEY = "chaos/base"
_BASE = 1000


def register_workload(connection: Connection, retries: int | None = None, work: float = 0.0) -> None:
    """Registers the load's functions: a DAG reading a key, doubling and subtracting one, and a one-shot square.

    Args:
        connection: Where to register them.
        retries: Their retry budget (``None``: the default; 0: they must not run twice).
        work: Seconds the middle stage and the one-shot function sleep, so that kills find work running.
    """

    def double(lib: object, x: int) -> int:
        time.sleep(work)
        return x * 2

    def square(lib: object, x: int) -> int:
        time.sleep(work)
        return x * x

    connection.put_object(_BASE_KEY, _BASE)
    connection.register(lambda lib, x: lib.get(_BASE_KEY) + x, "chaos_read", retries=retries)
    connection.register(double, "chaos_double", retries=retries)
    connection.register(lambda lib, x: x - 1, "chaos_less", retries=retries)
    connection.register(square, SQUARE, retries=retries)
    stages = ["chaos_read", "chaos_double", "chaos_less"]
    connection.register_dag(PIPELINE, stages, [(stages[0], stages[1]), (stages[1], stages[2])])


@dataclass
class LoadOutcome:
    """How the requests of a load ended.

    Attributes:
        outcomes: Per outcome (``correct``, ``wrong``, an error's class name, ``refused: <error>``), how many.
        latencies: Seconds from sending to the end, per request that ended.
        late: Per request that ended after its deadline, by how much (seconds).
        lost: Per ``ExecutorLost``, the error and when it was raised (monotonic seconds).
        wrong: The first wrong results, as ``(expected, got)``.
    """

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    lost: list[tuple[ExecutorLost, float]] = field(default_factory=list)
    wrong: list[tuple[object, object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ended(self) -> int:
        """Requests that ended so far."""
        return sum(self.outcomes.values())

    def _record(self, outcome: str, latency: float | None, overrun: float, expected: object, got: object) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if latency is not None:
                self.latencies.append(latency)
            if overrun > 0:
                self.late.append(overrun)
            if outcome == "wrong" and len(self.wrong) < 20:
                self.wrong.append((expected, got))


def run_load(
    connection: Connection,
    threads: int,
    requests_per_thread: int | None,
    *,
    deadline: float,
    window: int = 8,
    retries: int | None = None,
    until: threading.Event | None = None,
    tally: LoadOutcome | None = None,
) -> LoadOutcome:
    """Sends DAG requests and one-shot calls, alternating, from ``threads`` threads, ``window`` in flight each.

    Args:
        connection: The connection all threads share.
        threads: Client threads.
        requests_per_thread: Requests each thread sends (half of each kind); ``None``: until ``until`` is set.
        deadline: Each request's deadline, in seconds from its sending.
        window: Requests each thread keeps in flight.
        retries: The requests' retry budget (as registered).
        until: Stops the load when set (with ``requests_per_thread`` ``None``).
        tally: Where to record how requests end (a new one by default), for others to follow the progress.

    Returns:
        How the requests ended.
    """
    tally = tally if tally is not None else LoadOutcome()

    def settle(future: Future, expected: int, sent: float, due: float) -> None:
        try:
            value = future.result(timeout=max(0.0, due - time.time()) + 1.0)
        except ExecutorLost as error:
            with tally._lock:
                tally.lost.append((error, time.monotonic()))
            tally._record("ExecutorLost", None, time.time() - due, expected, error)
            return
        except CloudburstError as error:
            tally._record(type(error).__name__, None, time.time() - due, expected, error)
            return
        ended = time.monotonic()
        tally._record("correct" if value == expected else "wrong", ended - sent, time.time() - due, expected, value)

    def client(thread: int) -> None:
        in_flight: deque[tuple[Future, int, float, float]] = deque()
        sent_count = 0
        while (requests_per_thread is None and not (until is not None and until.is_set())) or (
            requests_per_thread is not None and sent_count < requests_per_thread
        ):
            x = thread * 1_000_000 + sent_count
            due, sent = time.time() + deadline, time.monotonic()
            try:
                if sent_count % 2 == 0:
                    call = connection.build_dag_call(PIPELINE, {"chaos_read": x}, retries=retries)
                    future, expected = connection.call_dag(call, timeout=deadline), (_BASE + x) * 2 - 1
                else:
                    future, expected = connection.call(SQUARE, x, retries=retries, timeout=deadline), x * x
            except CloudburstError as refused:
                tally._record(f"refused: {type(refused).__name__}", None, 0.0, None, refused)
            else:
                in_flight.append((future, expected, sent, due))
            sent_count += 1
            if len(in_flight) >= window:
                settle(*in_flight.popleft())
        while in_flight:
            settle(*in_flight.popleft())

    workers = [threading.Thread(target=client, args=(t,), name=f"chaos-client-{t}") for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return tally


@dataclass
class ProcessKiller:
    """Sends SIGKILL to a random executor of ``cluster`` every ``every`` seconds, and to other roles once each
    when asked (``once``: the moments, as fractions of ``progress_total`` reached by ``progress``).

    Attributes:
        kills: Per kill, when (monotonic seconds) and what (``executor <ip>:<tid>``, ``cache``, ``scheduler``).
    """

    cluster: LocalCluster
    every: float
    progress: Callable[[], int] = lambda: 0
    progress_total: int = 1
    once: dict[str, float] = field(default_factory=dict)
    seed: int = 7
    kills: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts killing, from a thread."""
        self._thread = threading.Thread(target=self._run, name="chaos-killer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops killing (the cluster's supervisor brings the last victims back)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        rng = random.Random(self.seed)
        host = self.cluster.config.host
        pending = dict(self.once)
        while not self._stop.wait(self.every):
            pids = self.cluster.executor_pids()
            tid = rng.randrange(len(pids))
            self._kill(pids[tid], f"executor {host}:{tid}")
            done = self.progress() / max(1, self.progress_total)
            for role, at in list(pending.items()):
                if done >= at:
                    del pending[role]
                    pid = self.cluster.node_pids(host)[0] if role == "cache" else self.cluster.scheduler_pids()[0]
                    self._kill(pid, role)

    def _kill(self, pid: int, what: str) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return  # dead already, being restarted
        self.kills.append((time.monotonic(), what))
