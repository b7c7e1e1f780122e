"""What the management service keeps to show people: request traces, recent errors, cache figures, and per-second
series of calls and latencies. Pure: reports and the wall-clock time in, views out.

Everything is bounded, so a busy cluster costs a fixed amount of memory: the most recent :data:`MAX_TRACES`
requests keep their hops, the most recent :data:`MAX_ERRORS` failed steps are listed, and the series keep
:data:`SERIES_SECONDS` one-second points for at most :data:`MAX_SERIES_NAMES` DAGs and as many functions.

DAG figures come from the hops of their sinks (which carry the request's end-to-end time, measured from the
scheduler's placement) and of failed steps; function figures from every executor hop. Both therefore include
direct calls that never passed a scheduler.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cloudburst.protocol.telemetry_messages import PLACING_ROLES, CacheReport, TelemetryReport, TraceHop

#: Requests whose hops are kept.
MAX_TRACES = 20_000
#: Hops kept per request (a MULTIEXEC or batched request could produce many).
MAX_HOPS_PER_TRACE = 128
#: Failed steps listed.
MAX_ERRORS = 200
#: One-second points kept per series.
SERIES_SECONDS = 300
#: DAGs, and functions, with series.
MAX_SERIES_NAMES = 256
#: Latency samples kept per name and second (the count stays exact).
MAX_SAMPLES_PER_SECOND = 2_000
#: Seconds of the window the function table's rates and percentiles cover.
FUNCTION_WINDOW = 10
#: Seconds after which a cache's last report no longer describes it.
CACHE_REPORT_TTL = 30.0


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One second of a DAG's or function's figures.

    Attributes:
        t: The second's start, wall-clock seconds since the epoch.
        calls: Requests (or executions) that ended in it.
        p50: Median latency of those with a sample, in seconds; ``None`` without samples.
        p99: 99th percentile, likewise.
    """

    t: float
    calls: int
    p50: float | None
    p99: float | None


@dataclass(slots=True)
class _Second:
    calls: int = 0
    samples: list[float] = field(default_factory=list)

    def add(self, latency: float | None) -> None:
        self.calls += 1
        if latency is not None and len(self.samples) < MAX_SAMPLES_PER_SECOND:
            self.samples.append(latency)


class _Series:
    """Per-second buckets of one name, the newest last."""

    def __init__(self) -> None:
        self.seconds: OrderedDict[int, _Second] = OrderedDict()

    def add(self, second: int, latency: float | None) -> None:
        bucket = self.seconds.get(second)
        if bucket is None:
            late = bool(self.seconds) and second < next(reversed(self.seconds))
            bucket = self.seconds[second] = _Second()
            if late:
                # A late report: keep the buckets in time order.
                self.seconds = OrderedDict(sorted(self.seconds.items()))
            while len(self.seconds) > SERIES_SECONDS:
                self.seconds.popitem(last=False)
        bucket.add(latency)

    def points(self, until: int) -> list[SeriesPoint]:
        """The complete seconds from the first kept one up to ``until`` (excluded); quiet seconds count zero calls."""
        out: list[SeriesPoint] = []
        previous: int | None = None
        for second, bucket in self.seconds.items():
            if second >= until:
                break
            if previous is not None:
                out.extend(_quiet(previous + 1, second))
            out.append(SeriesPoint(float(second), bucket.calls, *_percentiles(bucket.samples)))
            previous = second
        if previous is not None:
            out.extend(_quiet(previous + 1, min(until, previous + 1 + SERIES_SECONDS)))
        return out[-SERIES_SECONDS:]

    def window(self, since: int, until: int) -> tuple[int, list[float]]:
        calls = 0
        samples: list[float] = []
        for second, bucket in self.seconds.items():
            if since <= second < until:
                calls += bucket.calls
                samples.extend(bucket.samples)
        return calls, samples


def _quiet(first: int, until: int) -> list[SeriesPoint]:
    return [SeriesPoint(float(second), 0, None, None) for second in range(first, until)]


def _percentiles(samples: Sequence[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    ordered = sorted(samples)
    return _rank(ordered, 0.50), _rank(ordered, 0.99)


def _rank(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of sorted samples."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One recent request, as the list of requests shows it."""

    request_id: str
    name: str
    start: float
    hops: int
    duration: float
    ok: bool


@dataclass(frozen=True, slots=True)
class FunctionFigures:
    """A function's executions over the last :data:`FUNCTION_WINDOW` seconds."""

    name: str
    calls_per_second: float
    p50: float | None
    p99: float | None


class TelemetryStore:
    """The management service's memory of requests and caches."""

    def __init__(self) -> None:
        self._traces: OrderedDict[str, list[TraceHop]] = OrderedDict()
        self._errors: deque[TraceHop] = deque(maxlen=MAX_ERRORS)
        self._caches: dict[str, tuple[CacheReport, float]] = {}
        self._dags: OrderedDict[str, _Series] = OrderedDict()
        self._functions: OrderedDict[str, _Series] = OrderedDict()
        #: Each DAG's functions in placement order, from its latest scheduler hop.
        self._dag_functions: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: Hops received, in all.
        self.hops_received = 0

    # -- input -------------------------------------------------------------------------------------------------

    def add(self, report: TelemetryReport, now: float) -> None:
        """Takes one report, received at wall-clock time ``now``."""
        if report.cache is not None:
            self._caches[report.cache.node] = (report.cache, now)
        for hop in report.hops:
            self._add_hop(hop)

    def _add_hop(self, hop: TraceHop) -> None:
        self.hops_received += 1
        hops = self._traces.get(hop.request_id)
        if hops is None:
            hops = self._traces[hop.request_id] = []
            while len(self._traces) > MAX_TRACES:
                self._traces.popitem(last=False)
        else:
            self._traces.move_to_end(hop.request_id)
        if len(hops) < MAX_HOPS_PER_TRACE:
            hops.append(hop)
        if hop.error:
            self._errors.append(hop)
        if hop.role in PLACING_ROLES and hop.dag:
            self._dag_functions[hop.dag] = placed_functions(hop)
            self._dag_functions.move_to_end(hop.dag)
            while len(self._dag_functions) > MAX_SERIES_NAMES:
                self._dag_functions.popitem(last=False)
        if hop.role != "executor":
            return
        end = int(hop.start + hop.duration)
        if hop.function:
            _series(self._functions, hop.function).add(end, hop.duration)
        if hop.dag and (hop.end_to_end > 0 or hop.error):
            _series(self._dags, hop.dag).add(end, hop.end_to_end if not hop.error else None)

    # -- views -------------------------------------------------------------------------------------------------

    def trace(self, request_id: str) -> tuple[TraceHop, ...] | None:
        """The hops of ``request_id`` in start order; ``None`` if it is unknown (or too old to be kept)."""
        hops = self._traces.get(request_id)
        if hops is None:
            return None
        return tuple(sorted(hops, key=lambda hop: (hop.start, hop.role not in PLACING_ROLES)))

    def recent_traces(self, count: int = 30) -> list[TraceSummary]:
        """The ``count`` requests heard of last, newest first."""
        out: list[TraceSummary] = []
        for request_id in reversed(self._traces):
            if len(out) >= count:
                break
            out.append(summarize(request_id, self._traces[request_id]))
        return out

    def errors(self) -> tuple[TraceHop, ...]:
        """The most recent failed steps, newest first."""
        return tuple(reversed(self._errors))

    def caches(self, now: float) -> Mapping[str, CacheReport]:
        """Each node cache's latest figures, if reported in the last :data:`CACHE_REPORT_TTL` seconds."""
        return {node: report for node, (report, at) in self._caches.items() if now - at <= CACHE_REPORT_TTL}

    def dag_series(self, now: float) -> dict[str, list[SeriesPoint]]:
        """Each DAG's one-second points up to (not including) the current second."""
        return {name: series.points(int(now)) for name, series in self._dags.items()}

    def dag_functions(self, dag: str) -> tuple[str, ...]:
        """The functions of ``dag`` in the order its scheduler placed them; empty if no placement was seen."""
        return self._dag_functions.get(dag, ())

    def function_figures(self, now: float) -> dict[str, FunctionFigures]:
        """Each function's rate and latency percentiles over the last complete :data:`FUNCTION_WINDOW` seconds."""
        until = int(now)
        out: dict[str, FunctionFigures] = {}
        for name, series in self._functions.items():
            calls, samples = series.window(until - FUNCTION_WINDOW, until)
            out[name] = FunctionFigures(name, calls / FUNCTION_WINDOW, *_percentiles(samples))
        return out


def _series(table: OrderedDict[str, _Series], name: str) -> _Series:
    series = table.get(name)
    if series is None:
        series = table[name] = _Series()
        while len(table) > MAX_SERIES_NAMES:
            table.popitem(last=False)  # the name heard of first goes first
    return series


def placed_functions(hop: TraceHop) -> tuple[str, ...]:
    """The functions a placing hop placed, in order (its detail reads ``"f -> 10.0.0.5:0, g -> ..."``)."""
    return tuple(part.partition(" -> ")[0] for part in hop.detail.split(", ") if " -> " in part)


def summarize(request_id: str, hops: Iterable[TraceHop]) -> TraceSummary:
    """One line about a request: what it ran, when, how many steps, how long from first start to last end."""
    hops = list(hops)
    start = min(hop.start for hop in hops)
    end = max(hop.start + hop.duration for hop in hops)
    names = [hop.dag for hop in hops if hop.dag] or [hop.function for hop in hops if hop.function]
    return TraceSummary(
        request_id,
        names[0] if names else "",
        start,
        len(hops),
        end - start,
        all(hop.ok for hop in hops),
    )
