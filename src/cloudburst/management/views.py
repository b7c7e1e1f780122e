"""The dashboard's JSON views of the management service's state and telemetry. Pure: values in, JSON-able dicts out.

Times in the views are wall-clock seconds since the epoch and durations milliseconds (rounded to the
microsecond), as the page and ``cloudburst trace`` show them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cloudburst.management.state import ManagementState
from cloudburst.management.telemetry import TelemetryStore, summarize
from cloudburst.protocol.telemetry_messages import TraceHop


def trace_view(request_id: str, hops: Sequence[TraceHop]) -> dict[str, object]:
    """One request's trace as ``/api/traces/<id>`` answers it."""
    summary = summarize(request_id, hops)
    return {
        "request_id": request_id,
        "name": summary.name,
        "ok": summary.ok,
        "duration_ms": _ms(summary.duration),
        "hops": [hop_view(hop) for hop in hops],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def hop_view(hop: TraceHop) -> dict[str, object]:
    """One hop as the trace JSON shows it."""
    return {
        "role": hop.role,
        "node": hop.node,
        "function": hop.function or None,
        "dag": hop.dag or None,
        "start": hop.start,
        "duration_ms": _ms(hop.duration),
        "queue_ms": _ms(hop.queue) if hop.role == "executor" and hop.dag else None,
        "end_to_end_ms": _ms(hop.end_to_end) if hop.end_to_end else None,
        "ok": hop.ok,
        "error": f"{hop.error}: {hop.message}" if hop.error else None,
        "traceback": hop.traceback or None,
        "detail": hop.detail,
        "stages": hop.stages,
        "reads": [
            {"key": read.key, "source": read.source, "hit": read.hit, "version": read.version} for read in hop.reads
        ],
    }


def cluster_view(state: ManagementState, telemetry: TelemetryStore, wall: float, now: float) -> dict[str, object]:
    """The dashboard's view of the cluster: the state's nodes, threads and decisions, and the telemetry.

    Args:
        state: The management state.
        telemetry: The telemetry store.
        wall: Wall-clock seconds now (series and traces are in wall time).
        now: The state's monotonic time now (decisions are stamped with it).
    """
    nodes = state.nodes()
    caches = telemetry.caches(wall)
    replicas: Counter[str] = Counter()
    node_views = []
    for address, view in sorted(nodes.items()):
        executors = []
        for thread in sorted(view.threads, key=lambda t: t.tid):
            replicas.update(thread.functions)
            executors.append(
                {
                    "tid": thread.tid,
                    "kind": thread.type.name.lower(),
                    "utilization": round(thread.utilization, 4),
                    "running": thread.running,
                    "functions": list(thread.functions),
                }
            )
        cache = caches.get(address)
        node_views.append(
            {
                "address": address,
                "state": "draining" if view.draining else "active",
                "cache": None
                if cache is None
                else {
                    "hits": cache.hits,
                    "misses": cache.misses,
                    "hit_ratio": cache.hits / (cache.hits + cache.misses) if cache.hits + cache.misses else None,
                    "keys": cache.keys,
                    "bytes": cache.bytes,
                },
                "executors": executors,
            }
        )
    figures = telemetry.function_figures(wall)
    functions = [
        {
            "name": name,
            "replicas": replicas.get(name, 0),
            "calls_per_s": round(f.calls_per_second, 3) if (f := figures.get(name)) else 0.0,
            "p50_ms": _ms(f.p50) if f else None,
            "p99_ms": _ms(f.p99) if f else None,
        }
        for name in sorted(replicas.keys() | figures.keys())
    ]
    dags = []
    for name, points in sorted(telemetry.dag_series(wall).items()):
        recent = [point for point in points[-10:] if point.calls]
        latest = points[-1] if points else None
        dags.append(
            {
                "name": name,
                "functions": list(telemetry.dag_functions(name)),
                "calls_per_s": round(sum(point.calls for point in points[-10:]) / 10, 3),
                "p50_ms": _ms(recent[-1].p50) if recent else None,
                "p99_ms": _ms(recent[-1].p99) if recent else None,
                "last_point": latest.t if latest else None,
                "series": [
                    {"t": point.t, "calls_per_s": point.calls, "p50_ms": _ms(point.p50), "p99_ms": _ms(point.p99)}
                    for point in points
                ],
            }
        )
    return {
        "generated_at": wall,
        "autoscale": state.autoscale,
        "schedulers": list(state.schedulers()),
        "nodes": node_views,
        "functions": functions,
        "dags": dags,
        "errors": [
            {
                "time": hop.start + hop.duration,
                "request_id": hop.request_id,
                "function": hop.function or None,
                "dag": hop.dag or None,
                "node": hop.node,
                "error": hop.error,
                "message": hop.message,
                "traceback": hop.traceback or None,
            }
            for hop in telemetry.errors()[:50]
        ],
        "decisions": [
            {
                "time": wall - (now - decision.at),
                "kind": type(decision.instruction).__name__,
                "reason": decision.reason,
            }
            for decision in reversed(state.decisions())
        ][:50],
        "traces": [
            {
                "request_id": summary.request_id,
                "time": summary.start,
                "name": summary.name,
                "hops": summary.hops,
                "duration_ms": _ms(summary.duration),
                "ok": summary.ok,
            }
            for summary in telemetry.recent_traces()
        ],
    }
