"""Prometheus metrics of each role, served over HTTP at ``/metrics``.

Every role has its own registry (several roles may share a process in tests and local clusters) and its own port
(:class:`~cloudburst.config.RuntimePorts`: ``metrics_kvs``, ``metrics_scheduler``, ``metrics_cache``,
``metrics_executor + tid``; the management service serves its metrics beside its dashboard). A port that cannot be
bound costs the metrics, not the role: it is logged and the role runs on.

Names follow Prometheus conventions: ``cloudburst_`` prefix, ``_total`` counters, ``_seconds`` histograms.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from cloudburst.protocol.telemetry_messages import TraceHop

logger = logging.getLogger(__name__)

#: Latency buckets, in seconds: sub-millisecond calls up to slow user code.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


#: How often the HTTP thread looks for a shutdown request; closing a role waits up to this long.
_SHUTDOWN_POLL_SECONDS = 0.02


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        logger.debug("metrics: " + format, *args)


#: Labelled metric children a role keeps at hand (dropped all at once past it; names are unbounded in principle).
_MAX_CACHED_CHILDREN = 4096


class MetricsEndpoint:
    """A role's registry and the HTTP endpoint serving it.

    Args:
        host: The address to bind (the role's own).
        port: The port; 0 picks a free one.
        role: For log messages.
    """

    def __init__(self, host: str, port: int, role: str) -> None:
        self.registry = CollectorRegistry()
        self._host = host
        self._port = port
        self._role = role
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        #: ``http://host:port/metrics`` once started, else ``None``.
        self.url: str | None = None

    def start(self) -> str | None:
        """Serves the registry; returns the URL, or ``None`` when the port cannot be bound (logged)."""
        app = make_wsgi_app(self.registry)
        try:
            server = make_server(self._host, self._port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as error:
            logger.warning("%s: no metrics endpoint on %s:%d (%s)", self._role, self._host, self._port, error)
            return None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _SHUTDOWN_POLL_SECONDS},
            name=f"metrics {self._role}",
            daemon=True,
        )
        self._thread.start()
        self.url = f"http://{self._host}:{server.server_port}/metrics"
        return self.url

    def close(self) -> None:
        """Stops serving; idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class CallbackCollector(Collector):
    """Metrics read at scrape time from a role's own counters, so the hot path keeps counting in plain ints."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """What ``read`` returns now."""
        yield from self._read()


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """A counter read at scrape time (``name`` without ``_total``)."""
    return CounterMetricFamily(name, documentation, value=value)


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """A gauge read at scrape time."""
    return GaugeMetricFamily(name, documentation, value=value)


class ExecutorMetrics:
    """An executor's calls, errors and latencies, observed from the trace hops it records.

    Args:
        registry: Where the metrics live.
        pending: Reads the requests waiting at the executor now (its queue depth).
        utilization: Reads the share of the last report period spent running requests.
    """

    def __init__(
        self, registry: CollectorRegistry, pending: Callable[[], float], utilization: Callable[[], float]
    ) -> None:
        self.calls = Counter(
            "cloudburst_function_calls",
            "Function executions, by function and DAG.",
            ["function", "dag"],
            registry=registry,
        )
        self.errors = Counter(
            "cloudburst_function_errors",
            "Function executions that failed, by function and error.",
            ["function", "error"],
            registry=registry,
        )
        self.duration = Histogram(
            "cloudburst_function_duration_seconds",
            "Time running a function (argument reads included).",
            ["function"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "cloudburst_executor_queue_wait_seconds",
            "Time a DAG request waited at the executor before its function ran.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.dag_latency = Histogram(
            "cloudburst_dag_latency_seconds",
            "End-to-end time of DAG requests whose sink ran here, from the scheduler's placement.",
            ["dag"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        #: Labelled children by (function, DAG): looking them up per execution costs more than counting.
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.reads = Counter(
            "cloudburst_executor_reads",
            "Keys read by functions, by where they were served.",
            ["source"],
            registry=registry,
        )
        Gauge(
            "cloudburst_executor_pending_requests", "DAG requests waiting at the executor.", registry=registry
        ).set_function(pending)
        Gauge(
            "cloudburst_executor_utilization", "Share of the last report period spent running.", registry=registry
        ).set_function(utilization)

    def observe(self, hops: Sequence[TraceHop]) -> None:
        """Counts the executions ``hops`` record."""
        children = self._children
        for hop in hops:
            key = (hop.function, hop.dag)
            child = children.get(key)
            if child is None:
                if len(children) >= _MAX_CACHED_CHILDREN:
                    children.clear()
                child = children[key] = (self.calls.labels(*key), self.duration.labels(hop.function))
            child[0].inc()
            child[1].observe(hop.duration)
            if hop.error:
                self.errors.labels(hop.function, hop.error).inc()
            if hop.dag:
                self.queue_wait.observe(hop.queue)
                if hop.end_to_end > 0:
                    self.dag_latency.labels(hop.dag).observe(hop.end_to_end)
            for read in hop.reads:
                self.reads.labels(read.source).inc()


class SchedulerMetrics:
    """A scheduler's requests by kind, their handling time and failures.

    Args:
        registry: Where the metrics live.
        executors: Reads the executors the scheduler knows now.
        waiting: Reads the client requests not answered yet.
    """

    def __init__(
        self, registry: CollectorRegistry, executors: Callable[[], float], waiting: Callable[[], float]
    ) -> None:
        self.requests = Counter(
            "cloudburst_scheduler_requests", "Client requests, by kind.", ["kind"], registry=registry
        )
        self.failures = Counter(
            "cloudburst_scheduler_request_failures",
            "Client requests answered with an error, by kind and error.",
            ["kind", "error"],
            registry=registry,
        )
        self.handling = Histogram(
            "cloudburst_scheduler_request_duration_seconds",
            "Time to handle a client request (placement and sends; a DAG creation's pins not included).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        Gauge("cloudburst_scheduler_executors", "Executors the scheduler knows.", registry=registry).set_function(
            executors
        )
        Gauge(
            "cloudburst_scheduler_waiting_requests", "Client requests not answered yet.", registry=registry
        ).set_function(waiting)
